//! The one error type of the images crate: every variant names what was wrong and where.

use std::path::PathBuf;

// Every text field may hold what an image, archive or registry sent: escaped when shown.
use crate::text::escape_untrusted as esc;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid image reference {reference:?}: {}", esc(.reason))]
    InvalidReference { reference: String, reason: String },

    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
    InvalidDigest(String),

    #[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/arm64/v8")]
    InvalidPlatform(String),

    // Sources are not repeated in messages: `{:#}` (anyhow) prints the chain.
    #[error("HTTP request to {} failed", esc(.url))]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("registry {} sent nothing for {secs} s while {}", esc(.registry), esc(.stage))]
    Timeout {
        registry: String,
        stage: String,
        secs: u64,
    },

    #[error("registry answered {status} for {}: {}", esc(.url), esc(.message))]
    Registry {
        url: String,
        status: u16,
        message: String,
    },

    #[error("{} requires authentication: run `skiff login {}` or add credentials to ~/.docker/config.json", esc(.registry), esc(.registry))]
    AuthRequired { registry: String },

    #[error("authentication to {} failed: {}", esc(.registry), esc(.reason))]
    AuthFailed { registry: String, reason: String },

    #[error("digest mismatch for {}: expected {}, got {}", esc(.what), esc(.expected), esc(.actual))]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    #[error("size mismatch for {}: expected {expected} bytes, got {actual}", esc(.what))]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },

    #[error("{} is too large: more than {limit} bytes", esc(.what))]
    TooLarge { what: String, limit: u64 },

    #[error("unsupported media type {media_type:?} for {}", esc(.what))]
    UnsupportedMediaType { what: String, media_type: String },

    #[error("malformed {}: {}", esc(.what), esc(.reason))]
    Malformed { what: String, reason: String },

    #[error("cannot put {} in an index: {}", esc(.image), esc(.reason))]
    IndexSource { image: String, reason: String },

    #[error("no image for platform {} in the index (available: {})", esc(.wanted), esc(.available))]
    NoMatchingPlatform { wanted: String, available: String },

    #[error("unsafe layer entry \"{}\": {}", esc(.entry), esc(.reason))]
    UnsafeEntry { entry: String, reason: String },

    #[error("layer exceeds the unpack limit: {}", esc(.0))]
    LimitExceeded(String),

    #[error("image {} not found locally", esc(.0))]
    ImageNotFound(String),

    #[error("{context} {}", esc(.path.display()))]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("image database: {0}")]
    Db(#[from] rusqlite::Error),

    #[error("background task failed: {}", esc(.0))]
    Task(String),

    /// A container's changes that a layer cannot hold, or could not be read.
    #[error("cannot commit {}: {}", esc(.path.display()), esc(.reason))]
    Uncommittable { path: PathBuf, reason: String },

    /// A `commit --change` that is not understood or not supported.
    #[error("invalid change {}: {}", esc(.change), esc(.reason))]
    InvalidChange { change: String, reason: String },
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
