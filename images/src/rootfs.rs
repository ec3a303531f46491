//! `skiff image unpack`: an image's merged root filesystem (whiteouts applied) in a directory
//! of the user's choosing.
//!
//! The tree is built in a work directory beside the destination and renamed into place when
//! complete. The work directory is flocked while its unpack runs, so a later unpack into the
//! same parent removes the ones whose process was killed and keeps those still in use.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::manifest::Compression;
use crate::store::{check_digest, FileLock, ImageRecord, Store};
use crate::text::escape_untrusted;
use crate::unpack::{apply_layer, ImageBudget, Whiteouts};

/// Work directories in use; created under CLAIM_PREFIX and renamed to this once locked, so a
/// directory with this name is either locked by its unpack or abandoned.
const WORK_PREFIX: &str = ".skiff-unpack-";
const CLAIM_PREFIX: &str = ".skiff-claim-";

pub(crate) fn merge_layers(store: &Store, rec: &ImageRecord, dest: &Path) -> Result<()> {
    let _gc = store.gc_lock(false)?;
    match fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => {
            if fs::read_dir(dest).at("cannot list", dest)?.next().is_some() {
                return Err(Error::Io {
                    context: "refusing to unpack into non-empty directory",
                    path: dest.to_path_buf(),
                    source: std::io::ErrorKind::AlreadyExists.into(),
                });
            }
        }
        Ok(_) => {
            return Err(Error::Io {
                context: "refusing to overwrite",
                path: dest.to_path_buf(),
                source: std::io::ErrorKind::AlreadyExists.into(),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).at("cannot inspect", dest),
    }
    let parent = crate::sys::parent_dir(dest);
    remove_abandoned_work_dirs(&parent);
    let mut work = WorkDir::create(&parent)?;
    let budget = ImageBudget::new(&store.config.unpack.limits);
    for l in &rec.layers {
        let p = store.blob_path(&l.blob);
        let f = fs::File::open(&p).at("cannot open layer blob", &p)?;
        let stats = apply_layer(
            std::io::BufReader::with_capacity(1 << 20, f),
            Compression::of_media_type(&l.media_type)?,
            &work.path,
            Whiteouts::Apply,
            &store.config.unpack,
            &budget,
        )?;
        check_digest(
            &format!("uncompressed layer {}", l.blob),
            &l.diff_id,
            &stats.diff_id,
        )?;
    }
    if dest.is_dir() {
        fs::remove_dir(dest).at("cannot replace empty directory", dest)?;
    }
    fs::rename(&work.path, dest).at("cannot move unpacked root filesystem to", dest)?;
    work.done = true;
    Ok(())
}

/// A work directory beside the destination, locked while this process fills it; removed
/// unless the unpack completed (and renamed it away).
struct WorkDir {
    path: PathBuf,
    _owner: FileLock,
    done: bool,
}

impl WorkDir {
    fn create(parent: &Path) -> Result<WorkDir> {
        let claimed = tempfile::Builder::new()
            .prefix(CLAIM_PREFIX)
            .tempdir_in(parent)
            .at("cannot create temporary directory in", parent)?;
        let owner = FileLock::try_exclusive_dir(claimed.path())
            .at("cannot lock", claimed.path())?
            .ok_or_else(|| Error::Task("a fresh work directory was locked by another".into()))?;
        let suffix = claimed
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(CLAIM_PREFIX))
            .unwrap_or_default()
            .to_string();
        let path = parent.join(format!("{WORK_PREFIX}{suffix}"));
        fs::rename(claimed.path(), &path).at("cannot rename work directory to", &path)?;
        // Renamed away: nothing left for TempDir to remove.
        let _ = claimed.keep();
        let work = WorkDir {
            path,
            _owner: owner,
            done: false,
        };
        fs::set_permissions(&work.path, fs::Permissions::from_mode(0o755))
            .at("cannot chmod", &work.path)?;
        Ok(work)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Best effort: work directories in `parent` whose unpack died (no lock on them).
fn remove_abandoned_work_dirs(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_str().is_some_and(|n| n.starts_with(WORK_PREFIX)) {
            continue;
        }
        let p = e.path();
        // Never through a symlink: O_NOFOLLOW in the lock's open refuses one.
        if let Ok(Some(_abandoned)) = FileLock::try_exclusive_dir(&p) {
            match fs::remove_dir_all(&p) {
                Ok(()) => {
                    tracing::debug!(path = %escape_untrusted(p.display()), "removed an abandoned unpack")
                }
                Err(err) => {
                    tracing::debug!(path = %escape_untrusted(p.display()), error = %err, "cannot remove an abandoned unpack")
                }
            }
        }
    }
}
