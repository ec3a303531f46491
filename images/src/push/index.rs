//! `skiff manifest create`: a multi-platform index over image manifests already in a registry
//! (what `docker buildx imagetools create` does). skiff's store, like Docker's classic one,
//! holds one platform of an image, so the index is assembled on the registry: each source's
//! manifest and config are read (the config names the platform), its blobs are mounted into the
//! target repository (copied when the registry declines), its manifest is put there by digest,
//! and the index goes under the tag.

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::auth::{self, Credentials};
use crate::config::RegistryTimeouts;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{
    media, Descriptor, ImageConfigFile, ImageIndex, ManifestDoc, MAX_CONFIG_BYTES,
};
use crate::platform::Platform;
use crate::pull::verify_manifest;
use crate::reference::Reference;
use crate::registry::{Mount, RegistryClient};

#[derive(Clone, Debug)]
pub struct IndexOptions {
    /// Allow plain HTTP / unchecked TLS to a registry not on loopback (as for pulls).
    pub insecure: bool,
    /// Credentials for the registry; None: what `skiff login` stored for it.
    pub credentials: Option<Credentials>,
    /// Size of the PATCH chunks of a blob copied between repositories.
    pub chunk_size: usize,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            insecure: false,
            credentials: None,
            chunk_size: super::DEFAULT_CHUNK_SIZE,
        }
    }
}

/// One manifest of the pushed index.
#[derive(Clone, Debug, serde::Serialize)]
pub struct IndexEntry {
    /// The reference it was named by.
    pub source: String,
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub platform: Platform,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct IndexReport {
    /// `registry/repository` pushed to.
    pub repository: String,
    pub tag: String,
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub manifests: Vec<IndexEntry>,
    /// Blobs of other repositories mounted into the target one, and copied when a mount was
    /// declined.
    pub blobs_mounted: usize,
    pub blobs_copied: usize,
}

/// A source image as read from the registry.
struct Source {
    reference: Reference,
    bytes: Bytes,
    entry: IndexEntry,
    blobs: Vec<Digest>,
}

/// Pushes an index named `target` (a tag) over the image manifests `sources` name, all in
/// `target`'s registry.
pub async fn push_index(
    target: &Reference,
    sources: &[Reference],
    opts: &IndexOptions,
    timeouts: RegistryTimeouts,
) -> Result<IndexReport> {
    if target.digest.is_some() {
        return Err(Error::InvalidReference {
            reference: target.to_string(),
            reason: "an index is pushed to a tag, not a digest".into(),
        });
    }
    if sources.is_empty() {
        return Err(Error::InvalidReference {
            reference: target.to_string(),
            reason: "an index needs at least one image to name".into(),
        });
    }
    let tag = target.tag.clone().unwrap_or_else(|| "latest".to_string());
    let creds = match &opts.credentials {
        Some(c) => Some(c.clone()),
        None => auth::lookup(&target.registry)?,
    };
    let mut read = Vec::new();
    for r in sources {
        if r.registry != target.registry {
            return Err(bad_source(
                r,
                format!(
                    "it is on {}, the index on {}: an index names manifests of its own registry",
                    r.registry, target.registry
                ),
            ));
        }
        let client = RegistryClient::new(r, opts.insecure, creds.clone(), timeouts)?;
        let source = read_source(&client, r).await?;
        if let Some(twin) = same_platform(&read, &source.entry.platform) {
            return Err(bad_source(
                r,
                format!(
                    "its platform {} is {}'s too",
                    source.entry.platform, twin.reference
                ),
            ));
        }
        read.push(source);
    }

    let mut scopes = vec![format!("repository:{}:pull,push", target.repository)];
    for s in &read {
        let scope = format!("repository:{}:pull", s.reference.repository);
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    let to =
        RegistryClient::new(target, opts.insecure, creds.clone(), timeouts)?.with_scopes(scopes);
    let (mut blobs_mounted, mut blobs_copied) = (0, 0);
    for s in read
        .iter()
        .filter(|s| s.reference.repository != target.repository)
    {
        let from = RegistryClient::new(&s.reference, opts.insecure, creds.clone(), timeouts)?;
        for d in &s.blobs {
            if to.blob_exists(d).await? {
                continue;
            }
            match to.mount_blob(d, &s.reference.repository).await? {
                Mount::Mounted => blobs_mounted += 1,
                Mount::Upload(session) => {
                    copy_blob(&from, &to, d, session, opts.chunk_size).await?;
                    blobs_copied += 1;
                }
            }
        }
        let digest = s.entry.digest.to_string();
        to.put_manifest(&digest, &s.entry.media_type, s.bytes.clone())
            .await?;
    }

    let all_docker = read
        .iter()
        .all(|s| s.entry.media_type == media::DOCKER_MANIFEST);
    let media_type = if all_docker {
        media::DOCKER_LIST
    } else {
        media::OCI_INDEX
    };
    let index = ImageIndex {
        schema_version: 2,
        media_type: Some(media_type.to_string()),
        manifests: read
            .iter()
            .map(|s| Descriptor {
                media_type: s.entry.media_type.clone(),
                digest: s.entry.digest.clone(),
                size: s.entry.size,
                platform: Some(s.entry.platform.clone()),
                annotations: Default::default(),
            })
            .collect(),
        annotations: Default::default(),
    };
    let bytes = serde_json::to_vec_pretty(&index).map_err(|e| Error::Malformed {
        what: "index".into(),
        reason: e.to_string(),
    })?;
    let digest = Digest::of(&bytes);
    let claimed = to
        .put_manifest(&tag, media_type, Bytes::from(bytes.clone()))
        .await?;
    if let Some(claimed) = claimed.as_deref().and_then(|c| c.parse::<Digest>().ok()) {
        crate::store::check_digest("pushed index (Docker-Content-Digest)", &digest, &claimed)?;
    }
    Ok(IndexReport {
        repository: target.name(),
        tag,
        digest,
        size: bytes.len() as u64,
        media_type: media_type.to_string(),
        manifests: read.into_iter().map(|s| s.entry).collect(),
        blobs_mounted,
        blobs_copied,
    })
}

/// The source already read for `platform`, if any.
fn same_platform<'a>(read: &'a [Source], platform: &Platform) -> Option<&'a Source> {
    read.iter().find(|s| &s.entry.platform == platform)
}

fn bad_source(r: &Reference, reason: String) -> Error {
    Error::IndexSource {
        image: r.to_string(),
        reason,
    }
}

/// What names `r`'s manifest in its repository: its digest, else its tag.
fn in_repository(r: &Reference) -> String {
    match (&r.digest, &r.tag) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.clone(),
        (None, None) => "latest".to_string(),
    }
}

/// The image manifest `r` names, checked against its digest, and its config's platform.
async fn read_source(client: &RegistryClient, r: &Reference) -> Result<Source> {
    let fetched = client.manifest(&in_repository(r)).await?;
    let digest = verify_manifest(&fetched, r.digest.as_ref(), &format!("manifest of {r}"))?;
    let doc = ManifestDoc::parse(&fetched.bytes, fetched.content_type.as_deref())?;
    let ManifestDoc::Image(m) = doc else {
        return Err(bad_source(
            r,
            "it is an index already: name one of its manifests (REPO@DIGEST)".into(),
        ));
    };
    let media_type = m
        .media_type
        .clone()
        .or_else(|| {
            let t = fetched.content_type.as_deref()?;
            Some(t.split(';').next().unwrap_or(t).trim().to_string())
        })
        .unwrap_or_else(|| media::OCI_MANIFEST.to_string());
    if !matches!(
        media_type.as_str(),
        media::OCI_MANIFEST | media::DOCKER_MANIFEST
    ) {
        return Err(Error::UnsupportedMediaType {
            what: format!("manifest of {r}"),
            media_type,
        });
    }
    if m.config.size > MAX_CONFIG_BYTES {
        return Err(Error::TooLarge {
            what: format!("config of {r}"),
            limit: MAX_CONFIG_BYTES,
        });
    }
    let what = format!("config of {r}");
    let config = client
        .blob_bytes(&m.config.digest, MAX_CONFIG_BYTES, &what)
        .await?;
    crate::store::check_digest(&what, &m.config.digest, &Digest::of(&config))?;
    let platform = ImageConfigFile::parse(&config)?.platform();
    let mut blobs: Vec<Digest> = m.layers.iter().map(|l| l.digest.clone()).collect();
    blobs.push(m.config.digest.clone());
    blobs.dedup();
    Ok(Source {
        reference: r.clone(),
        entry: IndexEntry {
            source: r.to_string(),
            digest,
            size: fetched.bytes.len() as u64,
            media_type,
            platform,
        },
        bytes: Bytes::from(fetched.bytes),
        blobs,
    })
}

/// Streams blob `d` from one repository into the upload session `session` of another, in
/// chunks. The target registry checks the digest when the session is closed.
async fn copy_blob(
    from: &RegistryClient,
    to: &RegistryClient,
    d: &Digest,
    mut session: String,
    chunk_size: usize,
) -> Result<()> {
    let what = format!("blob {d}");
    let resp = from.blob(d, &what).await?;
    let url = resp.url().to_string();
    let stage = format!("copying {what}");
    let mut body = resp.bytes_stream();
    let (mut buf, mut offset) = (BytesMut::new(), 0u64);
    loop {
        let piece = match body.next().await {
            Some(piece) => Some(piece.map_err(from.net_error(&url, &stage))?),
            None => None,
        };
        if let Some(piece) = &piece {
            buf.extend_from_slice(piece);
        }
        while buf.len() >= chunk_size.max(1) || (piece.is_none() && !buf.is_empty()) {
            let chunk = buf.split_to(buf.len().min(chunk_size.max(1))).freeze();
            let n = chunk.len() as u64;
            session = to.upload_chunk(&session, offset, chunk).await?;
            offset += n;
        }
        if piece.is_none() {
            break;
        }
    }
    to.finish_upload(&session, d, None).await
}

/// A manifest or index as the registry holds it (`skiff manifest inspect`): its digest (checked
/// against the bytes), media type and bytes.
pub async fn fetch_manifest(
    r: &Reference,
    opts: &IndexOptions,
    timeouts: RegistryTimeouts,
) -> Result<(Digest, String, Vec<u8>)> {
    let creds = match &opts.credentials {
        Some(c) => Some(c.clone()),
        None => auth::lookup(&r.registry)?,
    };
    let client = RegistryClient::new(r, opts.insecure, creds, timeouts)?;
    let fetched = client.manifest(&in_repository(r)).await?;
    let digest = verify_manifest(&fetched, r.digest.as_ref(), &format!("manifest of {r}"))?;
    let media_type = match ManifestDoc::parse(&fetched.bytes, fetched.content_type.as_deref())? {
        ManifestDoc::Image(m) => m.media_type,
        ManifestDoc::Index(i) => i.media_type,
    }
    .or_else(|| fetched.content_type.clone())
    .unwrap_or_default();
    Ok((digest, media_type, fetched.bytes))
}
