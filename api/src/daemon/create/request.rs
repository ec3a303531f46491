//! What the engine receives for `POST /containers/create`: only what skiff honours, typed.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRequest {
    /// `?name=` without Docker's leading slash; None lets the engine choose one.
    pub name: Option<String>,
    pub image: String,
    /// None: the image's default command.
    pub cmd: Option<Vec<String>>,
    /// None: the image's entrypoint. `Some([])` or `Some([""])` clears it (`--entrypoint ""`).
    pub entrypoint: Option<Vec<String>>,
    /// `KEY=VALUE` entries, in order; a bare `KEY` is kept as sent (Docker keeps it too).
    pub env: Vec<String>,
    /// None: the image's.
    pub working_dir: Option<String>,
    /// None: the image's. `name`, `uid`, `name:group` or `uid:gid`, resolved in the image.
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub stdio: Stdio,
    pub stop_signal: Option<String>,
    /// Seconds; None: Docker's default of 10.
    pub stop_timeout: Option<i64>,
    /// `80/tcp`, … as declared (published only with `publish_all`).
    pub exposed_ports: Vec<String>,
    /// Container ports published on the host (`-p`; `-P` adds the exposed ones).
    #[serde(default)]
    pub ports: Vec<super::ports::PortRequest>,
    /// `-P`: the image's exposed ports are published too (the engine adds them at create).
    #[serde(default)]
    pub publish_all: bool,
    /// Resource limits of the container's processes (`--ulimit`).
    #[serde(default)]
    pub ulimits: Vec<skiff_protocol::Rlimit>,
    /// The most processes the container may have at once (`--pids-limit`); None: no limit.
    #[serde(default)]
    pub pids_limit: Option<u64>,
    /// None: skiff's default vCPU count. In billionths of a CPU, as Docker's `NanoCpus`.
    pub nano_cpus: Option<u64>,
    /// None: skiff's default guest memory. Bytes.
    pub memory_bytes: Option<u64>,
    pub restart_policy: RestartPolicy,
    pub auto_remove: bool,
    pub log: JsonFileLog,
    /// `--init`: recorded only, since skiff's guest-init is always PID 1 and reaps orphans.
    pub init: bool,
    pub network: NetworkMode,
    /// More names the container is found by on a user-defined network
    /// (`NetworkingConfig.EndpointsConfig.NET.Aliases`, `--network-alias`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The networks the container joins besides its NetworkMode's (more entries of
    /// `EndpointsConfig`, `network connect`), each with its own interface in the VM.
    #[serde(default)]
    pub more_networks: Vec<NetworkJoin>,
    /// `network disconnect` left the last network: `network` is `None` for now, and the next
    /// `network connect` makes its network the NetworkMode's again (an explicit `none` refuses).
    #[serde(default)]
    pub network_left: bool,
    /// The terminal's initial size (height, width) when the client sent one.
    pub console_size: Option<(u32, u32)>,
    /// Binds, volumes and tmpfs mounts, in Docker's order (see `mounts::decode_mounts`).
    #[serde(default)]
    pub mounts: Vec<super::mounts::MountRequest>,
    /// `--storage-opt size=`: the writable layer lives in an ext4 image of this many bytes,
    /// which caps it. None: no cap (a directory on the host's file system).
    #[serde(default)]
    pub storage_size: Option<u64>,
    /// `Config.Healthcheck` / `--health-*`, merged with the image's at create.
    #[serde(default)]
    pub healthcheck: Option<skiff_images::HealthConfig>,
}

/// The stdio wiring the client asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stdio {
    pub tty: bool,
    pub open_stdin: bool,
    pub stdin_once: bool,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    #[default]
    No,
    /// None: retry without limit (`MaximumRetryCount` 0).
    OnFailure {
        max_retries: Option<u32>,
    },
    Always,
    UnlessStopped,
}

/// The json-file log driver's options (the only driver skiff has).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonFileLog {
    /// Rotate past this many bytes; None: never rotate.
    pub max_size: Option<u64>,
    /// Files kept when rotating (Docker's default 1).
    pub max_file: Option<u32>,
}

/// A further network a container joins, by the network's name, with its aliases there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkJoin {
    pub network: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkMode {
    /// `default` or `bridge`: the engine's default network.
    #[default]
    Default,
    /// `none`, or `NetworkDisabled`: a loopback-only guest.
    None,
    /// A user-defined network, by name or ID as the request gave it.
    Named(String),
}
