//! The images API the CLI, the daemon and the run path use.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::auth::{self, Credentials};
use crate::commit::CommitOptions;
use crate::config::{RegistryTimeouts, StoreConfig};
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::history::HistoryRow;
use crate::manifest::{
    Compression, ImageConfigFile, ManifestDoc, RuntimeConfig, MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES,
};
use crate::platform::Platform;
use crate::pull::{self, check_layer_sizes, layer_diff_ids, PullOptions, PullReport};
use crate::push::{self, IndexOptions, IndexReport, PushOptions, PushReport};
use crate::reference::Reference;
use crate::registry::RegistryClient;
use crate::store::{GcReport, ImageRecord, LayerRecord, Store};
use crate::text::escape_untrusted;
use crate::unpack::{is_overlay_opaque, ImageBudget};

/// What `skiff run` needs to start a container from an image.
#[derive(Clone, Debug, Serialize)]
pub struct PreparedImage {
    pub name: String,
    pub manifest_digest: Digest,
    /// The image ID.
    pub config_digest: Digest,
    /// Unpacked read-only layer directories, top-most first (overlayfs `lowerdir` order).
    pub layers: Vec<PathBuf>,
    pub config: RuntimeConfig,
    pub platform: Platform,
}

#[derive(Clone)]
pub struct ImageService {
    store: Arc<Store>,
}

impl ImageService {
    /// The store in `dir` with the default caps and timeouts.
    pub fn open(dir: &Path) -> Result<ImageService> {
        ImageService::open_with(dir, StoreConfig::default())
    }

    pub fn open_with(dir: &Path, config: StoreConfig) -> Result<ImageService> {
        Ok(ImageService {
            store: Arc::new(Store::open(dir, config)?),
        })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Pulls `reference`; a failed pull removes the content it added (when no other writer
    /// is at work: else `prune` does).
    pub async fn pull(&self, reference: &str, opts: &PullOptions) -> Result<PullReport> {
        let r = Reference::parse(reference)?;
        let started = SystemTime::now();
        let pulled = pull::pull(&self.store, &r, opts).await;
        if pulled.is_err() {
            self.discard_orphans_since(started).await;
        }
        pulled
    }

    /// Best effort: the operation's own error is what matters to the caller.
    async fn discard_orphans_since(&self, started: SystemTime) {
        let store = self.store.clone();
        let done = tokio::task::spawn_blocking(move || store.discard_orphans_since(started)).await;
        if let Ok(Err(e)) | Err(e) = done.map_err(Error::from) {
            tracing::debug!(error = %e, "cannot remove a failed operation's content");
        }
    }

    /// The image ready to run: pulled if it is not in the store, layers unpacked.
    pub async fn ensure(&self, reference: &str, opts: &PullOptions) -> Result<PreparedImage> {
        let wanted = |rec: &ImageRecord| match (&opts.platform, rec.platform.parse::<Platform>()) {
            (Some(want), Ok(have)) => want.accepts(&have),
            _ => true,
        };
        let record = match self.resolve(reference) {
            Ok(r) if wanted(&r) => r,
            // Missing, or here for another platform than asked for.
            Ok(_) | Err(Error::ImageNotFound(_)) => self.pull(reference, opts).await?.image,
            Err(e) => return Err(e),
        };
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || prepare(&store, &record)).await?
    }

    /// Keeps `image`'s layer directories alive for `holder` (a container) until `unpin`:
    /// `rmi` and `image prune` then untag but do not delete what it runs on.
    pub fn pin(&self, holder: &str, image: &PreparedImage) -> Result<()> {
        self.store.pin(holder, &image.manifest_digest)
    }

    pub fn unpin(&self, holder: &str) -> Result<bool> {
        self.store.unpin(holder)
    }

    /// A local image by reference, or by image ID (a prefix of the config digest).
    pub fn resolve(&self, reference: &str) -> Result<ImageRecord> {
        let by_ref = match Reference::parse(reference) {
            Ok(r) => self.store.find(&r)?,
            Err(_) => None,
        };
        if let Some(rec) = by_ref {
            return Ok(rec);
        }
        let id = reference.strip_prefix("sha256:").unwrap_or(reference);
        if id.len() >= 4 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut found = self.store.find_by_id(&id.to_ascii_lowercase())?;
            found.dedup_by(|a, b| a.config_digest == b.config_digest);
            match found.len() {
                1 => return Ok(found.remove(0)),
                n if n > 1 => {
                    return Err(Error::InvalidReference {
                        reference: reference.to_string(),
                        reason: "image ID prefix is ambiguous".into(),
                    })
                }
                _ => {}
            }
        }
        Reference::parse(reference)?;
        Err(Error::ImageNotFound(reference.to_string()))
    }

    /// Pushes the local image `local` (a reference or image ID) to `target` (REPO[:TAG] on a
    /// registry; the tag defaults to `latest`). Returns the pushed manifest's digest and size.
    pub async fn push(&self, local: &str, target: &str, opts: &PushOptions) -> Result<PushReport> {
        let image = self.resolve(local)?;
        let target = Reference::parse(target)?;
        push::push(&self.store, &image, &target, opts).await
    }

    /// `manifest create`: an index named `target` over the image manifests `sources` name
    /// in its registry.
    pub async fn push_index(
        &self,
        target: &str,
        sources: &[String],
        opts: &IndexOptions,
    ) -> Result<IndexReport> {
        let target = Reference::parse(target)?;
        let sources = sources
            .iter()
            .map(|s| Reference::parse(s))
            .collect::<Result<Vec<_>>>()?;
        push::push_index(&target, &sources, opts, self.store.config.timeouts).await
    }

    /// `manifest inspect`: the manifest or index `reference` names in its registry.
    pub async fn fetch_manifest(
        &self,
        reference: &str,
        opts: &IndexOptions,
    ) -> Result<(Digest, String, Vec<u8>)> {
        let r = Reference::parse(reference)?;
        push::fetch_manifest(&r, opts, self.store.config.timeouts).await
    }

    /// `tag`: `target` (REPO[:TAG]) names the image `source` names too.
    pub fn tag(&self, source: &str, target: &str) -> Result<ImageRecord> {
        let mut image = self.resolve(source)?;
        let r = Reference::parse(target)?;
        if r.digest.is_some() {
            return Err(Error::InvalidReference {
                reference: target.to_string(),
                reason: "refusing to create a tag with a digest reference".into(),
            });
        }
        image.name = r.to_string();
        image.index_digest = None;
        image.added_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.store.record_image(&image)?;
        Ok(image)
    }

    /// The image and how it was made (`docker history`), oldest step first.
    pub fn history(&self, reference: &str) -> Result<(ImageRecord, Vec<HistoryRow>)> {
        let image = self.resolve(reference)?;
        let rows = crate::history::history(&self.store, &image)?;
        Ok((image, rows))
    }

    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        self.store.list()
    }

    /// Every tagged name of the repository `repo` in the store (`push --all-tags`), sorted.
    pub fn tags_of(&self, repo: &Reference) -> Result<Vec<String>> {
        let mut all: Vec<String> = self
            .list()?
            .into_iter()
            .filter_map(|r| Reference::parse(&r.name).ok())
            .filter(|r| r.name() == repo.name() && r.digest.is_none() && r.tag.is_some())
            .map(|r| r.to_string())
            .collect();
        all.sort();
        all.dedup();
        Ok(all)
    }

    /// `skiff rmi`: removes the name (for an image ID, every name of that image), then the
    /// content nothing references any more. Returns the removed names.
    pub fn remove(&self, reference: &str) -> Result<(Vec<String>, GcReport)> {
        let rec = self.resolve(reference)?;
        let names: Vec<String> =
            if Reference::parse(reference).is_ok_and(|r| r.to_string() == rec.name) {
                vec![rec.name.clone()]
            } else {
                self.list()?
                    .into_iter()
                    .filter(|r| r.config_digest == rec.config_digest)
                    .map(|r| r.name)
                    .collect()
            };
        for n in &names {
            self.store.remove_name(n)?;
        }
        Ok((names, self.store.gc()?))
    }

    pub fn prune(&self) -> Result<GcReport> {
        self.store.gc()
    }

    /// Writes the image's merged root filesystem (whiteouts applied) to `dest`, which must not
    /// exist or be an empty directory. Built beside it and renamed into place when complete.
    pub async fn unpack_rootfs(&self, reference: &str, dest: &Path) -> Result<()> {
        let rec = self.resolve(reference)?;
        let store = self.store.clone();
        let dest = dest.to_path_buf();
        tokio::task::spawn_blocking(move || crate::rootfs::merge_layers(&store, &rec, &dest))
            .await?
    }

    /// Loads the images of an archive or OCI layout; a failed load removes the content it
    /// added (when no other writer is at work: else `prune` does).
    pub async fn load(&self, path: &Path) -> Result<Vec<ImageRecord>> {
        let store = self.store.clone();
        let path = path.to_path_buf();
        let started = SystemTime::now();
        let loaded =
            tokio::task::spawn_blocking(move || crate::archive::load(&store, &path)).await?;
        if loaded.is_err() {
            self.discard_orphans_since(started).await;
        }
        loaded
    }

    /// `commit`: the overlay upper directory `upper` (a container's changes) as a new image on
    /// top of `base` (a reference or image ID). A failed commit removes the content it added
    /// (when no other writer is at work: else `prune` does).
    pub async fn commit(
        &self,
        base: &str,
        upper: &Path,
        opts: CommitOptions,
    ) -> Result<ImageRecord> {
        let base = self.resolve(base)?;
        self.commit_on(Some(base), upper, opts).await
    }

    /// `commit` on a resolved base image, or on `scratch` (`None`): a build step's image.
    pub async fn commit_on(
        &self,
        base: Option<ImageRecord>,
        upper: &Path,
        opts: CommitOptions,
    ) -> Result<ImageRecord> {
        let store = self.store.clone();
        let upper = upper.to_path_buf();
        let started = SystemTime::now();
        let committed = tokio::task::spawn_blocking(move || {
            crate::commit::commit(&store, base.as_ref(), &upper, &opts)
        })
        .await?;
        if committed.is_err() {
            self.discard_orphans_since(started).await;
        }
        committed
    }

    /// Writes the image as an OCI archive to `path`: a new or regular file is replaced
    /// atomically, a FIFO or device written as a stream (never replaced), a symlink followed;
    /// directories, sockets and dangling symlinks are refused.
    pub async fn save(&self, reference: &str, path: &Path) -> Result<()> {
        let rec = self.resolve(reference)?;
        let store = self.store.clone();
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || crate::archive::save(&store, &rec, &path)).await?
    }

    /// Writes the image as an OCI archive to `out` (standard output for `skiff save -`).
    pub async fn save_to_writer(
        &self,
        reference: &str,
        mut out: Box<dyn std::io::Write + Send>,
    ) -> Result<()> {
        let rec = self.resolve(reference)?;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            crate::archive::save_to_writer(&store, &rec, out.as_mut())
        })
        .await?
    }
}

/// Checks credentials against a registry and saves them in Docker's config.json.
pub async fn login(
    registry: &str,
    creds: Credentials,
    insecure: bool,
    timeouts: RegistryTimeouts,
) -> Result<PathBuf> {
    // Any repository will do: the ping goes to /v2/.
    let probe = Reference::parse(&format!("{registry}/login-probe"))?;
    if probe.registry != registry && !(registry == "docker.io" || registry == "index.docker.io") {
        return Err(Error::InvalidReference {
            reference: registry.to_string(),
            reason: "not a registry host".into(),
        });
    }
    let client = RegistryClient::new(&probe, insecure, Some(creds.clone()), timeouts)?;
    client.ping().await?;
    auth::store(&probe.registry, &creds)
}

/// Records a manifest already in the store under `name`, after unpacking its layers.
pub(crate) fn record(
    store: &Store,
    name: String,
    manifest_digest: &Digest,
    index_digest: Option<Digest>,
) -> Result<ImageRecord> {
    let bytes = store.read_blob(manifest_digest, MAX_MANIFEST_BYTES, "manifest")?;
    let ManifestDoc::Image(m) = ManifestDoc::parse(&bytes, None)? else {
        return Err(Error::Malformed {
            what: format!("manifest {manifest_digest}"),
            reason: "an index, not an image manifest".into(),
        });
    };
    let config_bytes = store.read_blob(&m.config.digest, MAX_CONFIG_BYTES, "image config")?;
    let config = ImageConfigFile::parse(&config_bytes)?;
    let diff_ids = layer_diff_ids(&m.layers, &config)?;
    check_layer_sizes(&m.layers, &store.config)?;
    let mut layers = Vec::with_capacity(m.layers.len());
    let budget = ImageBudget::new(&store.config.unpack.limits);
    for (l, diff_id) in m.layers.iter().zip(diff_ids) {
        store.ensure_layer(
            &diff_id,
            &l.digest,
            Compression::of_media_type(&l.media_type)?,
            &budget,
        )?;
        layers.push(LayerRecord {
            blob: l.digest.clone(),
            diff_id,
            media_type: l.media_type.clone(),
            size: l.size,
        });
    }
    let rec = ImageRecord {
        name,
        manifest_digest: manifest_digest.clone(),
        index_digest,
        media_type: m
            .media_type
            .clone()
            .unwrap_or_else(|| crate::manifest::media::OCI_MANIFEST.to_string()),
        config_digest: m.config.digest.clone(),
        // Shown by `skiff images` and the daemon: the image's text, escaped.
        platform: escape_untrusted(config.platform()),
        created: config.created.as_deref().map(escape_untrusted),
        added_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
        layers,
    };
    store.record_image(&rec)?;
    Ok(rec)
}

fn prepare(store: &Store, rec: &ImageRecord) -> Result<PreparedImage> {
    // Layers may be (re)unpacked here: keep garbage collection away meanwhile.
    let _gc = store.gc_lock(false)?;
    let config_bytes = store.read_blob(&rec.config_digest, MAX_CONFIG_BYTES, "image config")?;
    let config = ImageConfigFile::parse(&config_bytes)?;
    let mut layers = Vec::with_capacity(rec.layers.len());
    let budget = ImageBudget::new(&store.config.unpack.limits);
    for l in rec.layers.iter().rev() {
        let dir = store.ensure_layer(
            &l.diff_id,
            &l.blob,
            Compression::of_media_type(&l.media_type)?,
            &budget,
        )?;
        let hides_lower = is_overlay_opaque(&dir).at("cannot read xattrs of", &dir)?;
        layers.push(dir);
        if hides_lower {
            // `.wh..wh..opq` at a layer's root hides every layer below it (as `image unpack`
            // applies it), but overlayfs ignores the opaque mark on a lower layer's root:
            // the hidden layers are left out of the stack instead.
            break;
        }
    }
    Ok(PreparedImage {
        name: rec.name.clone(),
        manifest_digest: rec.manifest_digest.clone(),
        config_digest: rec.config_digest.clone(),
        layers,
        platform: config.platform(),
        config: config.config.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// skiffd runs these on a multi-threaded runtime (tokio::spawn needs Send futures).
    #[test]
    fn futures_are_send() {
        fn send<T: Send>(_: &T) {}
        let dir = tempfile::tempdir().unwrap();
        let svc = ImageService::open(dir.path()).unwrap();
        let opts = PullOptions::default();
        send(&svc.pull("x", &opts));
        send(&svc.ensure("x", &opts));
        send(&svc.unpack_rootfs("x", dir.path()));
        send(&svc.load(dir.path()));
        send(&svc.save("x", dir.path()));
        send(&svc.commit("x", dir.path(), CommitOptions::default()));
        send(&svc.push("x", "y", &PushOptions::default()));
        send(&login(
            "x",
            Credentials {
                username: String::new(),
                password: String::new(),
            },
            false,
            RegistryTimeouts::default(),
        ));
    }
}
