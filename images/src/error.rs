//! The one error type of the images crate: every variant names what was wrong and where.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
    InvalidDigest(String),

    #[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/arm64/v8")]
    InvalidPlatform(String),

    // Sources are not repeated in messages: `{:#}` (anyhow) prints the chain.
    #[error("HTTP request to {url} failed")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("registry {registry} sent nothing for {secs} s while {stage}")]
    Timeout {
        registry: String,
        stage: String,
        secs: u64,
    },

    #[error("registry answered {status} for {url}: {message}")]
    Registry {
        url: String,
        status: u16,
        message: String,
    },

    #[error("{registry} requires authentication: run `skiff login {registry}` or add credentials to ~/.docker/config.json")]
    AuthRequired { registry: String },

    #[error("authentication to {registry} failed: {reason}")]
    AuthFailed { registry: String, reason: String },

    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },

    #[error("{what} is too large: more than {limit} bytes")]
    TooLarge { what: String, limit: u64 },

    #[error("unsupported media type {media_type:?} for {what}")]
    UnsupportedMediaType { what: String, media_type: String },

    #[error("malformed {what}: {reason}")]
    Malformed { what: String, reason: String },

    #[error("no image for platform {wanted} in the index (available: {available})")]
    NoMatchingPlatform { wanted: String, available: String },

    #[error("unsafe layer entry {entry:?}: {reason}")]
    UnsafeEntry { entry: String, reason: String },

    #[error("layer exceeds the unpack limit: {0}")]
    LimitExceeded(String),

    #[error("image {0} not found locally")]
    ImageNotFound(String),

    #[error("{context} {path}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("image database: {0}")]
    Db(#[from] rusqlite::Error),

    #[error("background task failed: {0}")]
    Task(String),
}

/// Attaches "what we were doing" and the path to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn at(self, context: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, context: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            context,
            path: path.into(),
            source,
        })
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Task(e.to_string())
    }
}
