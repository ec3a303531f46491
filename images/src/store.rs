//! The content store under `<root>/images/`:
//!
//! ```text
//! blobs/sha256/<hex>     manifests, configs, compressed layers (content-addressed, immutable)
//! layers/sha256/<hex>/   unpacked layers keyed by diff_id, shared by every image using them
//! tmp/                   downloads and unpacks in progress (renamed into place when verified)
//! locks/                 per-blob / per-layer flock files
//! images.db              SQLite: names -> manifests -> config + layers
//! ```
//!
//! Writers take the shared `gc.lock` for their whole operation; garbage collection takes it
//! exclusively, so it never removes what an in-flight pull has written but not yet recorded.

use std::fs;
use std::io::{BufReader, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, TransactionBehavior};
use serde::Serialize;

use crate::config::StoreConfig;
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::manifest::Compression;
use crate::reference::Reference;
use crate::unpack::{apply_layer, ImageBudget, Whiteouts};

pub use crate::sys::FileLock;
pub use blob_writer::BlobWriter;

mod blob_sources;
mod blob_writer;
mod build_cache;
mod gc;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS manifests (
    digest        TEXT PRIMARY KEY,
    media_type    TEXT NOT NULL,
    config_digest TEXT NOT NULL,
    platform      TEXT NOT NULL,
    created       TEXT
);
CREATE TABLE IF NOT EXISTS manifest_layers (
    manifest_digest TEXT NOT NULL,
    position        INTEGER NOT NULL,
    blob_digest     TEXT NOT NULL,
    diff_id         TEXT NOT NULL,
    media_type      TEXT NOT NULL,
    size            INTEGER NOT NULL,
    PRIMARY KEY (manifest_digest, position)
);
-- Content in use outside the index (a container's layers): kept by gc while pinned.
CREATE TABLE IF NOT EXISTS pins (
    holder          TEXT PRIMARY KEY,
    manifest_digest TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS names (
    name            TEXT PRIMARY KEY,
    manifest_digest TEXT NOT NULL,
    index_digest    TEXT,
    added_at        INTEGER NOT NULL
);
-- Repositories a blob is known to be in (pulled from, pushed to): a push mounts from there.
CREATE TABLE IF NOT EXISTS blob_sources (
    blob_digest TEXT NOT NULL,
    registry    TEXT NOT NULL,
    repository  TEXT NOT NULL,
    seen_at     INTEGER NOT NULL,
    PRIMARY KEY (blob_digest, registry, repository)
);
-- Dockerfile build steps already done: the image a step made on a parent (see build_cache.rs).
CREATE TABLE IF NOT EXISTS build_cache (
    key             TEXT PRIMARY KEY,
    manifest_digest TEXT NOT NULL,
    added_at        INTEGER NOT NULL
);
";

/// One layer of a recorded image, bottom-most first in `ImageRecord::layers`.
#[derive(Clone, Debug, Serialize)]
pub struct LayerRecord {
    pub blob: Digest,
    pub diff_id: Digest,
    pub media_type: String,
    pub size: u64,
}

/// A named image as the index holds it.
#[derive(Clone, Debug, Serialize)]
pub struct ImageRecord {
    /// Canonical reference (`docker.io/library/busybox:latest`), or the bare manifest digest
    /// for untagged imports.
    pub name: String,
    pub manifest_digest: Digest,
    /// The index the manifest was chosen from, when pulled through one.
    pub index_digest: Option<Digest>,
    pub media_type: String,
    pub config_digest: Digest,
    pub platform: String,
    pub created: Option<String>,
    pub added_at: i64,
    pub layers: Vec<LayerRecord>,
}

impl ImageRecord {
    /// Bytes of the compressed layers (what the store holds for it).
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    pub manifests_removed: usize,
    pub blobs_removed: usize,
    pub layers_removed: usize,
    pub bytes_freed: u64,
}

pub struct Store {
    dir: PathBuf,
    db: Mutex<Connection>,
    pub config: StoreConfig,
}

impl Store {
    pub fn open(dir: &Path, config: StoreConfig) -> Result<Store> {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).at("cannot create", parent)?;
        }
        for sub in [
            "",
            "blobs",
            "blobs/sha256",
            "layers",
            "layers/sha256",
            "tmp",
            "locks",
        ] {
            private_dir(&dir.join(sub))?;
        }
        // Switching to WAL and creating tables answer SQLITE_BUSY at once (no busy wait) when
        // another process does the same: first openers take turns.
        let init_lock = dir.join("init.lock");
        let _init = FileLock::acquire(&init_lock, true).at("cannot lock", &init_lock)?;
        gc::remove_abandoned_tmp(dir)?;
        let db_path = dir.join("images.db");
        let db = Connection::open(&db_path)?;
        db.busy_timeout(Duration::from_secs(60))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.execute_batch(SCHEMA)?;
        Ok(Store {
            dir: dir.to_path_buf(),
            db: Mutex::new(db),
            config,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(d.hex())
    }

    pub fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.dir.join("layers/sha256").join(diff_id.hex())
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Holds off garbage collection while content is being added (shared) or runs it
    /// (exclusive).
    pub fn gc_lock(&self, exclusive: bool) -> Result<FileLock> {
        let p = self.dir.join("gc.lock");
        FileLock::acquire(&p, exclusive).at("cannot lock", p)
    }

    /// Serializes work on one piece of content (`blob-<hex>`, `layer-<hex>`) across processes.
    pub fn content_lock(&self, key: &str) -> Result<FileLock> {
        let p = self.dir.join("locks").join(format!("{key}.lock"));
        FileLock::acquire(&p, true).at("cannot lock", p)
    }

    /// Stores `bytes`, checking them against `expected` when given.
    pub fn put_blob(
        &self,
        bytes: &[u8],
        expected: Option<(&Digest, u64)>,
        what: &str,
    ) -> Result<Digest> {
        let d = Digest::of(bytes);
        if self.has_blob(&d) {
            if let Some((want, _)) = expected {
                check_digest(what, want, &d)?;
            }
            return Ok(d);
        }
        let mut w = self.blob_writer(u64::MAX, what)?;
        w.write(bytes)?;
        w.commit(expected.map(|(d, n)| (d, Some(n))), what)
    }

    /// Reads a small blob (manifest, config) into memory, refusing more than `max` bytes and
    /// re-checking its digest.
    pub fn read_blob(&self, d: &Digest, max: u64, what: &str) -> Result<Vec<u8>> {
        let p = self.blob_path(d);
        let f = fs::File::open(&p).at("cannot open blob", &p)?;
        let mut bytes = Vec::new();
        f.take(max + 1)
            .read_to_end(&mut bytes)
            .at("cannot read blob", &p)?;
        if bytes.len() as u64 > max {
            return Err(Error::TooLarge {
                what: what.to_string(),
                limit: max,
            });
        }
        check_digest(what, d, &Digest::of(&bytes))?;
        Ok(bytes)
    }

    /// Unpacks a layer blob into its shared per-layer directory unless it is there already.
    /// Returns the directory.
    pub fn ensure_layer(
        &self,
        diff_id: &Digest,
        blob: &Digest,
        compression: Compression,
        image: &ImageBudget,
    ) -> Result<PathBuf> {
        let open = || {
            let src = self.blob_path(blob);
            let f = fs::File::open(&src).at("cannot open layer blob", &src)?;
            Ok(BufReader::with_capacity(1 << 20, f))
        };
        self.unpack_layer(diff_id, blob, compression, image, open, || true)
    }

    /// Unpacks the (compressed) layer stream `open()` gives into the layer's directory unless
    /// it is there already (then the stream is never opened). The tree becomes visible only
    /// when its diff_id matched and `commit()` agrees: a pull unpacking while it downloads
    /// says there whether the compressed blob verified.
    pub fn unpack_layer<R: Read>(
        &self,
        diff_id: &Digest,
        blob: &Digest,
        compression: Compression,
        image: &ImageBudget,
        open: impl FnOnce() -> Result<R>,
        commit: impl FnOnce() -> bool,
    ) -> Result<PathBuf> {
        let dest = self.layer_path(diff_id);
        if dest.is_dir() {
            return Ok(dest);
        }
        let _lock = self.content_lock(&format!("layer-{}", diff_id.hex()))?;
        if dest.is_dir() {
            return Ok(dest);
        }
        let tmp = tempfile::Builder::new()
            .prefix("layer-")
            .tempdir_in(self.tmp_dir())
            .at("cannot create temporary directory in", self.tmp_dir())?;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))
            .at("cannot chmod", tmp.path())?;
        let stats = apply_layer(
            open()?,
            compression,
            tmp.path(),
            Whiteouts::Overlay,
            &self.config.unpack,
            image,
        )?;
        check_digest(
            &format!("uncompressed layer {blob}"),
            diff_id,
            &stats.diff_id,
        )?;
        if !commit() {
            return Err(Error::Task(format!(
                "download of layer {blob} failed; its unpacked tree was discarded"
            )));
        }
        fs::rename(tmp.path(), &dest).at("cannot move unpacked layer to", &dest)?;
        // Renamed away: nothing left for TempDir to clean up.
        let _ = tmp.keep();
        Ok(dest)
    }

    pub fn record_image(&self, image: &ImageRecord) -> Result<()> {
        let mut db = self.db()?;
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT OR REPLACE INTO manifests (digest, media_type, config_digest, platform, created)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                image.manifest_digest.to_string(),
                image.media_type,
                image.config_digest.to_string(),
                image.platform,
                image.created
            ],
        )?;
        tx.execute(
            "DELETE FROM manifest_layers WHERE manifest_digest = ?1",
            params![image.manifest_digest.to_string()],
        )?;
        for (i, l) in image.layers.iter().enumerate() {
            tx.execute(
                "INSERT INTO manifest_layers (manifest_digest, position, blob_digest, diff_id, media_type, size)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    image.manifest_digest.to_string(),
                    i as i64,
                    l.blob.to_string(),
                    l.diff_id.to_string(),
                    l.media_type,
                    l.size as i64
                ],
            )?;
        }
        tx.execute(
            "INSERT OR REPLACE INTO names (name, manifest_digest, index_digest, added_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![
                image.name,
                image.manifest_digest.to_string(),
                image.index_digest.as_ref().map(Digest::to_string),
                image.added_at
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The image a reference names: by name, or for a digest reference an image of the same
    /// repository with that manifest or index digest.
    pub fn find(&self, r: &Reference) -> Result<Option<ImageRecord>> {
        let db = self.db()?;
        let mut rec = query_names(&db, "WHERE n.name = ?1", &r.to_string())?;
        if rec.is_empty() {
            if let Some(d) = &r.digest {
                // The same content under another tag of the same repository.
                rec = query_names(
                    &db,
                    "WHERE n.manifest_digest = ?1 OR n.index_digest = ?1",
                    &d.to_string(),
                )?;
                rec.retain(|i| Reference::parse(&i.name).is_ok_and(|n| n.name() == r.name()));
            }
        }
        Ok(rec.into_iter().next())
    }

    /// Images whose config digest (image ID) starts with `prefix`.
    pub fn find_by_id(&self, prefix: &str) -> Result<Vec<ImageRecord>> {
        let db = self.db()?;
        query_names(
            &db,
            "WHERE m.config_digest LIKE ?1",
            &format!("sha256:{prefix}%"),
        )
    }

    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        let db = self.db()?;
        query_names(&db, "WHERE ?1 = ?1", "")
    }

    /// Keeps a manifest's content (layers, config) from garbage collection on behalf of
    /// `holder` (e.g. a container ID), even after its name is removed.
    pub fn pin(&self, holder: &str, manifest_digest: &Digest) -> Result<()> {
        let db = self.db()?;
        db.execute(
            "INSERT OR REPLACE INTO pins (holder, manifest_digest) VALUES (?1, ?2)",
            params![holder, manifest_digest.to_string()],
        )?;
        Ok(())
    }

    pub fn unpin(&self, holder: &str) -> Result<bool> {
        let db = self.db()?;
        Ok(db.execute("DELETE FROM pins WHERE holder = ?1", params![holder])? > 0)
    }

    pub fn remove_name(&self, name: &str) -> Result<bool> {
        let db = self.db()?;
        Ok(db.execute("DELETE FROM names WHERE name = ?1", params![name])? > 0)
    }

    fn db(&self) -> Result<std::sync::MutexGuard<'_, Connection>> {
        self.db
            .lock()
            .map_err(|_| Error::Task("image database lock poisoned".into()))
    }
}

pub(super) fn query_names(db: &Connection, filter: &str, arg: &str) -> Result<Vec<ImageRecord>> {
    let sql = format!(
        "SELECT n.name, n.manifest_digest, n.index_digest, n.added_at,
                m.media_type, m.config_digest, m.platform, m.created
         FROM names n JOIN manifests m ON m.digest = n.manifest_digest {filter}
         ORDER BY n.added_at DESC, n.name"
    );
    let mut st = db.prepare(&sql)?;
    let rows = st.query_map(params![arg], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, String>(6)?,
            r.get::<_, Option<String>>(7)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (name, md, idx, added_at, media_type, cfg, platform, created) = row?;
        let manifest_digest: Digest = md.parse()?;
        let mut lst = db.prepare(
            "SELECT blob_digest, diff_id, media_type, size FROM manifest_layers
             WHERE manifest_digest = ?1 ORDER BY position",
        )?;
        let layers = lst
            .query_map(params![md], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?
            .map(|l| -> Result<LayerRecord> {
                let (blob, diff_id, media_type, size) = l?;
                Ok(LayerRecord {
                    blob: blob.parse()?,
                    diff_id: diff_id.parse()?,
                    media_type,
                    size: size as u64,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        out.push(ImageRecord {
            name,
            manifest_digest,
            index_digest: idx.map(|d| d.parse()).transpose()?,
            media_type,
            config_digest: cfg.parse()?,
            platform,
            created,
            added_at,
            layers,
        });
    }
    Ok(out)
}

/// Layers keep their images' modes (setuid-root binaries, world-writable directories), which
/// are meant for inside a container: no other user may reach anything in the store. Existing
/// stores made before this are tightened on open.
const PRIVATE_DIR_MODE: u32 = 0o700;

fn private_dir(p: &Path) -> Result<()> {
    match fs::DirBuilder::new().mode(PRIVATE_DIR_MODE).create(p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).at("cannot create store directory", p),
    }
    let meta = fs::symlink_metadata(p).at("cannot inspect", p)?;
    if !meta.is_dir() {
        return Err(Error::Io {
            context: "store path is not a directory:",
            path: p.to_path_buf(),
            source: std::io::ErrorKind::AlreadyExists.into(),
        });
    }
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(p, fs::Permissions::from_mode(PRIVATE_DIR_MODE))
            .at("cannot restrict permissions of", p)?;
    }
    Ok(())
}

pub(crate) fn check_digest(what: &str, expected: &Digest, actual: &Digest) -> Result<()> {
    if expected != actual {
        return Err(Error::DigestMismatch {
            what: what.to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}
