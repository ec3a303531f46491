//! Where the store's blobs are known to be on registries: the repositories they were pulled
//! from or pushed to. A push to another repository of the same registry mounts them from
//! there instead of uploading them again.

use rusqlite::params;

use super::Store;
use crate::digest::Digest;
use crate::error::Result;

impl Store {
    /// Notes that `blobs` are in `repository` on `registry` (as `Reference` spells both).
    pub fn record_blob_sources(
        &self,
        registry: &str,
        repository: &str,
        blobs: &[Digest],
    ) -> Result<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut db = self.db()?;
        let tx = db.transaction()?;
        for b in blobs {
            tx.execute(
                "INSERT OR REPLACE INTO blob_sources (blob_digest, registry, repository, seen_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![b.to_string(), registry, repository, now],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The repositories of `registry` other than `except` known to hold `blob`, most recently
    /// seen first.
    pub fn blob_sources(&self, blob: &Digest, registry: &str, except: &str) -> Result<Vec<String>> {
        let db = self.db()?;
        let mut st = db.prepare(
            "SELECT repository FROM blob_sources
             WHERE blob_digest = ?1 AND registry = ?2 AND repository != ?3
             ORDER BY seen_at DESC, repository",
        )?;
        let rows = st.query_map(params![blob.to_string(), registry, except], |r| r.get(0))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::StoreConfig;
    use crate::digest::Digest;
    use crate::store::Store;

    #[test]
    fn sources_by_registry_newest_first_without_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s"), StoreConfig::default()).unwrap();
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        store
            .record_blob_sources("r:5000", "one", &[a.clone(), b.clone()])
            .unwrap();
        store
            .record_blob_sources("other", "two", std::slice::from_ref(&a))
            .unwrap();
        store
            .record_blob_sources("r:5000", "three", std::slice::from_ref(&a))
            .unwrap();
        let mut got = store.blob_sources(&a, "r:5000", "x").unwrap();
        got.sort();
        assert_eq!(got, ["one", "three"]);
        assert_eq!(store.blob_sources(&a, "r:5000", "one").unwrap(), ["three"]);
        assert!(store.blob_sources(&b, "other", "x").unwrap().is_empty());
        // gc forgets the sources of blobs no image holds.
        store.gc().unwrap();
        assert!(store.blob_sources(&a, "r:5000", "x").unwrap().is_empty());
    }
}
