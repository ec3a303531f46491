//! OCI images for skiff.
//!
//! Pulls images from OCI distribution registries into a content-addressed blob store shared by all
//! images, unpacks layers (with whiteouts) safely into read-only per-layer directories, and imports
//! and exports image archives.
