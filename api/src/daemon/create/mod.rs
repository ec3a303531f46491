//! `POST /containers/create`: Docker's request body, and its decoding into what the engine gets.

pub mod body;
pub mod decode;
pub mod healthcheck;
pub mod mounts;
pub mod ports;
pub mod request;
pub mod storage;
pub mod ulimits;

pub use decode::{decode_create, parse_size, CreateError, RUNTIME_NAME};
pub use request::{CreateRequest, JsonFileLog, NetworkJoin, NetworkMode, RestartPolicy, Stdio};
