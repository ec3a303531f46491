//! `skiffd`'s HTTP front end: the Docker Engine API (v1.24–v1.47) over HTTP/1.1, from the wire to
//! the narrow `ContainerBackend` trait the engine implements.
//!
//! - `server`: listeners, per-connection HTTP with upgrades, clean shutdown; `tls`; `root_lock`.
//! - `router`: version prefix, route table, common headers; `handlers`: one module per group.
//! - `create`: the create request, decoded and honestly refused; `query`: strict parameters.
//! - `streams`: frames, the hijacked attach/exec connection, late bodies, JSON lines.
//! - `backend`: the engine boundary; `options` and `model`: what crosses it.
//! - `registry_auth`: the `X-Registry-Auth` header of pushes.

pub mod backend;
pub mod body;
pub mod create;
pub mod error;
pub mod handlers;
pub mod host;
pub mod model;
pub mod options;
pub mod query;
pub mod registry_auth;
pub mod root_lock;
pub mod router;
pub mod server;
pub mod streams;
pub mod timefmt;
pub mod tls;

pub use backend::{ContainerBackend, Created, Unimplemented};
pub use error::{ApiError, BackendError};
pub use router::Daemon;
