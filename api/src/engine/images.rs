//! The image calls of the API on the engine's image store (the same store `skiff pull/load`
//! use): list, inspect, remove, tag, pull, load, save.

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use skiff_images::{ImageRecord, Reference};
use tokio::io::AsyncWriteExt;

use super::{internal, Inner, Result};
use crate::daemon::model::{ImageDeleteItem, ImageInspect, ImageSummary, ProgressMessage};
use crate::daemon::options::{ByteStream, ImageListOptions, PullOptions};
use crate::daemon::registry_auth::RegistryAuth;
use crate::daemon::timefmt::parse_rfc3339;
use crate::daemon::BackendError;

/// Docker shows references in their short form (`busybox:latest`, not `docker.io/library/…`).
pub(super) fn familiar(name: &str) -> String {
    match Reference::parse(name) {
        Ok(r) if !name.starts_with("sha256:") => {
            let full = r.to_string();
            let tail = full.strip_prefix(&r.name()).unwrap_or("");
            format!("{}{tail}", r.familiar_name())
        }
        _ => name.to_string(),
    }
}

/// The image's name as `RepoTags` lists it: none for an untagged image (named by its manifest
/// digest in the store; `docker images` then shows `<none>`).
pub(super) fn repo_tags(name: &str) -> Vec<String> {
    if name.starts_with("sha256:") {
        Vec::new()
    } else {
        vec![familiar(name)]
    }
}

fn created_unix(record: &ImageRecord) -> i64 {
    record
        .created
        .as_deref()
        .and_then(parse_rfc3339)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(record.added_at, |d| d.as_secs() as i64)
}

fn size(record: &ImageRecord) -> i64 {
    record.layers.iter().map(|l| l.size as i64).sum()
}

pub(super) fn no_such_image(name: &str) -> BackendError {
    BackendError::NoSuchImage(name.to_string())
}

fn progress(line: String) -> ProgressMessage {
    ProgressMessage {
        status: Some(line),
        ..ProgressMessage::default()
    }
}

fn failure(message: String) -> ProgressMessage {
    ProgressMessage {
        error: Some(message.clone()),
        error_detail: Some(crate::daemon::model::ErrorDetail { message }),
        ..ProgressMessage::default()
    }
}

/// One row per image (by config digest) with all its names.
/// Build steps' untagged images are left out unless `all` (`docker images -a`), as Docker
/// leaves out intermediate images.
pub fn list(inner: &Inner, opts: ImageListOptions) -> Result<Vec<ImageSummary>> {
    let mut rows: Vec<ImageSummary> = Vec::new();
    let intermediate = if opts.all {
        Vec::new()
    } else {
        inner
            .images
            .store()
            .build_cache_manifests()
            .map_err(internal)?
    };
    for record in inner.images.list().map_err(internal)? {
        let manifest = record.manifest_digest.to_string();
        if record.name == manifest && intermediate.contains(&manifest) {
            continue;
        }
        let id = record.config_digest.to_string();
        let tags = repo_tags(&record.name);
        match rows.iter_mut().find(|r| r.id == id) {
            Some(row) => row.repo_tags.extend(tags),
            None => rows.push(ImageSummary {
                id,
                repo_tags: tags,
                created: created_unix(&record),
                size: size(&record),
                shared_size: -1,
                containers: -1,
                ..ImageSummary::default()
            }),
        }
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.created));
    Ok(rows)
}

pub fn inspect(inner: &Inner, name: &str) -> Result<ImageInspect> {
    let image = inner
        .images
        .resolve(name)
        .map_err(|_| no_such_image(name))?;
    let (os, architecture) = image
        .platform
        .split_once('/')
        .map_or(("linux", "amd64"), |(o, a)| {
            (o, a.split('/').next().unwrap_or(a))
        });
    Ok(ImageInspect {
        id: image.config_digest.to_string(),
        repo_tags: repo_tags(&image.name),
        created: image.created.clone().unwrap_or_default(),
        os: os.to_string(),
        architecture: architecture.to_string(),
        size: size(&image),
        ..ImageInspect::default()
    })
}

/// `rmi`: refused (409) while a container was created from the image, unless forced.
pub fn remove(inner: &Inner, name: &str, force: bool) -> Result<Vec<ImageDeleteItem>> {
    let image = inner
        .images
        .resolve(name)
        .map_err(|_| no_such_image(name))?;
    let digest = image.config_digest.to_string();
    if !force {
        let users = inner.store.all().map_err(internal)?;
        if let Some(user) = users.iter().find(|c| c.image_id == digest) {
            return Err(BackendError::Conflict(format!(
                "conflict: unable to remove repository reference \"{name}\" (must force) - \
                 container {} is using its referenced image {}",
                &user.id[..12],
                &digest[7..19.min(digest.len())]
            )));
        }
    }
    let (names, gc) = inner.images.remove(name).map_err(internal)?;
    let mut items: Vec<ImageDeleteItem> = names
        .iter()
        .map(|n| ImageDeleteItem::Untagged(familiar(n)))
        .collect();
    if gc.manifests_removed > 0 || inner.images.resolve(&digest).is_err() {
        items.push(ImageDeleteItem::Deleted(digest));
    }
    Ok(items)
}

/// `tag`: one more name for a local image.
pub fn tag(inner: &Inner, name: &str, repo: &str, tag: Option<&str>) -> Result<()> {
    inner
        .images
        .resolve(name)
        .map_err(|_| no_such_image(name))?;
    let target = match tag {
        Some(t) if !t.is_empty() => format!("{repo}:{t}"),
        _ => repo.to_string(),
    };
    match inner.images.tag(name, &target) {
        Ok(_) => Ok(()),
        Err(e @ skiff_images::Error::InvalidReference { .. }) => {
            Err(BackendError::InvalidArgument(e.to_string()))
        }
        Err(e) => Err(internal(e)),
    }
}

/// `pull`: progress lines, then Docker's closing status; a failure is a line with `error`.
pub async fn pull(inner: &Inner, opts: PullOptions) -> Result<BoxStream<'static, ProgressMessage>> {
    let reference = match &opts.tag {
        Some(t) if t.starts_with("sha256:") => format!("{}@{t}", opts.from_image),
        Some(t) if !t.is_empty() => format!("{}:{t}", opts.from_image),
        _ => opts.from_image.clone(),
    };
    let parsed = Reference::parse(&reference)
        .map_err(|e| BackendError::InvalidArgument(format!("invalid reference: {e}")))?;
    let pull_opts = skiff_images::PullOptions {
        platform: match &opts.platform {
            Some(p) if !p.is_empty() => Some(p.parse().map_err(|e| {
                BackendError::InvalidArgument(format!("invalid platform {p}: {e}"))
            })?),
            _ => None,
        },
        credentials: opts.registry_auth.as_ref().map(RegistryAuth::credentials),
        ..skiff_images::PullOptions::default()
    };
    let shown = familiar(&parsed.to_string());
    let first = progress(format!("Pulling from {}", parsed.familiar_name()));
    let images = inner.images.clone();
    let rest = stream::once(async move {
        match images.pull(&reference, &pull_opts).await {
            Ok(report) => vec![
                progress(format!("Digest: {}", report.image.manifest_digest)),
                progress(if report.layers_downloaded > 0 {
                    format!("Status: Downloaded newer image for {shown}")
                } else {
                    format!("Status: Image is up to date for {shown}")
                }),
            ],
            Err(e) => vec![failure(format!("{e:#}"))],
        }
    })
    .flat_map(stream::iter);
    Ok(stream::iter([first]).chain(rest).boxed())
}

/// Holds off the store's clean-up of tmp/ (prune, or another process opening the store)
/// while a spool file lives there.
async fn writer_lock(inner: &Inner) -> Result<skiff_images::store::FileLock> {
    let store = inner.images.store().clone();
    tokio::task::spawn_blocking(move || store.gc_lock(false))
        .await
        .map_err(internal)?
        .map_err(internal)
}

/// `load`: the request body is spooled to a private temporary file (the archive formats need
/// random access), then loaded like `skiff load`. The spool is capped at the store's image
/// size cap, as a pull would be.
pub async fn load(
    inner: &Inner,
    mut archive: ByteStream,
    _quiet: bool,
) -> Result<BoxStream<'static, ProgressMessage>> {
    let _writer = writer_lock(inner).await?;
    let cap = inner.images.store().config.max_image_bytes;
    let tmp = tempfile::NamedTempFile::new_in(inner.images.store().tmp_dir()).map_err(internal)?;
    let mut file = tokio::fs::File::from_std(tmp.reopen().map_err(internal)?);
    let mut spooled: u64 = 0;
    while let Some(chunk) = archive.next().await {
        let chunk = chunk
            .map_err(|e| BackendError::InvalidArgument(format!("reading the archive: {e}")))?;
        spooled += chunk.len() as u64;
        if spooled > cap {
            return Err(BackendError::InvalidArgument(format!(
                "the archive is larger than the image size cap ({cap} bytes)"
            )));
        }
        file.write_all(&chunk).await.map_err(internal)?;
    }
    file.flush().await.map_err(internal)?;
    let lines = match inner.images.load(tmp.path()).await {
        Ok(records) => records
            .iter()
            .map(|r| ProgressMessage {
                stream: Some(format!("Loaded image: {}\n", familiar(&r.name))),
                ..ProgressMessage::default()
            })
            .collect(),
        Err(e) => vec![failure(format!("{e:#}"))],
    };
    Ok(stream::iter(lines).boxed())
}

/// `save`: one image as an OCI archive (what `docker load` reads too).
pub async fn save(inner: &Inner, names: Vec<String>) -> Result<ByteStream> {
    let [name] = names.as_slice() else {
        return Err(BackendError::InvalidArgument(
            "skiff saves one image per archive".into(),
        ));
    };
    inner
        .images
        .resolve(name)
        .map_err(|_| no_such_image(name))?;
    let _writer = writer_lock(inner).await?;
    let tmp = tempfile::NamedTempFile::new_in(inner.images.store().tmp_dir()).map_err(internal)?;
    inner
        .images
        .save(name, tmp.path())
        .await
        .map_err(internal)?;
    let file = tokio::fs::File::open(tmp.path()).await.map_err(internal)?;
    // The open file outlives the unlinked name.
    drop(tmp);
    let chunks = stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    Ok(chunks.boxed())
}
