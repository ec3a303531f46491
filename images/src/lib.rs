//! OCI images for skiff.
//!
//! Pulls images from OCI distribution registries into a content-addressed blob store shared by all
//! images, unpacks layers (with whiteouts) safely into read-only per-layer directories, and imports
//! and exports image archives.

mod archive;
pub mod auth;
pub mod digest;
pub mod error;
pub mod manifest;
pub mod platform;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod service;
pub mod store;
mod sys;
pub mod unpack;

pub use digest::Digest;
pub use error::{Error, Result};
pub use platform::Platform;
pub use pull::{PullOptions, PullReport};
pub use reference::Reference;
pub use service::{login, ImageService, PreparedImage};
pub use store::{GcReport, ImageRecord};
