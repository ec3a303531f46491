//! `skiff save`: an image as an OCI archive (oci-layout, index.json, blobs/sha256/*) that
//! skopeo and docker read.
//!
//! What is at the destination decides how it is written: a new path or a regular file is
//! replaced atomically (a temporary file beside it is renamed when complete); a FIFO or a device
//! is written as a stream and never replaced; a symlink is followed to what it points at; a
//! directory, a socket or a dangling symlink is refused.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{CONTAINERD_NAME, REF_NAME};
use crate::error::{Error, IoContext, Result};
use crate::manifest::{media, Descriptor, ImageIndex, MAX_MANIFEST_BYTES};
use crate::reference::Reference;
use crate::store::{ImageRecord, Store};

/// Writes `rec` as an OCI archive to `path` (see the module's rules for what is there).
pub fn save(store: &Store, rec: &ImageRecord, path: &Path) -> Result<()> {
    let _gc = store.gc_lock(false)?;
    match destination(path)? {
        Destination::Stream(mut out) => {
            write_archive(store, rec, &mut out, path)?;
            out.flush().at("cannot write", path)
        }
        Destination::Replace(target) => {
            let parent = crate::sys::parent_dir(&target);
            let tmp = tempfile::Builder::new()
                .prefix(".skiff-save-")
                .tempfile_in(&parent)
                .at("cannot create temporary file in", &parent)?;
            write_archive(store, rec, &mut tmp.as_file(), tmp.path())?;
            tmp.as_file().sync_all().at("cannot write", tmp.path())?;
            tmp.persist(&target)
                .map_err(|e| e.error)
                .at("cannot write", &target)?;
            Ok(())
        }
    }
}

/// Writes `rec` as an OCI archive to `out` (standard output, a pipe).
pub fn save_to_writer(store: &Store, rec: &ImageRecord, out: &mut dyn Write) -> Result<()> {
    let _gc = store.gc_lock(false)?;
    write_archive(store, rec, out, Path::new("-"))?;
    out.flush().at("cannot write", "-")
}

enum Destination {
    /// Written to a temporary file beside this path, then renamed over it.
    Replace(PathBuf),
    /// Written in place, as a stream (FIFO, character or block device).
    Stream(fs::File),
}

fn refuse(path: &Path, what: &'static str) -> Error {
    Error::Io {
        context: what,
        path: path.to_path_buf(),
        source: std::io::ErrorKind::InvalidInput.into(),
    }
}

fn destination(path: &Path) -> Result<Destination> {
    // Symlinks are followed on purpose, as a shell's `>` would: what counts is their target.
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if fs::symlink_metadata(path).is_ok() {
                return Err(refuse(path, "refusing to save through a dangling symlink:"));
            }
            return Ok(Destination::Replace(path.to_path_buf()));
        }
        Err(e) => return Err(e).at("cannot inspect", path),
    };
    let kind = meta.file_type();
    if kind.is_file() {
        let target = fs::canonicalize(path).at("cannot resolve", path)?;
        return Ok(Destination::Replace(target));
    }
    if kind.is_fifo() || kind.is_char_device() || kind.is_block_device() {
        // No O_CREAT, no O_TRUNC: the node itself is never replaced or recreated.
        let out = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(path)
            .at("cannot open", path)?;
        if out.metadata().at("cannot inspect", path)?.is_file() {
            return Err(refuse(path, "the destination changed while being opened:"));
        }
        return Ok(Destination::Stream(out));
    }
    Err(refuse(
        path,
        "refusing to save to a directory or socket (give a file name):",
    ))
}

fn write_archive(
    store: &Store,
    rec: &ImageRecord,
    out: &mut dyn Write,
    shown: &Path,
) -> Result<()> {
    let manifest = store.read_blob(&rec.manifest_digest, MAX_MANIFEST_BYTES, "manifest")?;
    let mut annotations = std::collections::BTreeMap::new();
    if let Ok(r) = Reference::parse(&rec.name) {
        annotations.insert(CONTAINERD_NAME.to_string(), r.to_string());
        if let (Some(tag), None) = (&r.tag, &r.digest) {
            annotations.insert(REF_NAME.to_string(), tag.clone());
        }
    }
    let index = ImageIndex {
        schema_version: 2,
        media_type: Some(media::OCI_INDEX.to_string()),
        manifests: vec![Descriptor {
            media_type: rec.media_type.clone(),
            digest: rec.manifest_digest.clone(),
            size: manifest.len() as u64,
            platform: rec.platform.parse().ok(),
            annotations,
        }],
        annotations: Default::default(),
    };
    let index_json = serde_json::to_vec(&index).map_err(|e| Error::Malformed {
        what: "index".into(),
        reason: e.to_string(),
    })?;
    let mut builder = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, out));
    let io = |e: std::io::Error| Error::Io {
        context: "cannot write archive",
        path: shown.to_path_buf(),
        source: e,
    };
    append_bytes(
        &mut builder,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .map_err(io)?;
    append_bytes(&mut builder, "index.json", &index_json).map_err(io)?;
    let mut blobs = vec![rec.manifest_digest.clone(), rec.config_digest.clone()];
    blobs.extend(rec.layers.iter().map(|l| l.blob.clone()));
    blobs.dedup();
    for d in blobs {
        let p = store.blob_path(&d);
        let mut f = fs::File::open(&p).at("cannot open blob", &p)?;
        let len = f.metadata().at("cannot stat", &p)?.len();
        let mut h = file_header(len);
        builder
            .append_data(&mut h, format!("blobs/sha256/{}", d.hex()), &mut f)
            .map_err(io)?;
    }
    let mut w = builder.into_inner().map_err(io)?;
    w.flush().map_err(io)
}

fn file_header(len: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(len);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

fn append_bytes<W: Write>(
    b: &mut tar::Builder<W>,
    name: &str,
    bytes: &[u8],
) -> std::io::Result<()> {
    let mut h = file_header(bytes.len() as u64);
    b.append_data(&mut h, name, bytes)
}
