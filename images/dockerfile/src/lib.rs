//! The Dockerfile frontend (work in progress).

pub mod error;
mod healthcheck;
pub mod instructions;
pub mod parser;
mod pattern;
pub mod shell;

pub use error::{Error, Result};
