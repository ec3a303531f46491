//! `skiff push`: a local image to a registry. Each layer is checked for (HEAD), mounted from
//! another repository of the same registry that is known to hold it, or uploaded (one PUT when
//! small, PATCH chunks with resume when large); then the config blob, then the manifest with
//! its exact stored bytes, so the pushed digest is the local one.

mod blob;
mod index;
mod progress;

use std::sync::Arc;

use bytes::Bytes;

use crate::auth::{self, Credentials};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{media, ManifestDoc, MAX_MANIFEST_BYTES};
use crate::reference::Reference;
use crate::registry::RegistryClient;
use crate::store::{ImageRecord, Store};
use blob::{push_blob, BlobJob, Pushed};

pub use index::{fetch_manifest, push_index, IndexEntry, IndexOptions, IndexReport};
pub use progress::{terminal_bars, PushBars, PushEvent, PushEventKind, PushProgress};

/// Blobs up to this size go in one request, larger ones in chunks of it (each held in memory
/// while it is sent, so it can be sent again).
pub const DEFAULT_CHUNK_SIZE: usize = 8 << 20;

#[derive(Clone)]
pub struct PushOptions {
    /// Allow plain HTTP / unchecked TLS to a registry not on loopback (as for pulls).
    pub insecure: bool,
    /// Credentials for the registry; None: what `skiff login` stored for it.
    pub credentials: Option<Credentials>,
    /// Size of the PATCH chunks, and the largest blob sent in a single request.
    pub chunk_size: usize,
    /// How often a failed chunk is tried again (each time from what the registry holds).
    pub chunk_retries: u32,
    /// Layers uploaded at once.
    pub parallel: usize,
    /// Told about each layer's progress.
    pub progress: Option<PushProgress>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            insecure: false,
            credentials: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            chunk_retries: 3,
            parallel: 4,
            progress: None,
        }
    }
}

impl std::fmt::Debug for PushOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushOptions")
            .field("insecure", &self.insecure)
            .field("credentials", &self.credentials)
            .field("chunk_size", &self.chunk_size)
            .field("chunk_retries", &self.chunk_retries)
            .field("parallel", &self.parallel)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct PushReport {
    /// `registry/repository` pushed to.
    pub repository: String,
    pub tag: String,
    /// The manifest's digest (the local one: its bytes are pushed unchanged).
    pub digest: Digest,
    /// The manifest's size in bytes.
    pub size: u64,
    pub layers_pushed: usize,
    pub layers_existing: usize,
    pub layers_mounted: usize,
    /// Bytes of blobs uploaded (chunks sent again after a failure included).
    pub bytes_uploaded: u64,
}

/// Pushes the local image `image` as `target` (a tag on a registry).
pub async fn push(
    store: &Arc<Store>,
    image: &ImageRecord,
    target: &Reference,
    opts: &PushOptions,
) -> Result<PushReport> {
    if target.digest.is_some() {
        return Err(Error::InvalidReference {
            reference: target.to_string(),
            reason: "push to a tag, not a digest (the digest is what the push gives)".into(),
        });
    }
    let tag = target.tag.clone().unwrap_or_else(|| "latest".to_string());
    let gc_store = store.clone();
    // The blobs being sent stay in the store until the push is done.
    let _gc = tokio::task::spawn_blocking(move || gc_store.gc_lock(false)).await??;
    let manifest_bytes = store.read_blob(&image.manifest_digest, MAX_MANIFEST_BYTES, "manifest")?;
    let ManifestDoc::Image(manifest) = ManifestDoc::parse(&manifest_bytes, None)? else {
        return Err(Error::Malformed {
            what: format!("manifest {}", image.manifest_digest),
            reason: "an index, not an image manifest".into(),
        });
    };
    if manifest.layers.len() != image.layers.len() {
        return Err(Error::Malformed {
            what: format!("image {}", image.name),
            reason: "the index and the manifest disagree on the layers".into(),
        });
    }
    let media_type = manifest
        .media_type
        .clone()
        .unwrap_or_else(|| image.media_type.clone());
    if !matches!(
        media_type.as_str(),
        media::OCI_MANIFEST | media::DOCKER_MANIFEST
    ) {
        return Err(Error::UnsupportedMediaType {
            what: "manifest to push".into(),
            media_type,
        });
    }

    // One job per distinct blob; the config goes after the layers.
    let mut jobs: Vec<BlobJob> = Vec::new();
    for (l, rec) in manifest.layers.iter().zip(&image.layers) {
        if jobs.iter().any(|j| j.digest == l.digest) {
            continue;
        }
        let id = rec.diff_id.short().to_string();
        jobs.push(BlobJob::new(
            store,
            target,
            l.digest.clone(),
            l.size,
            Some(id),
        )?);
    }
    let config = BlobJob::new(
        store,
        target,
        manifest.config.digest.clone(),
        manifest.config.size,
        None,
    )?;

    let creds = match &opts.credentials {
        Some(c) => Some(c.clone()),
        None => auth::lookup(&target.registry)?,
    };
    let client = RegistryClient::new(target, opts.insecure, creds, store.config.timeouts)?
        .with_scopes(scopes(&target.repository, jobs.iter().chain([&config])));
    let client = Arc::new(client);

    let results = push_layers(store, &client, jobs, opts).await?;
    let config_digest = config.digest.clone();
    push_blob(store, &client, config, opts).await?;

    let claimed = client
        .put_manifest(&tag, &media_type, Bytes::from(manifest_bytes.clone()))
        .await?;
    if let Some(claimed) = claimed.as_deref().and_then(|c| c.parse::<Digest>().ok()) {
        crate::store::check_digest(
            "pushed manifest (Docker-Content-Digest)",
            &image.manifest_digest,
            &claimed,
        )?;
    }

    let mut blobs: Vec<Digest> = manifest.layers.iter().map(|l| l.digest.clone()).collect();
    blobs.push(config_digest);
    let (s, registry, repository) = (
        store.clone(),
        target.registry.clone(),
        target.repository.clone(),
    );
    tokio::task::spawn_blocking(move || s.record_blob_sources(&registry, &repository, &blobs))
        .await??;

    let count = |want: fn(&Pushed) -> bool| results.iter().filter(|r| want(r)).count();
    Ok(PushReport {
        repository: target.name(),
        tag,
        digest: image.manifest_digest.clone(),
        size: manifest_bytes.len() as u64,
        layers_pushed: count(|r| matches!(r, Pushed::Uploaded(_))),
        layers_existing: count(|r| matches!(r, Pushed::Existed)),
        layers_mounted: count(|r| matches!(r, Pushed::Mounted)),
        bytes_uploaded: results
            .iter()
            .map(|r| match r {
                Pushed::Uploaded(n) => *n,
                _ => 0,
            })
            .sum(),
    })
}

/// `pull,push` on the target, `pull` on every repository a blob may be mounted from: one
/// token for the whole push.
fn scopes<'a>(repository: &str, jobs: impl Iterator<Item = &'a BlobJob>) -> Vec<String> {
    let mut scopes = vec![format!("repository:{repository}:pull,push")];
    for from in jobs.filter_map(|j| j.mount_from.as_deref()) {
        let s = format!("repository:{from}:pull");
        if !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    scopes
}

/// The layers, `opts.parallel` at a time; the first failure stops the others.
async fn push_layers(
    store: &Arc<Store>,
    client: &Arc<RegistryClient>,
    jobs: Vec<BlobJob>,
    opts: &PushOptions,
) -> Result<Vec<Pushed>> {
    let slots = Arc::new(tokio::sync::Semaphore::new(opts.parallel.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for job in jobs {
        let (store, client, slots, opts) =
            (store.clone(), client.clone(), slots.clone(), opts.clone());
        job.announce(&opts);
        tasks.spawn(async move {
            let _slot = slots
                .acquire_owned()
                .await
                .map_err(|e| Error::Task(e.to_string()))?;
            push_blob(&store, &client, job, &opts).await
        });
    }
    let mut results = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done.map_err(Error::from).and_then(|r| r) {
            Ok(r) => results.push(r),
            Err(e) => {
                // Dropping the set aborts the other uploads.
                tasks.abort_all();
                return Err(e);
            }
        }
    }
    Ok(results)
}
