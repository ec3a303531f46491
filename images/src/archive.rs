//! Import (`docker save` tarballs, OCI archives, OCI layout directories) and export (OCI
//! archives that skopeo and docker read).
//!
//! Nothing from an archive is written by its own path: every file becomes a store blob named
//! by its verified digest, so hostile entry names (`../x`, absolute, links) cannot escape.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::manifest::{
    Compression, Descriptor, ImageConfigFile, ImageIndex, ImageManifest, ManifestDoc,
    MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES,
};
use crate::platform::Platform;
use crate::reference::Reference;
use crate::service::record;
use crate::store::{ImageRecord, Store};
use crate::unpack::guard::{as_limit, ExtensionGuard};
use crate::user_files::{open_regular, read_small_file};

mod save;
pub use save::{save, save_to_writer};

pub(crate) const REF_NAME: &str = "org.opencontainers.image.ref.name";
pub(crate) const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// The small documents of an archive, kept in memory; blobs go to the store.
#[derive(Default)]
struct Scanned {
    index_json: Option<Vec<u8>>,
    docker_manifest_json: Option<Vec<u8>>,
    /// Archive path → digest of the blob it became (docker save names files freely).
    paths: HashMap<PathBuf, Digest>,
    /// Archive symlinks (docker save links repeated layers): path → target path.
    links: HashMap<PathBuf, PathBuf>,
}

pub fn load(store: &Store, path: &Path) -> Result<Vec<ImageRecord>> {
    let _gc = store.gc_lock(false)?;
    let meta = fs::metadata(path).at("cannot open", path)?;
    // An archive is read once, front to back: a regular file or a pipe (`<(zcat x.tar.gz)`).
    if !(meta.is_dir() || meta.is_file() || meta.file_type().is_fifo()) {
        return Err(Error::Io {
            context: "not an archive, a pipe or an OCI layout directory:",
            path: path.to_path_buf(),
            source: std::io::ErrorKind::InvalidInput.into(),
        });
    }
    let default_repo = repo_from_file_name(path);
    if meta.is_dir() {
        // The same cap as for index.json inside an archive.
        let index = read_small_file(&path.join("index.json"), MAX_MANIFEST_BYTES)?;
        let from_dir = |d: &Digest| copy_layout_blob(store, path, d);
        return load_oci(store, &index, &from_dir, &default_repo);
    }
    let scanned = scan_tarball(store, path)?;
    if let Some(m) = &scanned.docker_manifest_json {
        load_docker(store, m, &scanned)
    } else if let Some(index) = &scanned.index_json {
        let in_store = |d: &Digest| {
            if store.has_blob(d) {
                Ok(())
            } else {
                Err(Error::Malformed {
                    what: path.display().to_string(),
                    reason: format!("archive lacks blob {d}"),
                })
            }
        };
        load_oci(store, index, &in_store, &default_repo)
    } else {
        Err(Error::Malformed {
            what: path.display().to_string(),
            reason: "neither an OCI archive (index.json) nor a docker save archive (manifest.json)"
                .into(),
        })
    }
}

/// `localhost/<file stem>`: the repository for images an OCI layout names by tag only.
fn repo_from_file_name(path: &Path) -> String {
    let stem = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = stem.split('.').next().unwrap_or("");
    let clean: String = stem
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        .collect();
    format!(
        "localhost/{}",
        if clean.is_empty() { "imported" } else { &clean }
    )
}

fn clean_archive_path(p: &Path) -> PathBuf {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect()
}

/// Streams every regular file of the tarball into the store (verified against its name when
/// the name is a digest) and keeps index.json / manifest.json.
fn scan_tarball(store: &Store, path: &Path) -> Result<Scanned> {
    let mut f =
        std::io::BufReader::with_capacity(1 << 20, fs::File::open(path).at("cannot open", path)?);
    let bad = |e: std::io::Error| match as_limit(&e) {
        Some(limit) => Error::LimitExceeded(limit),
        None => Error::Malformed {
            what: path.display().to_string(),
            reason: e.to_string(),
        },
    };
    // `docker save | gzip` and the like load as well.
    let head = std::io::BufRead::fill_buf(&mut f).at("cannot read", path)?;
    let stream: Box<dyn Read> = match Compression::sniff(head) {
        Compression::None => Box::new(f),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(f)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(f).map_err(bad)?),
    };
    // The same bounds on long names and PAX headers as for layers.
    let mut archive = tar::Archive::new(ExtensionGuard::new(stream));
    let mut out = Scanned::default();
    let max_blob = store.config.max_blob_bytes;
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let name = clean_archive_path(&entry.path().map_err(bad)?);
        match entry.header().entry_type() {
            tar::EntryType::Symlink => {
                if let Some(target) = entry.link_name().map_err(bad)? {
                    let joined = name.parent().unwrap_or(Path::new("")).join(target);
                    out.links.insert(name, normalize(&joined));
                }
                continue;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            _ => continue,
        }
        let small = |entry: &mut tar::Entry<'_, _>| -> Result<Vec<u8>> {
            let mut v = Vec::new();
            entry
                .take(MAX_MANIFEST_BYTES + 1)
                .read_to_end(&mut v)
                .map_err(bad)?;
            if v.len() as u64 > MAX_MANIFEST_BYTES {
                return Err(Error::TooLarge {
                    what: name.display().to_string(),
                    limit: MAX_MANIFEST_BYTES,
                });
            }
            Ok(v)
        };
        match name.to_str() {
            Some("index.json") => out.index_json = Some(small(&mut entry)?),
            Some("manifest.json") => out.docker_manifest_json = Some(small(&mut entry)?),
            Some("oci-layout" | "repositories") => {}
            _ => {
                let named: Option<Digest> = name
                    .strip_prefix("blobs/sha256")
                    .ok()
                    .and_then(|h| format!("sha256:{}", h.display()).parse().ok());
                if let Some(d) = named.as_ref().filter(|d| store.has_blob(d)) {
                    out.paths.insert(name, d.clone());
                    continue;
                }
                let what = format!("{} in {}", name.display(), path.display());
                let mut w = store.blob_writer(max_blob, &what)?;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = entry.read(&mut buf).map_err(bad)?;
                    if n == 0 {
                        break;
                    }
                    w.write(&buf[..n])?;
                }
                let d = w.commit(named.as_ref().map(|d| (d, None)), &what)?;
                out.paths.insert(name, d);
            }
        }
    }
    Ok(out)
}

/// `a/b/../c` → `a/c` (archive symlink targets are relative to their directory).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

fn copy_layout_blob(store: &Store, layout: &Path, d: &Digest) -> Result<()> {
    if store.has_blob(d) {
        return Ok(());
    }
    let src = layout.join("blobs/sha256").join(d.hex());
    let mut f = open_regular(&src).at("cannot read OCI layout blob", &src)?;
    let what = src.display().to_string();
    let mut w = store.blob_writer(store.config.max_blob_bytes, &what)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).at("cannot read", &src)?;
        if n == 0 {
            break;
        }
        w.write(&buf[..n])?;
    }
    w.commit(Some((d, None)), &what)?;
    Ok(())
}

fn load_oci(
    store: &Store,
    index_json: &[u8],
    fetch: &dyn Fn(&Digest) -> Result<()>,
    default_repo: &str,
) -> Result<Vec<ImageRecord>> {
    let index: ImageIndex = serde_json::from_slice(index_json).map_err(|e| Error::Malformed {
        what: "index.json".into(),
        reason: e.to_string(),
    })?;
    let mut loaded = Vec::new();
    for desc in &index.manifests {
        fetch(&desc.digest)?;
        let bytes = store.read_blob(&desc.digest, MAX_MANIFEST_BYTES, "manifest")?;
        let (manifest_digest, index_digest) =
            match ManifestDoc::parse(&bytes, Some(&desc.media_type))? {
                ManifestDoc::Image(_) => (desc.digest.clone(), None),
                ManifestDoc::Index(inner) => {
                    let chosen = inner.choose(&Platform::host())?;
                    fetch(&chosen.digest)?;
                    (chosen.digest.clone(), Some(desc.digest.clone()))
                }
            };
        fetch_image_blobs(store, &manifest_digest, fetch)?;
        let name = image_name(desc, default_repo).unwrap_or_else(|| manifest_digest.to_string());
        loaded.push(record(store, name, &manifest_digest, index_digest)?);
    }
    Ok(loaded)
}

/// The name an OCI index entry gives its image, canonicalized.
fn image_name(desc: &Descriptor, default_repo: &str) -> Option<String> {
    if let Some(full) = desc.annotations.get(CONTAINERD_NAME) {
        if let Ok(r) = Reference::parse(full) {
            return Some(r.to_string());
        }
    }
    let tag = desc.annotations.get(REF_NAME)?;
    // A ref name is either a whole reference (skopeo: "busybox:test") or a bare tag.
    let candidate = if tag.contains(':') || tag.contains('/') {
        tag.clone()
    } else {
        format!("{default_repo}:{tag}")
    };
    Reference::parse(&candidate).ok().map(|r| r.to_string())
}

fn fetch_image_blobs(
    store: &Store,
    manifest: &Digest,
    fetch: &dyn Fn(&Digest) -> Result<()>,
) -> Result<()> {
    let bytes = store.read_blob(manifest, MAX_MANIFEST_BYTES, "manifest")?;
    let ManifestDoc::Image(m) = ManifestDoc::parse(&bytes, None)? else {
        return Err(Error::Malformed {
            what: format!("manifest {manifest}"),
            reason: "nested index".into(),
        });
    };
    fetch(&m.config.digest)?;
    for l in &m.layers {
        fetch(&l.digest)?;
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerSaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn load_docker(store: &Store, manifest_json: &[u8], scanned: &Scanned) -> Result<Vec<ImageRecord>> {
    let entries: Vec<DockerSaveEntry> =
        serde_json::from_slice(manifest_json).map_err(|e| Error::Malformed {
            what: "manifest.json".into(),
            reason: e.to_string(),
        })?;
    let lookup = |p: &str| -> Result<Digest> {
        let mut path = normalize(Path::new(p));
        for _ in 0..16 {
            if let Some(d) = scanned.paths.get(&path) {
                return Ok(d.clone());
            }
            match scanned.links.get(&path) {
                Some(t) => path = t.clone(),
                None => break,
            }
        }
        Err(Error::Malformed {
            what: "docker save archive".into(),
            reason: format!("manifest.json names {p:?}, which the archive lacks"),
        })
    };
    let mut loaded = Vec::new();
    for e in entries {
        let config_digest = lookup(&e.config)?;
        let config_bytes = store.read_blob(&config_digest, MAX_CONFIG_BYTES, "image config")?;
        ImageConfigFile::parse(&config_bytes)?;
        let mut layers = Vec::with_capacity(e.layers.len());
        for l in &e.layers {
            let d = lookup(l)?;
            let p = store.blob_path(&d);
            let mut head = [0u8; 4];
            let n = fs::File::open(&p)
                .and_then(|mut f| f.read(&mut head))
                .at("cannot read", &p)?;
            let size = fs::metadata(&p).at("cannot stat", &p)?.len();
            layers.push(Descriptor {
                media_type: Compression::sniff(&head[..n]).oci_media_type().to_string(),
                digest: d,
                size,
                platform: None,
                annotations: Default::default(),
            });
        }
        let bytes =
            ImageManifest::oci(config_digest, config_bytes.len() as u64, layers).to_bytes()?;
        let digest = store.put_blob(&bytes, None, "manifest")?;
        let names: Vec<String> = e
            .repo_tags
            .unwrap_or_default()
            .iter()
            .map(|t| Reference::parse(t).map(|r| r.to_string()))
            .collect::<Result<_>>()?;
        if names.is_empty() {
            loaded.push(record(store, digest.to_string(), &digest, None)?);
        }
        for n in names {
            loaded.push(record(store, n, &digest, None)?);
        }
    }
    Ok(loaded)
}
