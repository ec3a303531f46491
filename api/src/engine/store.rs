//! The engine's persistent state: SQLite (WAL) under the state root. Containers are rows keyed by
//! ID with a unique name and their record as JSON; exec sessions are rows of their container;
//! volumes and user-defined networks are rows by name;
//! events are appended with a sequence number.
//!
//! One connection behind a mutex: the daemon's writes are few and small, and SQLite serialises
//! writers anyway. Every write is its own transaction, so a `kill -9` leaves the last committed
//! state.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use super::exec::ExecRecord;
use super::network::NetworkRecord;
use super::record::ContainerRecord;
use super::volumes::VolumeRecord;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state database: a container record does not parse: {0}")]
    Record(#[from] serde_json::Error),
    #[error("the name \"/{0}\" is already in use")]
    NameInUse(String),
}

type Result<T> = std::result::Result<T, StoreError>;

/// What a user's `id` argument resolved to.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(String),
    NotFound,
    /// A prefix shared by several IDs.
    Ambiguous,
}

pub struct Store {
    db: Mutex<Connection>,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        let db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS containers (
                 id TEXT PRIMARY KEY,
                 name TEXT NOT NULL UNIQUE,
                 record TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS execs (
                 id TEXT PRIMARY KEY,
                 container TEXT NOT NULL,
                 running INTEGER NOT NULL,
                 record TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS volumes (
                 name TEXT PRIMARY KEY,
                 record TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS networks (
                 name TEXT PRIMARY KEY,
                 record TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS events (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 time_nano INTEGER NOT NULL,
                 event TEXT NOT NULL
             );",
        )?;
        Ok(Store { db: Mutex::new(db) })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a new container; fails with `NameInUse` when its name is taken.
    pub fn insert(&self, record: &ContainerRecord) -> Result<()> {
        self.write(
            "INSERT INTO containers (id, name, record) VALUES (?1, ?2, ?3)",
            record,
        )
    }

    /// Writes a changed record (its name included; `NameInUse` when the new name is taken).
    pub fn update(&self, record: &ContainerRecord) -> Result<()> {
        self.write(
            "UPDATE containers SET name = ?2, record = ?3 WHERE id = ?1",
            record,
        )
    }

    fn write(&self, sql: &str, record: &ContainerRecord) -> Result<()> {
        let json = serde_json::to_string(record)?;
        match self
            .db()
            .execute(sql, params![record.id, record.name, json])
        {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::NameInUse(record.name.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a container and its exec sessions.
    pub fn delete(&self, id: &str) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute("DELETE FROM execs WHERE container = ?1", params![id])?;
        tx.execute("DELETE FROM containers WHERE id = ?1", params![id])?;
        tx.commit()?;
        Ok(())
    }

    /// Adds or replaces an exec session.
    pub fn put_exec(&self, id: &str, record: &ExecRecord) -> Result<()> {
        let json = serde_json::to_string(record)?;
        self.db().execute(
            "INSERT OR REPLACE INTO execs (id, container, running, record) VALUES (?1, ?2, ?3, ?4)",
            params![id, record.container, record.running, json],
        )?;
        Ok(())
    }

    pub fn exec(&self, id: &str) -> Result<Option<ExecRecord>> {
        let json: Option<String> = self
            .db()
            .query_row(
                "SELECT record FROM execs WHERE id = ?1",
                params![id],
                |row| row.get(0),
            )
            .optional()?;
        Ok(json.map(|j| serde_json::from_str(&j)).transpose()?)
    }

    /// The exec sessions recorded as running, with their IDs.
    pub fn running_execs(&self) -> Result<Vec<(String, ExecRecord)>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT id, record FROM execs WHERE running != 0")?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, json) = row?;
            out.push((id, serde_json::from_str(&json)?));
        }
        Ok(out)
    }

    pub fn get(&self, id: &str) -> Result<Option<ContainerRecord>> {
        let json: Option<String> = self
            .db()
            .query_row(
                "SELECT record FROM containers WHERE id = ?1",
                params![id],
                |row| row.get(0),
            )
            .optional()?;
        Ok(json.map(|j| serde_json::from_str(&j)).transpose()?)
    }

    pub fn all(&self) -> Result<Vec<ContainerRecord>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT record FROM containers")?;
        let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
        let mut out = Vec::new();
        for json in rows {
            out.push(serde_json::from_str(&json?)?);
        }
        Ok(out)
    }

    /// Docker's order: a full ID, then an exact name (with or without its `/`), then a unique
    /// ID prefix.
    pub fn lookup(&self, key: &str) -> Result<Lookup> {
        let db = self.db();
        let name = key.strip_prefix('/').unwrap_or(key);
        let exact: Option<String> = db
            .query_row(
                "SELECT id FROM containers WHERE id = ?1 OR name = ?2 ORDER BY id = ?1 DESC",
                params![key, name],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(id) = exact {
            return Ok(Lookup::Found(id));
        }
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Lookup::NotFound);
        }
        let mut stmt = db.prepare("SELECT id FROM containers WHERE substr(id, 1, ?2) = ?1")?;
        let ids: Vec<String> = stmt
            .query_map(params![key, key.len() as i64], |row| row.get(0))?
            .collect::<std::result::Result<_, _>>()?;
        Ok(match ids.len() {
            0 => Lookup::NotFound,
            1 => Lookup::Found(ids.into_iter().next().unwrap_or_default()),
            _ => Lookup::Ambiguous,
        })
    }

    /// Adds a volume; false when one of that name exists already.
    pub fn insert_volume(&self, record: &VolumeRecord) -> Result<bool> {
        let json = serde_json::to_string(record)?;
        let added = self.db().execute(
            "INSERT OR IGNORE INTO volumes (name, record) VALUES (?1, ?2)",
            params![record.name, json],
        )?;
        Ok(added == 1)
    }

    pub fn volume(&self, name: &str) -> Result<Option<VolumeRecord>> {
        let json: Option<String> = self
            .db()
            .query_row(
                "SELECT record FROM volumes WHERE name = ?1",
                params![name],
                |row| row.get(0),
            )
            .optional()?;
        Ok(json.map(|j| serde_json::from_str(&j)).transpose()?)
    }

    pub fn volumes(&self) -> Result<Vec<VolumeRecord>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT record FROM volumes ORDER BY name")?;
        let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
        let mut out = Vec::new();
        for json in rows {
            out.push(serde_json::from_str(&json?)?);
        }
        Ok(out)
    }

    pub fn delete_volume(&self, name: &str) -> Result<()> {
        self.db()
            .execute("DELETE FROM volumes WHERE name = ?1", params![name])?;
        Ok(())
    }

    /// Adds a user-defined network; false when one of that name exists already.
    pub fn insert_network(&self, record: &NetworkRecord) -> Result<bool> {
        let json = serde_json::to_string(record)?;
        let added = self.db().execute(
            "INSERT OR IGNORE INTO networks (name, record) VALUES (?1, ?2)",
            params![record.name, json],
        )?;
        Ok(added == 1)
    }

    pub fn networks(&self) -> Result<Vec<NetworkRecord>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT record FROM networks ORDER BY name")?;
        let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
        let mut out = Vec::new();
        for json in rows {
            out.push(serde_json::from_str(&json?)?);
        }
        Ok(out)
    }

    pub fn delete_network(&self, name: &str) -> Result<()> {
        self.db()
            .execute("DELETE FROM networks WHERE name = ?1", params![name])?;
        Ok(())
    }

    pub fn add_event(&self, time_nano: i64, event: &str) -> Result<()> {
        self.db().execute(
            "INSERT INTO events (time_nano, event) VALUES (?1, ?2)",
            params![time_nano, event],
        )?;
        Ok(())
    }

    /// Events at or after `since_nano`, oldest first (JSON as stored).
    pub fn events_since(&self, since_nano: i64) -> Result<Vec<String>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT event FROM events WHERE time_nano >= ?1 ORDER BY seq")?;
        let rows = stmt.query_map(params![since_nano], |row| row.get::<_, String>(0))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, name: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.to_string(),
            name: name.to_string(),
            ..ContainerRecord::default()
        }
    }

    #[test]
    fn names_are_unique_and_lookups_follow_docker() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        store.insert(&record("abc123", "web")).unwrap();
        store.insert(&record("abd456", "db")).unwrap();
        assert!(matches!(
            store.insert(&record("fff", "web")),
            Err(StoreError::NameInUse(n)) if n == "web"
        ));
        assert_eq!(
            store.lookup("abc123").unwrap(),
            Lookup::Found("abc123".into())
        );
        assert_eq!(store.lookup("/db").unwrap(), Lookup::Found("abd456".into()));
        assert_eq!(store.lookup("abc").unwrap(), Lookup::Found("abc123".into()));
        assert_eq!(store.lookup("ab").unwrap(), Lookup::Ambiguous);
        assert_eq!(store.lookup("zz").unwrap(), Lookup::NotFound);
        assert_eq!(store.lookup("").unwrap(), Lookup::NotFound);
        let mut renamed = record("abc123", "db");
        assert!(matches!(
            store.update(&renamed),
            Err(StoreError::NameInUse(_))
        ));
        renamed.name = "web2".into();
        store.update(&renamed).unwrap();
        assert_eq!(store.get("abc123").unwrap().unwrap().name, "web2");
        let exec = ExecRecord {
            container: "abc123".into(),
            config: Default::default(),
            running: true,
            exit_code: None,
        };
        store.put_exec("e1", &exec).unwrap();
        assert_eq!(store.running_execs().unwrap().len(), 1);
        store
            .put_exec(
                "e1",
                &ExecRecord {
                    running: false,
                    exit_code: Some(3),
                    ..exec
                },
            )
            .unwrap();
        assert!(store.running_execs().unwrap().is_empty());
        assert_eq!(store.exec("e1").unwrap().unwrap().exit_code, Some(3));
        store.delete("abc123").unwrap();
        assert_eq!(store.get("abc123").unwrap(), None);
        assert!(store.exec("e1").unwrap().is_none());
        assert_eq!(store.all().unwrap().len(), 1);
        // The state survives a reopen.
        drop(store);
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        assert_eq!(store.lookup("db").unwrap(), Lookup::Found("abd456".into()));
    }
}
