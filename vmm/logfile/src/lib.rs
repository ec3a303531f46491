//! Containers' stdout/stderr in Docker's json-file format: the one contract between the VMM,
//! which writes the log ([`writer`]), and the daemon, which reads it for `docker logs`
//! ([`reader`]). Both sides are synchronous; the daemon runs the reader on blocking threads.
//!
//! A log is `path` plus its rotated predecessors `path.1` (newest) … `path.N` (oldest).

pub mod reader;
pub mod time;
pub mod writer;

pub use reader::{files_oldest_first, read_all, tail, within, Follower, Record};
pub use writer::{LogLimits, LogWriter, Stream};
