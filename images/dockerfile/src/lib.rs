//! The Dockerfile frontend (work in progress).

pub mod pattern;
pub mod shell;
