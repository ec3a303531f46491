//! The `skiff` command line: one module per group of subcommands.

pub mod containers;
pub mod images;
pub mod remote;
pub mod volumes;
