//! `docker build` (the classic builder's API) on the engine: the context tar is unpacked, the
//! Dockerfile planned by `skiff-dockerfile`, and each needed stage run step by step:
//!
//! - metadata steps commit an image with an `empty_layer` history entry and the evaluator's
//!   config; WORKDIR creates its directory when the image lacks it;
//! - COPY/ADD stage the selected files (`steps.rs`) and commit them as the layer;
//! - RUN runs a container of its own through the engine (`run.rs`) and commits its upper.
//!
//! Every step's image is kept (untagged) and recorded in the store's build cache under its
//! parent image, its history text and what it copies; a later identical step answers
//! ` ---> Using cache`. Output is the classic builder's JSON stream.

mod context_tar;
mod image_view;
pub mod run;
mod steps;

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::stream::{BoxStream, StreamExt};
use skiff_dockerfile::{Base, BuildOptions as FrontOptions, Dockerfile, Evaluator, PlatformArgs};
use skiff_images::manifest::RuntimeConfig;
use skiff_images::{ImageRecord, Platform};
use tokio::sync::mpsc;

use super::{images::familiar, Inner, Result};
use crate::daemon::model::ProgressMessage;
use crate::daemon::options::{BuildOptions, ByteStream};

/// How often a build sends an empty line (`{"stream":""}`, which clients print as nothing).
const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(2);

/// Starts a build; its progress comes as the stream's lines, a failure as the last one.
pub async fn build(
    inner: &Arc<Inner>,
    opts: BuildOptions,
    context: ByteStream,
) -> Result<BoxStream<'static, ProgressMessage>> {
    let (tx, mut rx) = mpsc::channel::<ProgressMessage>(64);
    let inner = inner.clone();
    tokio::spawn(async move {
        let out = Output {
            tx: tx.clone(),
            quiet: opts.quiet,
        };
        // A client that leaves cancels the build, as Docker's: the steps' future is dropped
        // (a RUN step's container is removed by its guard). The HTTP server notices a client
        // gone only when a write fails, so a silent step is interleaved with empty lines.
        let beat = async {
            loop {
                tokio::time::sleep(KEEPALIVE).await;
                let _ = tx
                    .send(ProgressMessage {
                        stream: Some(String::new()),
                        ..ProgressMessage::default()
                    })
                    .await;
            }
        };
        tokio::select! {
            () = beat => {}
            result = run_build(inner, opts, context, &out) => {
                if let Err(message) = result {
                    let _ = tx.send(ProgressMessage::failure(message)).await;
                }
            }
            () = tx.closed() => tracing::info!("build cancelled: the client went away"),
        }
    });
    Ok(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed())
}

/// Where a build's lines go.
#[derive(Clone)]
pub struct Output {
    tx: mpsc::Sender<ProgressMessage>,
    quiet: bool,
}

impl Output {
    /// A `{"stream": …}` line (left out with `q=1`).
    pub async fn line(&self, text: String) {
        if !self.quiet {
            self.send_stream(text).await;
        }
    }

    async fn send(&self, message: ProgressMessage) {
        // Fails only once the client left, and that cancels the build (see `build`).
        let _ = self.tx.send(message).await;
    }

    async fn send_stream(&self, text: String) {
        self.send(ProgressMessage {
            stream: Some(text),
            ..ProgressMessage::default()
        })
        .await;
    }

    async fn status(&self, text: String) {
        if !self.quiet {
            self.send(ProgressMessage {
                status: Some(text),
                ..ProgressMessage::default()
            })
            .await;
        }
    }

    async fn aux_id(&self, id: &str) {
        self.send(ProgressMessage {
            aux: Some(serde_json::json!({ "ID": id })),
            ..ProgressMessage::default()
        })
        .await;
    }
}

/// The image a step starts from (`None`: scratch, nothing yet).
#[derive(Clone, Default)]
pub struct Current {
    pub record: Option<ImageRecord>,
}

impl Current {
    fn short_id(&self) -> String {
        self.record
            .as_ref()
            .map_or_else(String::new, |r| r.config_digest.hex()[..12].to_string())
    }

    /// The parent part of a cache key.
    fn key_part(&self) -> String {
        self.record
            .as_ref()
            .map_or_else(|| "scratch".into(), |r| r.config_digest.to_string())
    }
}

async fn run_build(
    inner: Arc<Inner>,
    opts: BuildOptions,
    body: ByteStream,
    out: &Output,
) -> std::result::Result<(), String> {
    let store = inner.images.store().clone();
    let lock_store = store.clone();
    let _writer = tokio::task::spawn_blocking(move || lock_store.gc_lock(false))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let context = tempfile::Builder::new()
        .prefix("build-context-")
        .tempdir_in(store.tmp_dir())
        .map_err(|e| e.to_string())?;
    context_tar::unpack(body, context.path(), &store).await?;
    let text = context_tar::read_dockerfile(context.path(), &opts.dockerfile)?;
    let ignore = context_tar::read_ignore(context.path());
    let df = Dockerfile::parse(&text).map_err(|e| e.to_string())?;
    let platform = match &opts.platform {
        Some(p) => p
            .parse::<Platform>()
            .map_err(|e| format!("invalid platform {p}: {e}"))?,
        None => Platform::host(),
    };
    let front = FrontOptions {
        build_args: opts.build_args.clone(),
        target: opts.target.clone(),
        target_platform: platform_args(&platform),
        build_platform: platform_args(&Platform::host()),
    };
    let plan = df.plan(&front).map_err(|e| e.to_string())?;
    let total: usize = plan
        .needed
        .iter()
        .map(|&i| 1 + plan.stages[i].instructions.len())
        .sum();
    let mut b = steps::Builder::new(inner.clone(), &opts, out, context.path(), ignore, platform)?;
    let mut built: HashMap<usize, Current> = HashMap::new();
    let mut n = 0;
    let target = plan.needed.last().copied().unwrap_or(0);
    for &si in &plan.needed {
        let stage = &plan.stages[si];
        n += 1;
        let from_text = df
            .instructions
            .iter()
            .find(|i| i.line == stage.line)
            .map_or_else(|| "FROM".into(), |i| i.original.clone());
        out.line(format!("Step {n}/{total} : {from_text}\n")).await;
        let (mut current, base) = match &stage.base {
            Base::Scratch => (Current::default(), RuntimeConfig::default()),
            Base::Image(r) => b.base_image(r, stage.platform.as_deref()).await?,
            Base::Stage(i) => {
                let c = built.get(i).cloned().unwrap_or_default();
                let config = b.config_of(&c).await?;
                (c, config)
            }
        };
        if current.record.is_some() {
            out.line(format!(" ---> {}\n", current.short_id())).await;
        }
        let on_build = base.on_build.clone().unwrap_or_default();
        let mut eval = Evaluator::new(&plan, si, base);
        let triggers = eval.triggers(&on_build).map_err(|e| e.to_string())?;
        if !triggers.is_empty() {
            out.line(format!("# Executing {} build trigger(s)\n", triggers.len()))
                .await;
        }
        let own = stage.instructions.iter().map(|i| (i, true));
        for (inst, counted) in triggers.iter().map(|i| (i, false)).chain(own) {
            if counted {
                n += 1;
                out.line(format!("Step {n}/{total} : {}\n", inst.original))
                    .await;
            }
            let step = eval.step(inst).map_err(|e| e.to_string())?;
            current = b
                .step(&current, &step, &eval, &built)
                .await
                .map_err(|e| at_line(step.line, e))?;
            out.line(format!(" ---> {}\n", current.short_id())).await;
        }
        if si == target && !opts.labels.is_empty() {
            current = b.labels(&current, &eval).await?;
        }
        built.insert(si, current);
    }
    if let Some(w) = plan.unused_build_args_warning() {
        out.line(format!("{w}\n")).await;
    }
    let Some(image) = built.get(&target).and_then(|c| c.record.clone()) else {
        return Err("No image was generated. Is your Dockerfile empty?".into());
    };
    let id = image.config_digest.to_string();
    out.aux_id(&id).await;
    if opts.quiet {
        out.send_stream(format!("{id}\n")).await;
    }
    out.line(format!(
        "Successfully built {}\n",
        &image.config_digest.hex()[..12]
    ))
    .await;
    for t in &opts.tags {
        inner
            .images
            .tag(&id, t)
            .map_err(|e| format!("tagging {t}: {e}"))?;
        out.line(format!("Successfully tagged {}\n", familiar_tag(t)))
            .await;
    }
    Ok(())
}

/// `busybox` → `busybox:latest`, as Docker's message shows a tag.
fn familiar_tag(t: &str) -> String {
    match skiff_images::Reference::parse(t) {
        Ok(r) => familiar(&r.to_string()),
        Err(_) => t.to_string(),
    }
}

fn platform_args(p: &Platform) -> PlatformArgs {
    PlatformArgs {
        os: p.os.clone(),
        arch: p.architecture.clone(),
        variant: p.variant.clone(),
    }
}

/// A step's failure, naming its Dockerfile line (a failed RUN keeps Docker's own words).
fn at_line(line: usize, message: String) -> String {
    if message.starts_with("The command '") || message.contains("line ") {
        message
    } else {
        format!("Dockerfile line {line}: {message}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_name_their_line() {
        assert_eq!(
            at_line(3, "COPY failed: x".into()),
            "Dockerfile line 3: COPY failed: x"
        );
        let run = "The command '/bin/sh -c false' returned a non-zero code: 1";
        assert_eq!(at_line(3, run.into()), run);
        assert_eq!(familiar_tag("busybox"), "busybox:latest");
        assert_eq!(familiar_tag("localhost:5000/a/b:1"), "localhost:5000/a/b:1");
    }
}
