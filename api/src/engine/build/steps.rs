//! One build step at a time: the cache first, then the work (a commit of a staging
//! directory, or a RUN container's upper), then the cache entry.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use skiff_dockerfile::context::stage::{parse_chmod, stage, staged, StageOptions};
use skiff_dockerfile::context::{plan_copy, Ignore, Root};
use skiff_dockerfile::{Action, CopyFrom, CopyStep, Evaluator, RunStep, Step};
use skiff_images::auth::{registry_matches, Credentials};
use skiff_images::digest::Hasher;
use skiff_images::manifest::RuntimeConfig;
use skiff_images::{Change, CommitOptions, ImageRecord, Platform, PullOptions, Reference};

use super::image_view::ImageView;
use super::run::{failed_message, inline_files, remove_container, run_container, run_request};
use super::{Current, Output};
use crate::daemon::options::BuildOptions;
use crate::daemon::timefmt::rfc3339;
use crate::engine::{Engine, Inner};

type StepResult<T> = std::result::Result<T, String>;

pub struct Builder {
    inner: Arc<Inner>,
    opts: BuildOptions,
    out: Output,
    context: PathBuf,
    ignore: Ignore,
    platform: Platform,
    /// Unpacked roots of `COPY --from` images, by image ID.
    rootfs: HashMap<String, tempfile::TempDir>,
}

impl Builder {
    pub fn new(
        inner: Arc<Inner>,
        opts: &BuildOptions,
        out: &Output,
        context: &Path,
        ignore: Ignore,
        platform: Platform,
    ) -> StepResult<Builder> {
        Ok(Builder {
            inner,
            opts: opts.clone(),
            out: out.clone(),
            context: context.to_path_buf(),
            ignore,
            platform,
            rootfs: HashMap::new(),
        })
    }

    fn tmp_dir(&self, prefix: &str) -> StepResult<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(self.inner.images.store().tmp_dir())
            .map_err(|e| e.to_string())
    }

    /// The credentials the client sent (`X-Registry-Config`) for `reference`'s registry; None:
    /// skiffd's host's own `skiff login`.
    fn client_credentials(&self, reference: &str) -> StepResult<Option<Credentials>> {
        let Ok(r) = Reference::parse(reference) else {
            return Ok(None);
        };
        let Some(auth) = self
            .opts
            .registry_config
            .iter()
            .find(|(key, _)| registry_matches(key, &r.registry))
            .map(|(_, auth)| auth)
        else {
            return Ok(None);
        };
        if auth.username.is_empty() && auth.password.is_empty() {
            return Err(format!(
                "X-Registry-Config: the credentials for {} are a token, which skiff does not \
                 support; log in with a user name and password",
                r.registry
            ));
        }
        Ok(Some(auth.credentials()))
    }

    /// A base image from the store, pulled when missing or when the build asks (`pull=1`).
    pub async fn base_image(
        &self,
        reference: &str,
        platform: Option<&str>,
    ) -> StepResult<(Current, RuntimeConfig)> {
        let platform = match platform {
            Some(p) => p
                .parse::<Platform>()
                .map_err(|e| format!("invalid platform {p}: {e}"))?,
            None => self.platform.clone(),
        };
        let pull = PullOptions {
            platform: Some(platform),
            credentials: self.client_credentials(reference)?,
            ..PullOptions::default()
        };
        let have = self.inner.images.resolve(reference).is_ok();
        if self.opts.pull || !have {
            self.out.status(format!("Pulling {reference}")).await;
            self.inner
                .images
                .pull(reference, &pull)
                .await
                .map_err(|e| format!("pulling {reference}: {e:#}"))?;
        }
        let prepared = self
            .inner
            .images
            .ensure(reference, &pull)
            .await
            .map_err(|e| format!("{reference}: {e:#}"))?;
        let record = self
            .inner
            .images
            .resolve(&prepared.config_digest.to_string())
            .map_err(|e| e.to_string())?;
        Ok((
            Current {
                record: Some(record),
            },
            prepared.config,
        ))
    }

    /// An image's config, and its unpacked layers.
    async fn prepared(&self, current: &Current) -> StepResult<(RuntimeConfig, ImageView)> {
        let Some(r) = &current.record else {
            return Ok((RuntimeConfig::default(), ImageView { layers: Vec::new() }));
        };
        let p = self
            .inner
            .images
            .ensure(&r.config_digest.to_string(), &PullOptions::default())
            .await
            .map_err(|e| format!("{e:#}"))?;
        Ok((p.config, ImageView { layers: p.layers }))
    }

    pub async fn config_of(&self, current: &Current) -> StepResult<RuntimeConfig> {
        Ok(self.prepared(current).await?.0)
    }

    fn cache_key(current: &Current, created_by: &str, content: &str) -> String {
        let mut h = Hasher::default();
        for part in [current.key_part().as_str(), created_by, content] {
            h.update(part.as_bytes());
            h.update(b"\0");
        }
        h.finish().to_string()
    }

    fn cached(&self, key: &str) -> StepResult<Option<ImageRecord>> {
        if self.opts.no_cache {
            return Ok(None);
        }
        self.inner
            .images
            .store()
            .build_cache_get(key)
            .map_err(|e| e.to_string())
    }

    async fn commit(
        &self,
        current: &Current,
        upper: &Path,
        created_by: &str,
        eval: &Evaluator<'_>,
        changes: Vec<Change>,
        key: &str,
    ) -> StepResult<Current> {
        let opts = CommitOptions {
            reference: None,
            author: eval.author().map(str::to_string),
            comment: None,
            changes,
            created: rfc3339(std::time::SystemTime::now()),
            created_by: created_by.to_string(),
            config: Some(eval.config().clone()),
        };
        let record = self
            .inner
            .images
            .commit_on(current.record.clone(), upper, opts)
            .await
            .map_err(|e| format!("committing the step: {e:#}"))?;
        self.inner
            .images
            .store()
            .build_cache_put(key, &record.manifest_digest)
            .map_err(|e| e.to_string())?;
        Ok(Current {
            record: Some(record),
        })
    }

    /// The cache's answer, or `work` staged into a fresh directory and committed.
    async fn cached_or(
        &self,
        current: &Current,
        created_by: &str,
        content: &str,
        eval: &Evaluator<'_>,
        changes: Vec<Change>,
        work: impl FnOnce(&Path) -> StepResult<()>,
    ) -> StepResult<Current> {
        let key = Self::cache_key(current, created_by, content);
        if let Some(hit) = self.cached(&key)? {
            self.out.line(" ---> Using cache\n".into()).await;
            return Ok(Current { record: Some(hit) });
        }
        let staging = self.tmp_dir("build-step-")?;
        work(staging.path())?;
        self.commit(current, staging.path(), created_by, eval, changes, &key)
            .await
    }

    pub async fn step(
        &mut self,
        current: &Current,
        step: &Step,
        eval: &Evaluator<'_>,
        built: &HashMap<usize, Current>,
    ) -> StepResult<Current> {
        match &step.action {
            Action::Config => {
                self.cached_or(current, &step.created_by, "", eval, Vec::new(), |_| Ok(()))
                    .await
            }
            Action::Workdir(dir) => self.workdir(current, dir, &step.created_by, eval).await,
            Action::Copy(c) => self.copy(current, c, &step.created_by, eval, built).await,
            Action::Run(r) => self.run(current, r, &step.created_by, eval).await,
        }
    }

    /// `--label`s of the build, on the target's image.
    pub async fn labels(&self, current: &Current, eval: &Evaluator<'_>) -> StepResult<Current> {
        let pairs: Vec<(String, String)> = self
            .opts
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let text: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let created_by = format!("/bin/sh -c #(nop)  LABEL {}", text.join(" "));
        let changes = vec![Change::Label(pairs)];
        self.cached_or(current, &created_by, "", eval, changes, |_| Ok(()))
            .await
    }

    async fn workdir(
        &self,
        current: &Current,
        dir: &str,
        created_by: &str,
        eval: &Evaluator<'_>,
    ) -> StepResult<Current> {
        let (_, view) = self.prepared(current).await?;
        let resolved = view.resolve(dir);
        let missing = !view.is_dir(&resolved);
        self.cached_or(current, created_by, "", eval, Vec::new(), |staging| {
            if missing {
                let path = staged(staging, &resolved);
                std::fs::create_dir_all(&path).map_err(|e| format!("WORKDIR {dir}: {e}"))?;
                view.settle_parents(staging, &HashSet::new(), (0, 0))
                    .map_err(|e| format!("WORKDIR {dir}: {e}"))?;
            }
            Ok(())
        })
        .await
    }

    /// The unpacked root of a `COPY --from` source.
    async fn source_root(
        &mut self,
        from: &CopyFrom,
        built: &HashMap<usize, Current>,
    ) -> StepResult<PathBuf> {
        let id = match from {
            CopyFrom::Stage(i) => built
                .get(i)
                .and_then(|c| c.record.as_ref())
                .map(|r| r.config_digest.to_string())
                .ok_or_else(|| format!("stage {i} made no image to copy from"))?,
            CopyFrom::Image(r) => {
                let (c, _) = self.base_image(r, None).await?;
                c.record
                    .map(|r| r.config_digest.to_string())
                    .unwrap_or_default()
            }
        };
        if let Some(dir) = self.rootfs.get(&id) {
            return Ok(dir.path().join("rootfs"));
        }
        let dir = self.tmp_dir("build-from-")?;
        let root = dir.path().join("rootfs");
        self.inner
            .images
            .unpack_rootfs(&id, &root)
            .await
            .map_err(|e| format!("unpacking {id}: {e:#}"))?;
        self.rootfs.insert(id, dir);
        Ok(root)
    }

    async fn copy(
        &mut self,
        current: &Current,
        step: &CopyStep,
        created_by: &str,
        eval: &Evaluator<'_>,
        built: &HashMap<usize, Current>,
    ) -> StepResult<Current> {
        let word = if step.add { "ADD" } else { "COPY" };
        let failed = |e: String| format!("{word} failed: {e}");
        let (_, view) = self.prepared(current).await?;
        // The destination as the image's symlinks lead (`/bin` → `/usr/bin`).
        let dest = if step.dest_is_dir {
            format!("{}/", view.resolve(&step.dest))
        } else {
            let (parent, name) = step.dest.rsplit_once('/').unwrap_or(("", &step.dest));
            let parent = view.resolve(parent);
            format!("{}/{name}", parent.trim_end_matches('/'))
        };
        let resolved = CopyStep {
            dest: dest.clone(),
            ..step.clone()
        };
        let from_root = match &step.from {
            Some(from) => Some(self.source_root(from, built).await?),
            None => None,
        };
        let root = match &from_root {
            Some(dir) => Root::Image { dir },
            None => Root::Context {
                dir: &self.context,
                ignore: &self.ignore,
            },
        };
        let dest_is_dir = view.is_dir(&view.resolve(&dest));
        let plan = plan_copy(&root, &resolved, dest_is_dir).map_err(|e| failed(e.to_string()))?;
        let owner = step.chown.as_deref().map(|c| view.chown(c)).transpose()?;
        let mode = step
            .chmod
            .as_deref()
            .map(parse_chmod)
            .transpose()
            .map_err(|e| e.to_string())?;
        let shown = format!(" {} in ", step.sources.join(" "));
        let created_by = created_by.replacen(&shown, &format!(" {} in ", plan.digest), 1);
        let content = format!("{}|{owner:?}|{mode:?}", plan.digest);
        let opts = StageOptions {
            owner,
            keep_owner: step.from.is_some(),
            mode,
            unpack: self.inner.images.store().config.unpack,
        };
        let copied: HashSet<String> = plan.items.iter().map(|i| i.dest.clone()).collect();
        self.cached_or(
            current,
            &created_by,
            &content,
            eval,
            Vec::new(),
            |staging| {
                stage(&plan, staging, &opts).map_err(|e| failed(e.to_string()))?;
                view.settle_parents(staging, &copied, owner.unwrap_or((0, 0)))
                    .map_err(|e| failed(e.to_string()))
            },
        )
        .await
    }

    async fn run(
        &self,
        current: &Current,
        step: &RunStep,
        created_by: &str,
        eval: &Evaluator<'_>,
    ) -> StepResult<Current> {
        let key = Self::cache_key(current, created_by, "");
        if let Some(hit) = self.cached(&key)? {
            self.out.line(" ---> Using cache\n".into()).await;
            return Ok(Current { record: Some(hit) });
        }
        let Some(image) = &current.record else {
            return Err("RUN needs an image to run in (FROM scratch has no files)".into());
        };
        let files_dir = self.tmp_dir("build-run-")?;
        let files = inline_files(step, files_dir.path()).map_err(|e| e.to_string())?;
        let req = run_request(
            step,
            &image.config_digest.to_string(),
            self.opts.network.as_deref(),
            &files,
        )?;
        let engine = Engine {
            inner: self.inner.clone(),
        };
        let out = self.out.clone();
        let outcome = run_container(&engine, req, move |line| {
            let out = out.clone();
            Box::pin(async move { out.line(line).await })
        })
        .await?;
        let short = outcome.id[..12].to_string();
        let removed = async {
            match remove_container(&engine, &outcome.id).await {
                Ok(()) => {
                    self.out
                        .line(format!("Removing intermediate container {short}\n"))
                        .await
                }
                Err(e) => tracing::warn!("removing build container {short}: {e}"),
            }
        };
        if outcome.code != 0 {
            if self.opts.force_rm {
                removed.await;
            }
            return Err(failed_message(&step.argv, outcome.code));
        }
        let upper = self.inner.paths(&outcome.id).upper().join("upper");
        let empty = self.tmp_dir("build-empty-")?;
        let upper = if upper.is_dir() {
            upper
        } else {
            empty.path().to_path_buf()
        };
        let committed = self
            .commit(current, &upper, created_by, eval, Vec::new(), &key)
            .await;
        if self.opts.rm || self.opts.force_rm {
            removed.await;
        }
        committed
    }
}
