//! OCI images for skiff.
//!
//! Pulls images from OCI distribution registries into a content-addressed blob store shared by all
//! images, unpacks layers (with whiteouts) safely into read-only per-layer directories, and imports
//! and exports image archives.

pub mod digest;
pub mod error;
pub mod manifest;
pub mod platform;
pub mod reference;
mod sys;
pub mod unpack;

pub use digest::Digest;
pub use error::{Error, Result};
pub use platform::Platform;
pub use reference::Reference;
