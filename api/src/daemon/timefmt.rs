//! RFC 3339 timestamps as Docker writes them (UTC, nanoseconds, `Z`). They live in
//! `skiff-logfile`, which the VMM shares with the daemon for container logs.

pub use skiff_logfile::time::{parse_rfc3339, parse_since, rfc3339, ZERO_TIME};
