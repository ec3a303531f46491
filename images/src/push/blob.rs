//! One blob to a registry: already there, mounted from another repository, or uploaded (one
//! request when small; chunks otherwise, a failed one retried from what the registry holds).

use std::io::SeekFrom;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tracing::{debug, warn};

use super::progress::PushEventKind;
use super::PushOptions;
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::reference::Reference;
use crate::registry::{Mount, RegistryClient};
use crate::store::Store;

pub(super) struct BlobJob {
    pub digest: Digest,
    pub size: u64,
    /// A repository of the same registry known to hold the blob.
    pub mount_from: Option<String>,
    /// The layer's ID in progress reports (short diff_id); None for the config (not shown).
    pub id: Option<String>,
}

/// How a blob got there.
pub(super) enum Pushed {
    Existed,
    Mounted,
    /// Bytes sent.
    Uploaded(u64),
}

impl BlobJob {
    pub fn new(
        store: &Store,
        target: &Reference,
        digest: Digest,
        size: u64,
        id: Option<String>,
    ) -> Result<BlobJob> {
        let path = store.blob_path(&digest);
        let held = std::fs::metadata(&path)
            .at("blob to push is not in the store:", &path)?
            .len();
        if held != size {
            return Err(Error::SizeMismatch {
                what: format!("stored blob {digest}"),
                expected: size,
                actual: held,
            });
        }
        // A read in WAL mode: never waits for a writer.
        let mount_from = store
            .blob_sources(&digest, &target.registry, &target.repository)?
            .into_iter()
            .next();
        Ok(BlobJob {
            digest,
            size,
            mount_from,
            id,
        })
    }

    fn report(&self, opts: &PushOptions, kind: PushEventKind) {
        if let (Some(p), Some(id)) = (&opts.progress, &self.id) {
            p(super::PushEvent {
                layer: self.digest.clone(),
                id: id.clone(),
                kind,
            });
        }
    }

    /// "Preparing", before the layer waits for its turn.
    pub fn announce(&self, opts: &PushOptions) {
        self.report(opts, PushEventKind::Preparing { size: self.size });
    }
}

pub(super) async fn push_blob(
    store: &Store,
    client: &RegistryClient,
    job: BlobJob,
    opts: &PushOptions,
) -> Result<Pushed> {
    if client.blob_exists(&job.digest).await? {
        job.report(opts, PushEventKind::Exists);
        return Ok(Pushed::Existed);
    }
    let mut session = None;
    if let Some(from) = &job.mount_from {
        match client.mount_blob(&job.digest, from).await {
            Ok(Mount::Mounted) => {
                job.report(opts, PushEventKind::Mounted { from: from.clone() });
                return Ok(Pushed::Mounted);
            }
            // Not mountable (gone there, or no access): the registry opened an upload.
            Ok(Mount::Upload(location)) => session = Some(location),
            Err(e @ (Error::AuthRequired { .. } | Error::AuthFailed { .. })) => return Err(e),
            Err(e) => debug!(blob = %job.digest, from, error = %e, "mount failed; uploading"),
        }
    }
    let location = match session {
        Some(l) => l,
        None => client.start_upload().await?,
    };
    let sent = upload(store, client, &job, location, opts).await?;
    job.report(opts, PushEventKind::Pushed);
    Ok(Pushed::Uploaded(sent))
}

/// Sends the blob's bytes into the session at `location` and closes it; returns the bytes
/// sent (more than the blob's size when chunks were sent again).
async fn upload(
    store: &Store,
    client: &RegistryClient,
    job: &BlobJob,
    mut location: String,
    opts: &PushOptions,
) -> Result<u64> {
    let path = store.blob_path(&job.digest);
    let mut file = tokio::fs::File::open(&path)
        .await
        .at("cannot open blob", &path)?;
    let chunk_size = opts.chunk_size.max(1) as u64;
    let progress = |current| {
        job.report(
            opts,
            PushEventKind::Uploading {
                current,
                total: job.size,
            },
        )
    };
    progress(0);
    if job.size <= chunk_size {
        let body = read_at(&mut file, &path, 0, job.size).await?;
        client
            .finish_upload(&location, &job.digest, Some(body))
            .await?;
        progress(job.size);
        return Ok(job.size);
    }
    let (mut offset, mut sent, mut failures) = (0u64, 0u64, 0u32);
    while offset < job.size {
        let n = chunk_size.min(job.size - offset);
        let chunk = read_at(&mut file, &path, offset, n).await?;
        match client.upload_chunk(&location, offset, chunk).await {
            Ok(next) => {
                location = next;
                offset += n;
                sent += n;
                progress(offset);
            }
            Err(e @ (Error::AuthRequired { .. } | Error::AuthFailed { .. })) => return Err(e),
            Err(e) => {
                failures += 1;
                if failures > opts.chunk_retries {
                    return Err(e);
                }
                warn!(blob = %job.digest, offset, error = %e, "chunk failed; resuming");
                (location, offset) = resume(client, &location, job.size).await?;
                progress(offset);
            }
        }
    }
    client.finish_upload(&location, &job.digest, None).await?;
    Ok(sent)
}

/// Where to go on after a failed chunk: the session and the bytes it holds, from the
/// registry; a new session from the start when the old one is gone (distribution drops a
/// session whose data no longer matches its state, e.g. after a chunk cut short).
async fn resume(client: &RegistryClient, location: &str, size: u64) -> Result<(String, u64)> {
    match client.upload_status(location).await {
        Ok((next, held)) if held <= size => Ok((next, held)),
        Ok((_, held)) => {
            debug!(
                held,
                size, "upload holds more than the blob; starting again"
            );
            Ok((client.start_upload().await?, 0))
        }
        Err(e) => {
            debug!(error = %e, "upload session lost; starting again");
            Ok((client.start_upload().await?, 0))
        }
    }
}

async fn read_at(
    file: &mut tokio::fs::File,
    path: &std::path::Path,
    offset: u64,
    len: u64,
) -> Result<Bytes> {
    file.seek(SeekFrom::Start(offset))
        .await
        .at("cannot seek in blob", path)?;
    let mut buf = vec![0u8; len as usize];
    file.read_exact(&mut buf)
        .await
        .at("cannot read blob", path)?;
    Ok(Bytes::from(buf))
}
