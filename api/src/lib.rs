//! skiff's front ends: `skiffd`, the daemon serving the JSON control API, the `skiff` CLI, and the
//! client of that API the CLI uses.

pub mod cgroup;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod jail;
pub mod run;
