//! What the endpoints pass to the engine besides IDs: parsed query parameters and request bodies,
//! and the byte streams that flow between a client and a container.

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use std::collections::BTreeMap;
use tokio::sync::mpsc;

use super::model::WaitResponse;

/// Docker's `filters` query parameter: each key with its accepted values.
pub type Filters = BTreeMap<String, Vec<String>>;

/// A request or response body that arrives or leaves piece by piece (`load`, `save`).
pub type ByteStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// Which of a container's standard streams a piece of output came from (the first byte of
/// Docker's 8-byte frame header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdStream {
    Stdin = 0,
    Stdout = 1,
    Stderr = 2,
}

/// A piece of a container's or exec session's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChunk {
    pub stream: StdStream,
    pub data: Bytes,
}

/// Output until the process ends (or the log is exhausted when not following).
pub type OutputStream = BoxStream<'static, OutputChunk>;

/// What an attach or an exec start hands back: the output, and where stdin goes.
pub struct AttachStreams {
    /// A TTY session sends raw bytes; otherwise each chunk is framed with its stream.
    pub tty: bool,
    pub output: OutputStream,
    /// None when stdin was not asked for; dropping the sender is stdin's EOF.
    pub stdin: Option<mpsc::Sender<Bytes>>,
}

/// Resolves when a wait's condition is met, with Docker's answer (exit code, or an error).
pub type WaitFuture = BoxFuture<'static, WaitResponse>;

/// `POST /containers/{id}/wait?condition=`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WaitCondition {
    /// Returns at once if the container is not running.
    #[default]
    NotRunning,
    /// The next exit, even of a container not started yet (`docker run`).
    NextExit,
    /// When the container is removed (`docker run --rm`).
    Removed,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    pub all: bool,
    pub limit: Option<usize>,
    pub size: bool,
    pub filters: Filters,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// Keep streaming live output (otherwise only `logs` output is sent).
    pub stream: bool,
    /// Replay the log first.
    pub logs: bool,
    pub detach_keys: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogsOptions {
    pub follow: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// Unix seconds (fractions allowed); 0: from the start.
    pub since: f64,
    /// Unix seconds; 0: no end.
    pub until: f64,
    pub timestamps: bool,
    /// None: all lines.
    pub tail: Option<usize>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoveOptions {
    pub force: bool,
    pub volumes: bool,
    pub link: bool,
}

/// `POST /containers/{id}/exec`, decoded (and kept as it is in the engine's state).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExecConfig {
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub tty: bool,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    pub detach_keys: Option<String>,
    pub console_size: Option<(u32, u32)>,
}

/// `POST /exec/{id}/start`, decoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecStartOptions {
    pub detach: bool,
    pub tty: bool,
    pub console_size: Option<(u32, u32)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventsOptions {
    /// Unix seconds; None: only new events.
    pub since: Option<f64>,
    /// Unix seconds; None: stream until the client leaves.
    pub until: Option<f64>,
    pub filters: Filters,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsOptions {
    pub stream: bool,
    pub one_shot: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageListOptions {
    pub all: bool,
    pub digests: bool,
    pub filters: Filters,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullOptions {
    pub from_image: String,
    /// Tag or digest; None: `latest` unless `from_image` names one.
    pub tag: Option<String>,
    pub platform: Option<String>,
    /// `X-Registry-Auth`'s credentials; None: the daemon's host's `skiff login`.
    pub registry_auth: Option<super::registry_auth::RegistryAuth>,
}

/// `POST /images/{name}/push?tag=`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushOptions {
    /// The repository (`host:port/name`), as in the path.
    pub name: String,
    /// None or empty: every local tag of the repository, as Docker does.
    pub tag: Option<String>,
    /// From `X-Registry-Auth`; None: what `skiff login` stored on the daemon's host.
    pub auth: Option<super::registry_auth::RegistryAuth>,
}

/// `POST /commit`: a container's changes as a new image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitOptions {
    pub container: String,
    /// `REPO` and `TAG` of the new image's name; untagged without a repository.
    pub repo: Option<String>,
    pub tag: Option<String>,
    pub comment: Option<String>,
    pub author: Option<String>,
    /// Docker pauses the container meanwhile; skiff has no pause (see the engine).
    pub pause: bool,
    /// Dockerfile instructions (`CMD ["x"]`, `ENV K=V`, …), one or more lines each.
    pub changes: Vec<String>,
}

/// Counts shown by `/info`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SystemCounts {
    pub containers: u64,
    pub running: u64,
    pub paused: u64,
    pub stopped: u64,
    pub images: u64,
}

/// `POST /build` (the classic builder's query), decoded; what skiff cannot honour is refused
/// by the endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildOptions {
    /// `t`: names for the built image.
    pub tags: Vec<String>,
    /// Path of the Dockerfile inside the context (default `Dockerfile`).
    pub dockerfile: String,
    pub build_args: Vec<(String, String)>,
    pub target: Option<String>,
    pub no_cache: bool,
    /// `--label`s, set on the image.
    pub labels: BTreeMap<String, String>,
    /// Only the image ID is printed.
    pub quiet: bool,
    /// Remove RUN containers after a successful step (default) / always.
    pub rm: bool,
    pub force_rm: bool,
    /// Pull base images even when the store has them.
    pub pull: bool,
    /// `networkmode` for RUN: None is the engine's default network.
    pub network: Option<String>,
    /// `os/arch[/variant]` of the images to build from.
    pub platform: Option<String>,
    /// `X-Registry-Config`: the client's credentials by registry, for pulling base images.
    pub registry_config: BTreeMap<String, super::registry_auth::RegistryAuth>,
}
