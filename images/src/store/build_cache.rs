//! The build cache of Dockerfile builds: a step's key (its parent image, its history text and
//! what it copies) → the image it made. An entry whose image is gone (no name keeps its
//! manifest) is not answered, and garbage collection deletes it.

use rusqlite::params;

use super::{query_names, ImageRecord, Store};
use crate::digest::Digest;
use crate::error::Result;

impl Store {
    /// The image a step with this key made before, if it is still in the store.
    pub fn build_cache_get(&self, key: &str) -> Result<Option<ImageRecord>> {
        let db = self.db()?;
        let manifest: Option<String> = db
            .query_row(
                "SELECT manifest_digest FROM build_cache WHERE key = ?1",
                params![key],
                |row| row.get(0),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })?;
        let Some(manifest) = manifest else {
            return Ok(None);
        };
        let found = query_names(&db, "WHERE n.manifest_digest = ?1", &manifest)?;
        Ok(found.into_iter().next())
    }

    pub fn build_cache_put(&self, key: &str, manifest: &Digest) -> Result<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.db()?.execute(
            "INSERT OR REPLACE INTO build_cache (key, manifest_digest, added_at)
             VALUES (?1, ?2, ?3)",
            params![key, manifest.to_string(), now],
        )?;
        Ok(())
    }

    /// Manifests that are build steps' images (`docker images` leaves them out unless `-a`,
    /// as Docker leaves out intermediate images).
    pub fn build_cache_manifests(&self) -> Result<Vec<String>> {
        let db = self.db()?;
        let mut stmt = db.prepare("SELECT DISTINCT manifest_digest FROM build_cache")?;
        let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
        Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::StoreConfig;
    use crate::digest::Digest;
    use crate::store::Store;

    #[test]
    fn entries_without_an_image_are_not_answered_and_gc_drops_them() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("s"), StoreConfig::default()).unwrap();
        let gone = Digest::of(b"no such manifest");
        store.build_cache_put("k", &gone).unwrap();
        assert!(store.build_cache_get("k").unwrap().is_none());
        assert!(store.build_cache_get("other").unwrap().is_none());
        assert_eq!(store.build_cache_manifests().unwrap().len(), 1);
        store.gc().unwrap();
        assert!(store.build_cache_manifests().unwrap().is_empty());
    }
}
