//! What guest-init reports for `docker top`: the container's processes as the guest's `/proc`
//! shows them. Times are relative to the guest's boot, so the host needs no guest wall clock.

use serde::{Deserialize, Serialize};

/// The answer to `ListProcesses`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessList {
    /// The guest's uptime when the list was taken, in milliseconds.
    pub uptime_ms: u64,
    pub processes: Vec<ProcessInfo>,
    /// Some processes were left out to keep the frame under the payload limit.
    #[serde(default)]
    pub truncated: bool,
}

/// One process, with what `ps -ef` shows of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: i32,
    pub ppid: i32,
    pub uid: u32,
    /// The user's name from the container's `/etc/passwd`, or the UID.
    pub user: String,
    /// Controlling terminal (`pts/0`), or `?`.
    pub tty: String,
    /// Start, in milliseconds after the guest's boot.
    pub started_ms: u64,
    /// User plus system CPU time, in milliseconds.
    pub cpu_ms: u64,
    /// The command line, arguments joined by spaces; `[name]` when it has none.
    pub cmd: String,
}
