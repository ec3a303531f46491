//! The container engine: containers with persistent state, each run by its own `skiff-vmm`
//! which holds the container's session (log, exit report, attach socket). The engine has no
//! terminal, signals or environment of its own; skiffd's API drives it (`ContainerBackend`).
//!
//! - `store`: SQLite state (containers, names, events); `record`: a container and its views.
//! - `vmm_process`: a container's files and VMM process (spawn, re-adopt, wait).
//! - `lifecycle`: create, start, the watcher of each running VM, stop, restart policies, remove.
//! - `backend`: the API's calls; `images`: its image calls; `push`: push and history;
//!   `commit`: a container as an image; `build`: `docker build` (the classic builder);
//!   `stats`: a VM's CPU and memory;
//!   `streams`: sessions as API streams; `logs`: the json-file log as one.
//!
//! A running container outlives the daemon: its VMM is not tied to the daemon's process, writes
//! the log and the exit report itself, and `Engine::open` finds it again (or its exit report).

mod backend;
mod build;
mod commit;
mod create;
pub(crate) mod detach_keys;
mod disk_usage;
mod exec;
pub mod health;
mod images;
mod lifecycle;
mod logs;
pub mod network;
mod networks;
mod push;
pub mod record;
mod stats;
pub mod store;
mod streams;
mod top;
pub mod vmm_process;
pub mod volumes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use skiff_images::ImageService;
use tokio::sync::{broadcast, watch};

use crate::config::Config;
use crate::daemon::model::Event;
use crate::daemon::BackendError;
use record::ContainerRecord;
use store::{Lookup, Store};

type Result<T> = std::result::Result<T, BackendError>;

/// What waiters watch, per container.
#[derive(Debug, Clone, Copy, Default)]
pub struct Phase {
    pub starts: u64,
    pub exits: u64,
    pub exit_code: i64,
    pub running: bool,
    pub removed: bool,
}

#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    store: Store,
    images: ImageService,
    networks: network::Networks,
    phases: Mutex<HashMap<String, watch::Sender<Phase>>>,
    /// Attach clients waiting for a container to start (`docker run` attaches before start).
    waiting_attach: Mutex<HashMap<String, usize>>,
    /// Resizes for the exec sessions this daemon carries.
    exec_controls: Mutex<HashMap<String, tokio::sync::mpsc::Sender<crate::run::session::Control>>>,
    events: broadcast::Sender<Event>,
    /// One state change at a time per container (start, stop, remove, the watcher's end).
    ops: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Engine {
    /// Opens the state under `config.root` and takes over: running VMs are watched again, ended
    /// ones get their exit report recorded, restart policies are applied.
    pub async fn open(config: Config) -> anyhow::Result<Engine> {
        use anyhow::Context;
        std::fs::create_dir_all(&config.root)
            .with_context(|| format!("creating {}", config.root.display()))?;
        let store = Store::open(&config.root.join("skiffd.db"))?;
        let images = config.images()?;
        let (events, _) = broadcast::channel(256);
        let engine = Engine {
            inner: Arc::new(Inner {
                networks: network::Networks::new(config.network.clone()),
                config,
                store,
                images,
                phases: Mutex::default(),
                waiting_attach: Mutex::default(),
                exec_controls: Mutex::default(),
                events,
                ops: Mutex::default(),
            }),
        };
        exec::recover(&engine.inner)?;
        lifecycle::recover(&engine.inner).await?;
        Ok(engine)
    }
}

impl Inner {
    /// The full ID behind what a user typed (ID, unique prefix, name).
    fn resolve(&self, key: &str) -> Result<String> {
        match self.store.lookup(key).map_err(internal)? {
            Lookup::Found(id) => Ok(id),
            Lookup::NotFound => Err(BackendError::NoSuchContainer(key.to_string())),
            Lookup::Ambiguous => Err(BackendError::InvalidArgument(format!(
                "multiple IDs found with provided prefix: {key}"
            ))),
        }
    }

    fn record(&self, id: &str) -> Result<ContainerRecord> {
        self.store
            .get(id)
            .map_err(internal)?
            .ok_or_else(|| BackendError::NoSuchContainer(id.to_string()))
    }

    fn save(&self, record: &ContainerRecord) -> Result<()> {
        self.store.update(record).map_err(internal)
    }

    fn phase(&self, id: &str) -> watch::Sender<Phase> {
        let mut phases = self.phases.lock().unwrap_or_else(|p| p.into_inner());
        phases
            .entry(id.to_string())
            .or_insert_with(|| watch::Sender::new(Phase::default()))
            .clone()
    }

    fn op_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        ops.entry(id.to_string()).or_default().clone()
    }

    fn paths(&self, id: &str) -> vmm_process::ContainerPaths {
        vmm_process::ContainerPaths::new(&self.config.root, id)
    }

    /// Records and broadcasts a container event.
    fn event(&self, action: &str, record: &ContainerRecord, extra: &[(&str, String)]) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut attributes: std::collections::BTreeMap<String, String> =
            record.request.labels.clone();
        attributes.insert("name".into(), record.name.clone());
        attributes.insert("image".into(), record.request.image.clone());
        for (k, v) in extra {
            attributes.insert((*k).into(), v.clone());
        }
        let event = Event {
            kind: "container".into(),
            action: action.into(),
            actor: crate::daemon::model::EventActor {
                id: record.id.clone(),
                attributes,
            },
            scope: "local".into(),
            time: now.as_secs() as i64,
            time_nano: now.as_nanos() as i64,
        };
        if let Ok(json) = serde_json::to_string(&event) {
            if let Err(e) = self.store.add_event(event.time_nano, &json) {
                tracing::warn!("recording an event: {e}");
            }
        }
        let _ = self.events.send(event);
    }
}

fn internal(e: impl std::fmt::Display) -> BackendError {
    BackendError::Internal(e.to_string())
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
