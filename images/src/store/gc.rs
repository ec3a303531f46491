//! Garbage collection: content no name or pin refers to, and what interrupted work left in
//! tmp/.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::TransactionBehavior;

use super::{FileLock, GcReport, Store};
use crate::error::{IoContext, Result};

impl Store {
    /// Removes manifests no name refers to, then every blob and layer directory no manifest
    /// refers to, and leftovers of interrupted work in tmp/.
    pub fn gc(&self) -> Result<GcReport> {
        let _lock = self.gc_lock(true)?;
        let mut report = GcReport::default();
        let mut db = self.db()?;
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        const USED: &str =
            "(SELECT manifest_digest FROM names UNION SELECT manifest_digest FROM pins)";
        tx.execute(
            &format!("DELETE FROM manifest_layers WHERE manifest_digest NOT IN {USED}"),
            [],
        )?;
        report.manifests_removed = tx.execute(
            &format!("DELETE FROM manifests WHERE digest NOT IN {USED}"),
            [],
        )?;
        tx.execute(
            "DELETE FROM blob_sources WHERE blob_digest NOT IN
             (SELECT config_digest FROM manifests UNION SELECT blob_digest FROM manifest_layers)",
            [],
        )?;
        tx.execute(
            "DELETE FROM build_cache WHERE manifest_digest NOT IN (SELECT digest FROM manifests)",
            [],
        )?;
        let used = referenced(&tx)?;
        tx.commit()?;
        drop(db);
        self.remove_unreferenced(&used, |_| true, &mut report)?;
        // No writer holds the shared lock now: everything in tmp/ is abandoned, and no
        // content lock is held or waited for (they are only taken under the shared lock).
        report.bytes_freed += empty_dir(&self.tmp_dir())?;
        empty_dir(&self.dir.join("locks"))?;
        Ok(report)
    }

    /// After a failed pull or load: removes the blobs and layer directories made since
    /// `since` that no manifest refers to. Only when no writer is at work (what another pull
    /// made is not ours to judge): else they stay for the next prune.
    pub fn discard_orphans_since(&self, since: SystemTime) -> Result<GcReport> {
        let mut report = GcReport::default();
        let lock = self.dir.join("gc.lock");
        let Some(_idle) = FileLock::try_exclusive(&lock).at("cannot lock", &lock)? else {
            tracing::debug!("store busy: leaving a failed operation's content to prune");
            return Ok(report);
        };
        let used = {
            let mut db = self.db()?;
            let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
            referenced(&tx)?
        };
        // ctime: set when the content was written (unpacking sets layer mtimes from the tar);
        // the margin covers file systems with coarse timestamps.
        let since = since - Duration::from_secs(2);
        let recent = |m: &fs::Metadata| {
            UNIX_EPOCH + Duration::new(m.ctime().max(0) as u64, m.ctime_nsec() as u32) >= since
        };
        self.remove_unreferenced(&used, recent, &mut report)?;
        Ok(report)
    }

    /// Removes every blob and layer directory that `used` lacks and `pick` selects.
    fn remove_unreferenced(
        &self,
        used: &Referenced,
        pick: impl Fn(&fs::Metadata) -> bool,
        report: &mut GcReport,
    ) -> Result<()> {
        for (sub, keep, is_layer) in [
            ("blobs/sha256", &used.blobs, false),
            ("layers/sha256", &used.layers, true),
        ] {
            let dir = self.dir.join(sub);
            for e in fs::read_dir(&dir).at("cannot list", &dir)? {
                let e = e.at("cannot list", &dir)?;
                let name = e.file_name().to_string_lossy().into_owned();
                let p = e.path();
                if keep.contains(&format!("sha256:{name}"))
                    || !fs::symlink_metadata(&p).is_ok_and(|m| pick(&m))
                {
                    continue;
                }
                report.bytes_freed += disk_usage(&p);
                if is_layer {
                    fs::remove_dir_all(&p).at("cannot remove", &p)?;
                    report.layers_removed += 1;
                } else {
                    fs::remove_file(&p).at("cannot remove", &p)?;
                    report.blobs_removed += 1;
                }
            }
        }
        Ok(())
    }
}

/// Digests (`sha256:…`) of the content the index refers to.
struct Referenced {
    blobs: HashSet<String>,
    layers: HashSet<String>,
}

fn referenced(tx: &rusqlite::Transaction<'_>) -> Result<Referenced> {
    Ok(Referenced {
        blobs: column_set(
            tx,
            "SELECT digest FROM manifests UNION SELECT config_digest FROM manifests
             UNION SELECT blob_digest FROM manifest_layers
             UNION SELECT index_digest FROM names WHERE index_digest IS NOT NULL",
        )?,
        layers: column_set(tx, "SELECT diff_id FROM manifest_layers")?,
    })
}

fn column_set(tx: &rusqlite::Transaction<'_>, sql: &str) -> Result<HashSet<String>> {
    let mut st = tx.prepare(sql)?;
    let rows = st.query_map([], |r| r.get::<_, String>(0))?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

/// What killed pulls and loads left in tmp/, removed when no writer is at work (a writer holds
/// the shared gc lock for as long as it has anything there).
pub(super) fn remove_abandoned_tmp(dir: &Path) -> Result<()> {
    let lock = dir.join("gc.lock");
    if let Some(_idle) = FileLock::try_exclusive(&lock).at("cannot lock", &lock)? {
        let freed = empty_dir(&dir.join("tmp"))?;
        if freed > 0 {
            tracing::debug!(bytes = freed, "removed abandoned temporary data");
        }
    }
    Ok(())
}

/// Removes everything in `dir` (never following symlinks); returns the bytes it held.
fn empty_dir(dir: &Path) -> Result<u64> {
    let mut freed = 0;
    for e in fs::read_dir(dir).at("cannot list", dir)? {
        let p = e.at("cannot list", dir)?.path();
        freed += disk_usage(&p);
        let meta = fs::symlink_metadata(&p).at("cannot inspect", &p)?;
        if meta.is_dir() {
            fs::remove_dir_all(&p).at("cannot remove", &p)?;
        } else {
            fs::remove_file(&p).at("cannot remove", &p)?;
        }
    }
    Ok(freed)
}

/// Bytes of the files under `p` (itself if a file); symlinks are not followed, errors count 0.
pub(crate) fn disk_usage(p: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(p) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(p)
        .map(|rd| rd.flatten().map(|e| disk_usage(&e.path())).sum())
        .unwrap_or(0)
}
