//! OCI images for skiff.
//!
//! Pulls images from OCI distribution registries into a content-addressed blob store shared by all
//! images, unpacks layers (with whiteouts) safely into read-only per-layer directories, and imports
//! and exports image archives.
//!
//! The run path needs one call:
//!
//! ```no_run
//! # async fn demo() -> skiff_images::Result<()> {
//! use skiff_images::{ImageService, PullOptions, StoreConfig};
//! // Caps and timeouts: defaults here; a binary reads them with `StoreConfig::from_env`.
//! let dir = std::path::Path::new("/var/lib/skiff/images");
//! let images = ImageService::open_with(dir, StoreConfig::default())?;
//! let image = images.ensure("busybox:1.36", &PullOptions::default()).await?;
//! // image.layers: read-only layer directories, top-most first (overlayfs lowerdir order),
//! // whiteouts as overlayfs expects them; image.config: Entrypoint, Cmd, Env, WorkingDir, User.
//! images.pin("container-id", &image)?; // rmi/prune keep its layers until images.unpin(..)
//! # Ok(()) }
//! ```
//!
//! Module map: `reference` (Docker's reference grammar), `registry` (distribution API client,
//! token/basic auth; `registry::upload` its upload half), `pull` (verified parallel downloads),
//! `push` (mounts, single-request and resumable chunked uploads), `history` (`docker
//! history`), `store` (content store and SQLite index, garbage collection), `unpack` (safe tar
//! application), `archive` (load/save), `commit` (a container's upper directory as a new image),
//! `service` (the API above).

mod archive;
pub mod auth;
pub mod commit;
pub mod config;
pub mod digest;
pub mod error;
pub mod history;
pub mod manifest;
pub mod platform;
pub mod pull;
pub mod push;
pub mod reference;
pub mod registry;
mod rootfs;
pub mod service;
pub mod store;
mod sys;
pub mod text;
pub mod unpack;
mod user_files;

pub use commit::{expose, Change, CommitOptions};
pub use config::{RegistryTimeouts, StoreConfig};
pub use digest::Digest;
pub use error::{Error, Result};
pub use manifest::HealthConfig;
pub use platform::Platform;
pub use pull::{PullOptions, PullReport};
pub use push::{
    IndexOptions, IndexReport, PushEvent, PushEventKind, PushOptions, PushProgress, PushReport,
};
pub use reference::Reference;
pub use service::{login, ImageService, PreparedImage};
pub use store::{GcReport, ImageRecord};
