//! `skiff build`: sends a context to skiffd's `POST /build` (its RUN steps are containers of the
//! daemon's engine) and prints the builder's lines as the docker CLI's classic builder does.
//!
//! The context is a directory (tarred here as it is sent, without what `.dockerignore`
//! excludes, owners set to root as the docker CLI sets them) or `-`: a tar or a lone
//! Dockerfile on standard input. A Dockerfile outside the context goes in under a name of its
//! own, as the docker CLI does.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use skiff_dockerfile::context::Ignore;
use skiff_images::text::escape_untrusted;
use tokio::sync::mpsc;

use crate::client::{Client, ClientError, Host, StreamedBody};
use crate::daemon::options::BuildOptions;

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Name (and tag) of the built image, REPO[:TAG]; may be repeated.
    #[arg(short = 't', long = "tag")]
    tags: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile); `-` reads it from standard input.
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// A build-time variable KEY=VALUE; a bare KEY takes its value from the environment.
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    build_args: Vec<String>,
    /// Build up to this stage.
    #[arg(long)]
    target: Option<String>,
    /// Run every step, the cache not consulted.
    #[arg(long)]
    no_cache: bool,
    /// A label KEY=VALUE set on the image; may be repeated.
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Print only the image ID.
    #[arg(short, long)]
    quiet: bool,
    /// Pull base images even when they are in the store.
    #[arg(long)]
    pull: bool,
    /// The network of RUN steps (default: the default bridge; `none`: no network).
    #[arg(long)]
    network: Option<String>,
    /// Build from images of this platform (os/arch[/variant]).
    #[arg(long)]
    platform: Option<String>,
    /// Remove a failed RUN step's container too.
    #[arg(long)]
    force_rm: bool,
    /// A directory, or `-` for a tar (or a lone Dockerfile) on standard input.
    context: String,
}

/// The name a Dockerfile from outside the context gets inside it.
const OUTSIDE_DOCKERFILE: &str = ".dockerfile.skiff";

pub async fn build(
    host: &Host,
    args: BuildArgs,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> anyhow::Result<i32> {
    let (context, dockerfile) = BuildContext::from_args(&args)?;
    let opts = BuildOptions {
        tags: args.tags.clone(),
        dockerfile,
        build_args: build_args(&args.build_args, env),
        target: args.target.clone(),
        no_cache: args.no_cache,
        labels: super::labels_map(&args.labels),
        quiet: args.quiet,
        rm: true,
        force_rm: args.force_rm,
        pull: args.pull,
        network: args.network.clone(),
        platform: args.platform.clone(),
        // skiffd pulls base images with its host's `skiff login`, this host's too when local.
        registry_config: Default::default(),
    };
    let (body, sent) = context.stream();
    let bar = (!args.quiet && std::io::stderr().is_terminal()).then(|| sending_bar(sent.clone()));
    let client = Client::new(host.clone());
    let mut lines = match client.build(&opts, body).await {
        Ok(lines) => lines,
        Err(e @ ClientError::Connect { .. }) => {
            anyhow::bail!("{e}\nskiff build runs its steps in skiffd: start it, or name it with -H")
        }
        Err(e) => return Err(e.into()),
    };
    let mut told_size = args.quiet;
    while let Some(line) = lines.next().await? {
        if !told_size {
            told_size = true;
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            let size = sent.load(Ordering::Relaxed);
            println!(
                "Sending build context to skiffd  {}",
                skiff_images::text::human_size(size, 1)
            );
        }
        if let Some(error) = line.error {
            eprintln!("{}", shown(&error));
            return Ok(1);
        }
        if let Some(text) = line.stream.or(line.status) {
            print!("{}", shown(&text));
            std::io::stdout().flush()?;
        }
    }
    // With -q the builder's only line is the image ID.
    Ok(0)
}

/// A spinner with the bytes sent, until the builder's first line.
fn sending_bar(sent: Arc<AtomicU64>) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} Sending build context to skiffd {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let shown = bar.clone();
    tokio::spawn(async move {
        while !shown.is_finished() {
            let size = sent.load(Ordering::Relaxed);
            shown.set_message(skiff_images::text::human_size(size, 1));
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    bar
}

/// A builder's text for the terminal: RUN output comes from a guest, so controls other than
/// line ends are escaped.
fn shown(text: &str) -> String {
    text.split_inclusive('\n')
        .map(|l| match l.strip_suffix('\n') {
            Some(line) => escape_untrusted(line) + "\n",
            None => escape_untrusted(l),
        })
        .collect()
}

/// `--build-arg`s; a bare KEY not in the environment is left out, as Docker leaves it.
fn build_args(
    given: &[String],
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Vec<(String, String)> {
    given
        .iter()
        .filter_map(|a| match a.split_once('=') {
            Some((k, v)) => Some((k.to_string(), v.to_string())),
            None => env(a).map(|v| (a.clone(), v)),
        })
        .collect()
}

/// What is sent as the context.
enum BuildContext {
    /// A directory, tarred as it is sent; `keep`: the Dockerfile in it, sent whatever
    /// `.dockerignore` says; `extra`: a Dockerfile from elsewhere.
    Dir {
        dir: PathBuf,
        keep: String,
        extra: Option<Vec<u8>>,
    },
    /// Bytes read from standard input: a tar as it is, or a Dockerfile put in a tar.
    Stdin(Vec<u8>),
}

impl BuildContext {
    /// The context and the Dockerfile's path inside it.
    fn from_args(args: &BuildArgs) -> anyhow::Result<(BuildContext, String)> {
        let file = args.file.as_deref();
        if args.context == "-" {
            if file.is_some_and(|f| f == Path::new("-")) {
                anyhow::bail!("the context and the Dockerfile cannot both come from stdin");
            }
            let mut bytes = Vec::new();
            std::io::stdin().read_to_end(&mut bytes)?;
            if is_tar(&bytes) {
                let name = file.map_or_else(|| "Dockerfile".into(), |f| f.display().to_string());
                return Ok((BuildContext::Stdin(bytes), name));
            }
            if file.is_some() {
                anyhow::bail!("-f goes with a context tar on stdin, not with a lone Dockerfile");
            }
            let tar = tar_of_one("Dockerfile", &bytes)?;
            return Ok((BuildContext::Stdin(tar), "Dockerfile".into()));
        }
        let dir = std::path::absolute(&args.context)?;
        if !dir.is_dir() {
            anyhow::bail!(
                "unable to prepare context: path {:?} not found",
                args.context
            );
        }
        let in_dir = |keep: String| {
            let context = BuildContext::Dir {
                dir: dir.clone(),
                keep: keep.clone(),
                extra: None,
            };
            Ok((context, keep))
        };
        let dockerfile = match file {
            None => return in_dir("Dockerfile".into()),
            Some(f) if f == Path::new("-") => {
                let mut bytes = Vec::new();
                std::io::stdin().read_to_end(&mut bytes)?;
                bytes
            }
            Some(f) => {
                let abs = std::path::absolute(f)?;
                let inside = abs
                    .strip_prefix(&dir)
                    .ok()
                    .filter(|rel| !rel.as_os_str().is_empty());
                if let Some(rel) = inside {
                    return in_dir(rel.display().to_string());
                }
                std::fs::read(&abs)
                    .with_context(|| format!("cannot read the Dockerfile {}", f.display()))?
            }
        };
        let context = BuildContext::Dir {
            dir,
            keep: OUTSIDE_DOCKERFILE.into(),
            extra: Some(dockerfile),
        };
        Ok((context, OUTSIDE_DOCKERFILE.into()))
    }

    /// The body, produced by a blocking thread, and the bytes sent so far.
    fn stream(self) -> (StreamedBody, Arc<AtomicU64>) {
        let (tx, mut rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
        let sent = Arc::new(AtomicU64::new(0));
        let writer = ChannelWriter {
            tx: tx.clone(),
            sent: sent.clone(),
        };
        std::thread::spawn(move || {
            let mut writer = std::io::BufWriter::with_capacity(256 << 10, writer);
            let result = match self {
                BuildContext::Stdin(bytes) => writer.write_all(&bytes),
                BuildContext::Dir { dir, keep, extra } => {
                    write_tar(&dir, &keep, extra.as_deref(), &mut writer)
                }
            }
            .and_then(|()| writer.flush());
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(e));
            }
        });
        let frames = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let body = StreamBody::new(futures_util::StreamExt::map(frames, |r| r.map(Frame::data)));
        (body.boxed(), sent)
    }
}

/// Whether `bytes` are a tar (`ustar` at 257) or gzip (skiffd unpacks both).
fn is_tar(bytes: &[u8]) -> bool {
    bytes.get(257..262) == Some(b"ustar") || bytes.starts_with(&[0x1f, 0x8b])
}

fn tar_of_one(name: &str, content: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_data(&mut file_header(content), name, content)?;
    b.into_inner()
}

/// A regular file's header: `content`'s size, mode 0644, owned by root.
fn file_header(content: &[u8]) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h
}

/// The tar of `dir` without what its `.dockerignore` excludes (the Dockerfile `keep` and
/// `.dockerignore` are always sent: the builder reads them), owned by root, in name order.
fn write_tar(
    dir: &Path,
    keep: &str,
    extra: Option<&[u8]>,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let ignore =
        Ignore::parse(&std::fs::read_to_string(dir.join(".dockerignore")).unwrap_or_default());
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    if let Some(content) = extra {
        b.append_data(&mut file_header(content), OUTSIDE_DOCKERFILE, content)?;
    }
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut names: Vec<_> = std::fs::read_dir(dir.join(&rel))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()?;
        names.sort();
        // Walked depth first, reversed so that popping visits them in name order.
        let mut subdirs = Vec::new();
        for name in names {
            let rel = rel.join(name);
            let text = rel.to_string_lossy();
            let always = text == keep || text == ".dockerignore";
            let path = dir.join(&rel);
            let meta = std::fs::symlink_metadata(&path)?;
            let excluded = !always && ignore.excludes(&text);
            if meta.is_dir() && (!excluded || ignore.has_exceptions()) {
                subdirs.push(rel.clone());
            }
            if excluded {
                continue;
            }
            let mut h = tar::Header::new_gnu();
            h.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
            h.set_uid(0);
            h.set_gid(0);
            h.set_username("")?;
            h.set_groupname("")?;
            if meta.file_type().is_symlink() {
                b.append_link(&mut h, &rel, std::fs::read_link(&path)?)?;
            } else if meta.is_file() {
                b.append_data(&mut h, &rel, std::fs::File::open(&path)?)?;
            } else if meta.is_dir() {
                h.set_size(0);
                b.append_data(&mut h, &rel, std::io::empty())?;
            }
            // Sockets, FIFOs and devices are not part of a context (Docker skips them too).
        }
        stack.extend(subdirs.into_iter().rev());
    }
    b.finish()
}

/// Hands what the tar writer writes to the request body.
struct ChannelWriter {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    sent: Arc<AtomicU64>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "skiffd stopped reading")
            })?;
        self.sent.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
