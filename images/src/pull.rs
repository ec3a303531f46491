//! `skiff pull`: manifest (through an index if need be), config, then the layers, downloaded
//! in parallel and unpacked as each one arrives. Every byte is checked against its digest and
//! size before it becomes visible in the store.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::auth;
use crate::auth::Credentials;
use crate::config::StoreConfig;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{
    media, Compression, Descriptor, ImageConfigFile, ManifestDoc, MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
};
use crate::platform::Platform;
use crate::reference::Reference;
use crate::registry::{FetchedManifest, RegistryClient};
use crate::store::{check_digest, FileLock, ImageRecord, Store};
use crate::unpack::ImageBudget;

#[derive(Clone, Debug)]
pub struct PullOptions {
    /// Which image of a multi-platform index; default: the host's.
    pub platform: Option<Platform>,
    /// Allow plain HTTP to a non-loopback registry.
    pub insecure: bool,
    /// Draw progress bars on stderr.
    pub progress: bool,
    /// Layers downloaded at once.
    pub parallel: usize,
    /// Credentials a client sent; None: this host's `skiff login`.
    pub credentials: Option<Credentials>,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: None,
            insecure: false,
            progress: false,
            parallel: 4,
            credentials: None,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PullReport {
    pub image: ImageRecord,
    pub layers_downloaded: usize,
    pub layers_reused: usize,
    pub bytes_downloaded: u64,
}

pub async fn pull(store: &Arc<Store>, r: &Reference, opts: &PullOptions) -> Result<PullReport> {
    let gc_store = store.clone();
    // Shared by every task of this pull, the blocking unpacks included: they may outlive the
    // pull's own future if it is dropped.
    let gc_guard = Arc::new(tokio::task::spawn_blocking(move || gc_store.gc_lock(false)).await??);
    let creds = match &opts.credentials {
        Some(c) => Some(c.clone()),
        None => auth::lookup(&r.registry)?,
    };
    let client = RegistryClient::new(r, opts.insecure, creds, store.config.timeouts)?;

    let top = client.manifest(&r.manifest_reference()).await?;
    let top_digest = verify_manifest(&top, r.digest.as_ref(), "manifest")?;
    let (manifest_bytes, manifest_digest, index_digest) =
        match ManifestDoc::parse(&top.bytes, top.content_type.as_deref())? {
            ManifestDoc::Image(_) => (top.bytes, top_digest, None),
            ManifestDoc::Index(index) => {
                let wanted = opts.platform.clone().unwrap_or_else(Platform::host);
                let chosen = index.choose(&wanted)?.clone();
                if !matches!(
                    chosen.media_type.as_str(),
                    media::OCI_MANIFEST | media::DOCKER_MANIFEST
                ) {
                    return Err(Error::UnsupportedMediaType {
                        what: format!("index entry for {wanted}"),
                        media_type: chosen.media_type,
                    });
                }
                check_size(&chosen, MAX_MANIFEST_BYTES, "manifest")?;
                store.put_blob(
                    &top.bytes,
                    Some((&top_digest, top.bytes.len() as u64)),
                    "index",
                )?;
                let m = client.manifest(&chosen.digest.to_string()).await?;
                let d = verify_manifest(&m, Some(&chosen.digest), "manifest")?;
                (m.bytes, d, Some(top_digest))
            }
        };
    let ManifestDoc::Image(manifest) = ManifestDoc::parse(&manifest_bytes, None)? else {
        return Err(Error::Malformed {
            what: format!("manifest {manifest_digest}"),
            reason: "an index points at another index".into(),
        });
    };

    check_size(&manifest.config, MAX_CONFIG_BYTES, "image config")?;
    let config_bytes = if store.has_blob(&manifest.config.digest) {
        store.read_blob(&manifest.config.digest, MAX_CONFIG_BYTES, "image config")?
    } else {
        let b = client
            .blob_bytes(&manifest.config.digest, MAX_CONFIG_BYTES, "image config")
            .await?;
        store.put_blob(
            &b,
            Some((&manifest.config.digest, manifest.config.size)),
            "image config",
        )?;
        b
    };
    let config = ImageConfigFile::parse(&config_bytes)?;
    let diff_ids = layer_diff_ids(&manifest.layers, &config)?;
    check_layer_sizes(&manifest.layers, &store.config)?;

    let bars = MultiProgress::with_draw_target(if opts.progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    // One task per layer (owned data: the future stays Send for the daemon), at most
    // `parallel` downloading at once; each layer is unpacked as soon as it has arrived.
    let client = Arc::new(client);
    let slots = Arc::new(tokio::sync::Semaphore::new(opts.parallel.max(1)));
    let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
    let budget = Arc::new(ImageBudget::new(&store.config.unpack.limits));
    let mut tasks = tokio::task::JoinSet::new();
    for (layer, diff_id) in manifest.layers.iter().cloned().zip(diff_ids) {
        let bar = layer_bar(&bars, &layer);
        let (store, client, slots) = (store.clone(), client.clone(), slots.clone());
        let (gc_guard, mut cancel) = (gc_guard.clone(), cancel_rx.clone());
        let budget = budget.clone();
        tasks.spawn(async move {
            let _slot = tokio::select! {
                slot = slots.acquire_owned() => slot.map_err(|e| Error::Task(e.to_string()))?,
                _ = until_cancelled(&mut cancel) => return Err(cancelled()),
            };
            let task = LayerTask {
                gc_guard,
                budget,
                cancel,
            };
            fetch_and_unpack(&store, &client, &layer, diff_id, &bar, task).await
        });
    }
    // Every task is joined, also after a failure: the others then stop downloading, and
    // their unpackers have finished when this returns (a failed pull can clean up).
    let mut results: Vec<Option<u64>> = Vec::with_capacity(manifest.layers.len());
    let mut failure = None;
    while let Some(done) = tasks.join_next().await {
        match done.map_err(Error::from).and_then(|r| r) {
            Ok(r) => results.push(r),
            Err(e) => {
                let _ = cancel_tx.send(true);
                failure.get_or_insert(e);
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }

    store.put_blob(
        &manifest_bytes,
        Some((&manifest_digest, manifest_bytes.len() as u64)),
        "manifest",
    )?;
    let (s, name) = (store.clone(), r.to_string());
    // SQLite may wait for another process's transaction: off the async workers.
    let (registry, repository) = (r.registry.clone(), r.repository.clone());
    let image = tokio::task::spawn_blocking(move || {
        let image = crate::service::record(&s, name, &manifest_digest, index_digest)?;
        // Known to be there now: a push to another repository of that registry mounts them.
        let mut blobs: Vec<Digest> = image.layers.iter().map(|l| l.blob.clone()).collect();
        blobs.push(image.config_digest.clone());
        s.record_blob_sources(&registry, &repository, &blobs)?;
        Ok::<_, Error>(image)
    })
    .await??;
    Ok(PullReport {
        image,
        layers_downloaded: results.iter().filter(|r| r.is_some()).count(),
        layers_reused: results.iter().filter(|r| r.is_none()).count(),
        bytes_downloaded: results.iter().flatten().sum(),
    })
}

/// Resolves once the pull is cancelled (or abandoned: its sender gone).
async fn until_cancelled(cancel: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard wait_for returns is not Send: dropped here, not held across an await.
    let _ = cancel.wait_for(|c| *c).await.map(drop);
}

/// What a layer task reports when another layer's failure stopped it.
fn cancelled() -> Error {
    Error::Task("stopped: another layer failed".into())
}

/// The diff_id of each layer, from the config; the counts must agree.
pub(crate) fn layer_diff_ids(
    layers: &[Descriptor],
    config: &ImageConfigFile,
) -> Result<Vec<Digest>> {
    if layers.len() != config.rootfs.diff_ids.len() {
        return Err(Error::Malformed {
            what: "image".into(),
            reason: format!(
                "manifest has {} layers but the config lists {} diff_ids",
                layers.len(),
                config.rootfs.diff_ids.len()
            ),
        });
    }
    Ok(config.rootfs.diff_ids.clone())
}

/// Refuses, before anything is downloaded, layers whose declared sizes pass the caps: a
/// download never writes more than its descriptor declares.
pub(crate) fn check_layer_sizes(layers: &[Descriptor], config: &StoreConfig) -> Result<()> {
    let mut total: u64 = 0;
    for l in layers {
        check_size(l, config.max_blob_bytes, "layer")?;
        total = total.saturating_add(l.size);
    }
    if total > config.max_image_bytes {
        return Err(Error::TooLarge {
            what: format!("image ({} layers declaring {total} bytes)", layers.len()),
            limit: config.max_image_bytes,
        });
    }
    Ok(())
}

fn check_size(d: &Descriptor, max: u64, what: &str) -> Result<()> {
    if d.size > max {
        return Err(Error::TooLarge {
            what: format!("{what} {} (descriptor says {} bytes)", d.digest, d.size),
            limit: max,
        });
    }
    Ok(())
}

/// The manifest's digest: it must equal the pinned one, and the registry's claim if it makes one.
pub(crate) fn verify_manifest(
    m: &FetchedManifest,
    pinned: Option<&Digest>,
    what: &str,
) -> Result<Digest> {
    let actual = Digest::of(&m.bytes);
    if let Some(want) = pinned {
        check_digest(what, want, &actual)?;
    }
    if let Some(claimed) = m
        .docker_content_digest
        .as_deref()
        .and_then(|c| c.parse::<Digest>().ok())
    {
        check_digest(
            &format!("{what} (Docker-Content-Digest)"),
            &claimed,
            &actual,
        )?;
    }
    Ok(actual)
}

fn layer_bar(bars: &MultiProgress, layer: &Descriptor) -> ProgressBar {
    let bar = bars.add(ProgressBar::new(layer.size));
    bar.set_style(
        ProgressStyle::with_template("{prefix} {msg:>14} [{bar:30}] {bytes}/{total_bytes}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(layer.digest.short().to_string());
    bar.set_message("waiting");
    bar
}

/// What the layer tasks of one pull share.
struct LayerTask {
    /// Keeps garbage collection away, also from unpacks that outlive the pull's future.
    gc_guard: Arc<FileLock>,
    budget: Arc<ImageBudget>,
    cancel: tokio::sync::watch::Receiver<bool>,
}

/// Gets one layer into the store and unpacked. A new blob is unpacked while it downloads
/// (the two overlap); a blob already there is only unpacked if need be. `Some(bytes)` when
/// something was downloaded.
async fn fetch_and_unpack(
    store: &Arc<Store>,
    client: &RegistryClient,
    layer: &Descriptor,
    diff_id: Digest,
    bar: &ProgressBar,
    task: LayerTask,
) -> Result<Option<u64>> {
    let LayerTask {
        gc_guard,
        budget,
        mut cancel,
    } = task;
    let compression = Compression::of_media_type(&layer.media_type)?;
    // Another pull of the same blob (this process or another) finishes first, then we reuse it.
    let lock = if store.has_blob(&layer.digest) {
        None
    } else {
        let (s, key) = (store.clone(), format!("blob-{}", layer.digest.hex()));
        Some(tokio::task::spawn_blocking(move || s.content_lock(&key)).await??)
    };
    let (s, blob) = (store.clone(), layer.digest.clone());
    if store.has_blob(&layer.digest) {
        drop(lock);
        bar.set_position(layer.size);
        bar.set_message("unpacking");
        tokio::task::spawn_blocking(move || {
            let _gc = gc_guard;
            s.ensure_layer(&diff_id, &blob, compression, &budget)
        })
        .await??;
        bar.finish_with_message("already exists");
        return Ok(None);
    }
    bar.set_message("downloading");
    // A short queue: the download waits for the unpacker rather than buffering in memory.
    let (chunks_tx, chunks_rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let (verdict_tx, verdict_rx) = tokio::sync::oneshot::channel::<bool>();
    let mut unpack = tokio::task::spawn_blocking(move || {
        let _gc = gc_guard;
        let open = || Ok(ChunkReader::new(chunks_rx));
        s.unpack_layer(&diff_id, &blob, compression, &budget, open, || {
            verdict_rx.blocking_recv().unwrap_or(false)
        })
    });
    let mut download = Box::pin(download_blob(store, client, layer, bar, chunks_tx));
    let n = tokio::select! {
        downloaded = &mut download => {
            let _ = verdict_tx.send(downloaded.is_ok());
            let unpacked = unpack.await?;
            let n = downloaded?;
            unpacked?;
            n
        }
        // The unpacker finished first: it failed (then the download stops here, its
        // temporary file goes with it), or the layer was there already (the blob is still
        // wanted in the store).
        unpacked = &mut unpack => {
            unpacked??;
            download.await?
        }
        // Another layer failed: the download stops, the unpacker sees its stream end.
        _ = until_cancelled(&mut cancel) => {
            drop(download);
            drop(verdict_tx);
            let _ = unpack.await;
            return Err(cancelled());
        }
    };
    bar.finish_with_message("done");
    Ok(Some(n))
}

/// Streams a blob into the store, verified, handing each chunk on to `unpacker` as well
/// (until it stops listening).
async fn download_blob(
    store: &Arc<Store>,
    client: &RegistryClient,
    layer: &Descriptor,
    bar: &ProgressBar,
    unpacker: tokio::sync::mpsc::Sender<Bytes>,
) -> Result<u64> {
    let what = format!("layer {}", layer.digest);
    let resp = client.blob(&layer.digest, &what).await?;
    if let Some(len) = resp.content_length() {
        if len != layer.size {
            return Err(Error::SizeMismatch {
                what,
                expected: layer.size,
                actual: len,
            });
        }
    }
    let url = resp.url().to_string();
    let stage = format!("downloading {what}");
    let mut w = store.blob_writer(layer.size, &what)?;
    let mut unpacker = Some(unpacker);
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(client.net_error(&url, &stage))?;
        w.write(&chunk)?;
        bar.inc(chunk.len() as u64);
        if let Some(tx) = &unpacker {
            if tx.send(chunk).await.is_err() {
                // The unpacker is done early (layer already there, or it failed: its error
                // is reported by the caller).
                unpacker = None;
            }
        }
    }
    drop(unpacker);
    let n = w.written();
    w.commit(Some((&layer.digest, Some(layer.size))), &what)?;
    Ok(n)
}

/// A blocking `Read` over chunks arriving from the async download.
struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl ChunkReader {
    fn new(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Self {
        ChunkReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}
