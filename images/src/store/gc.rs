//! Garbage collection: content no name or pin refers to, and what interrupted work left in
//! tmp/.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use rusqlite::TransactionBehavior;

use super::{FileLock, GcReport, Store};
use crate::error::{IoContext, Result};

impl Store {
    /// Removes manifests no name refers to, then every blob and layer directory no manifest
    /// refers to, and leftovers of interrupted work in tmp/.
    pub fn gc(&self) -> Result<GcReport> {
        let _lock = self.gc_lock(true)?;
        let mut report = GcReport::default();
        let (blobs, layers) = {
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
            let blobs = column_set(
                &tx,
                "SELECT digest FROM manifests UNION SELECT config_digest FROM manifests
                 UNION SELECT blob_digest FROM manifest_layers
                 UNION SELECT index_digest FROM names WHERE index_digest IS NOT NULL",
            )?;
            let layers = column_set(&tx, "SELECT diff_id FROM manifest_layers")?;
            tx.commit()?;
            (blobs, layers)
        };
        for (sub, keep, is_layer) in [
            ("blobs/sha256", &blobs, false),
            ("layers/sha256", &layers, true),
        ] {
            let dir = self.dir.join(sub);
            for e in fs::read_dir(&dir).at("cannot list", &dir)? {
                let e = e.at("cannot list", &dir)?;
                let name = e.file_name().to_string_lossy().into_owned();
                if keep.contains(&format!("sha256:{name}")) {
                    continue;
                }
                let p = e.path();
                if is_layer {
                    report.bytes_freed += disk_usage(&p);
                    fs::remove_dir_all(&p).at("cannot remove", &p)?;
                    report.layers_removed += 1;
                } else {
                    report.bytes_freed += e.metadata().map(|m| m.len()).unwrap_or(0);
                    fs::remove_file(&p).at("cannot remove", &p)?;
                    report.blobs_removed += 1;
                }
            }
        }
        // No writer holds the shared lock now: everything in tmp/ is abandoned, and no
        // content lock is held or waited for (they are only taken under the shared lock).
        report.bytes_freed += empty_dir(&self.tmp_dir())?;
        empty_dir(&self.dir.join("locks"))?;
        Ok(report)
    }
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
