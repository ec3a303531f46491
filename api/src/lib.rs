//! skiff's front ends: `skiffd`, the daemon serving the JSON control API, and the `skiff` CLI.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod run;
