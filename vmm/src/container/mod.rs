//! The container session, held by the VMM process itself: so a container outlives whoever started
//! it (a daemon that is restarted or killed), with no extra host process per container.
//!
//! Guest-init connects to the host's [`CONTROL_PORT`], which the vsock device turns into a
//! connection to `<vsock.uds>_1024`: this module listens there, says hello, sends the process
//! spec, and from then on writes the process's output to its json-file log, relays it to whoever
//! is attached (the `attach` socket), relays their stdin, signals and resizes to the guest, and
//! writes the exit report to `exit_file` (atomically) before guest-init powers off.
//!
//! Everything the guest sends is checked by the protocol's bounded decoder; a guest that breaks
//! the protocol ends its session (no exit file: the host reports the container as lost), never
//! the VMM.

mod attach;

use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use skiff_logfile::time::rfc3339;
use skiff_logfile::writer::{LogLimits, LogWriter, Stream};
use skiff_protocol::{
    check_hello, expect_message, read_message, write_message, ErrorReport, ExitStatus, Hello,
    Message, ProcessSpec, ProtocolError, CONTROL_PORT,
};

use crate::seccomp::{self, ThreadKind};
use attach::Attached;

/// The largest exit file read: a report's message fits in one protocol frame, which JSON's
/// escapes may make up to six times as long.
pub const MAX_EXIT_FILE: u64 = 6 * skiff_protocol::MAX_PAYLOAD as u64 + 4096;
/// How long a session asked to wait for its first attach client waits before it starts the
/// process anyway (its output is in the log either way).
const ATTACH_WAIT: Duration = Duration::from_secs(30);
/// Our `Hello.agent`.
const AGENT: &str = concat!("skiff-vmm ", env!("CARGO_PKG_VERSION"));

/// The container a VM runs: its process and where its session's files go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    /// The container's main process, as guest-init gets it.
    pub process: ProcessSpec,
    /// Docker's json-file log of its stdout and stderr.
    pub log: PathBuf,
    /// Rotation of the log.
    #[serde(default)]
    pub log_limits: LogLimits,
    /// Where the exit report goes (JSON [`ContainerExit`], written atomically).
    pub exit_file: PathBuf,
    /// Unix socket for attach clients (protocol frames, no hello: they get the process's output
    /// frames and the exit report; they may send stdin, signals and resizes).
    pub attach: PathBuf,
    /// The process gets a stdin that attach clients feed; otherwise it reads EOF at once.
    #[serde(default)]
    pub open_stdin: bool,
    /// Close the process's stdin when the first attach client that fed it leaves.
    #[serde(default)]
    pub stdin_once: bool,
    /// Start the process only once a first client is attached (at most 30 s), so a client that
    /// starts a container and attaches sees all of its output.
    #[serde(default)]
    pub wait_for_attach: bool,
}

/// How the container's main process ended, as the exit file records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitOutcome {
    Exited(ExitStatus),
    /// It could not be started (the message says why; `exit_code` is shell-style).
    Failed(ErrorReport),
}

/// The exit file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerExit {
    pub outcome: ExitOutcome,
    /// RFC 3339, when the VMM got the report.
    pub finished_at: String,
}

impl ContainerExit {
    /// The shell-style exit code (`docker wait`'s `StatusCode`).
    pub fn code(&self) -> i32 {
        match &self.outcome {
            ExitOutcome::Exited(status) => status.shell_code(),
            ExitOutcome::Failed(report) => report.exit_code,
        }
    }

    /// Reads an exit file; `Ok(None)` when there is none (the process has not ended, or its VM
    /// ended without a report).
    /// The file must be a regular file of at most [`MAX_EXIT_FILE`] bytes, not a symlink: its
    /// directory is a jailed VMM's to write in, and its reader is root.
    pub fn read(path: &Path) -> io::Result<Option<ContainerExit>> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path);
        let file = match opened {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
        if !file.metadata()?.is_file() {
            return Err(invalid(format!("{} is not a regular file", path.display())));
        }
        let mut bytes = Vec::new();
        file.take(MAX_EXIT_FILE + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_EXIT_FILE {
            return Err(invalid(format!("{} is too long", path.display())));
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| invalid(e.to_string()))
    }

    /// Writes the file through a temporary name and fsyncs it: a reader sees all of it or none.
    fn write(&self, path: &Path) -> io::Result<()> {
        let tmp = path.with_extension("tmp");
        let json = serde_json::to_vec(self).map_err(io::Error::other)?;
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("listening on {path}: {source}")]
    Listen {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("opening the log {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("starting the session thread: {0}")]
    Thread(#[source] io::Error),
}

/// A running container session; [`ContainerSession::finish`] waits for its exit report.
pub struct ContainerSession {
    thread: JoinHandle<()>,
}

/// A session whose sockets listen and whose log is open, its threads not started yet.
pub struct PendingSession {
    spec: ContainerSpec,
    control: UnixListener,
    attach_listener: UnixListener,
    log: LogWriter,
}

impl PendingSession {
    /// Serves the session on threads of its own. Call before the VM runs.
    pub fn start(self) -> Result<ContainerSession, ContainerError> {
        let PendingSession {
            spec,
            control,
            attach_listener,
            log,
        } = self;
        // Docker's rule: only a container without a terminal that asked for StdinOnce has its
        // stdin closed when its client leaves (a terminal's end of input is its own ^D).
        let attached = Attached::new(spec.open_stdin && spec.stdin_once && !spec.process.tty);
        attached
            .clone()
            .serve(attach_listener)
            .map_err(ContainerError::Thread)?;
        let builder = std::thread::Builder::new().name("container".into());
        let thread = seccomp::spawn(builder, ThreadKind::Session, move || {
            if let Err(e) = serve(&spec, control, log, &attached) {
                tracing::warn!("container session: {e}");
            }
            attached.close();
        })
        .map_err(ContainerError::Thread)?;
        Ok(ContainerSession { thread })
    }
}

impl ContainerSession {
    /// Listens on the control port's socket and the attach socket and opens the log, with this
    /// process's rights (the jail's threads come later: [`PendingSession::start`]).
    pub fn listen(
        spec: &ContainerSpec,
        vsock_uds: &Path,
    ) -> Result<PendingSession, ContainerError> {
        let control_path = Self::control_socket(vsock_uds);
        let listen = |path: &Path| {
            let _ = std::fs::remove_file(path);
            UnixListener::bind(path).map_err(|source| ContainerError::Listen {
                path: path.to_path_buf(),
                source,
            })
        };
        let control = listen(&control_path)?;
        let attach_listener = listen(&spec.attach)?;
        let log =
            LogWriter::open(&spec.log, spec.log_limits).map_err(|source| ContainerError::Log {
                path: spec.log.clone(),
                source,
            })?;
        Ok(PendingSession {
            spec: spec.clone(),
            control,
            attach_listener,
            log,
        })
    }

    /// The socket guest-init's control connection reaches through the vsock device.
    pub fn control_socket(vsock_uds: &Path) -> PathBuf {
        PathBuf::from(format!("{}_{CONTROL_PORT}", vsock_uds.display()))
    }

    /// Waits (at most `patience`) for the session to end after the VM stopped: its exit file is
    /// then written, if the guest reported one.
    pub fn finish(self, patience: Duration) {
        let deadline = std::time::Instant::now() + patience;
        while !self.thread.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The session: handshake, spec, then output to the log and the attached until the report.
fn serve(
    spec: &ContainerSpec,
    control: UnixListener,
    mut log: LogWriter,
    attached: &Attached,
) -> Result<(), ProtocolError> {
    let (mut guest, _) = control.accept()?;
    drop(control);
    write_message(&mut guest, &Message::Hello(Hello::ours(AGENT)))?;
    check_hello(expect_message(&mut guest, "Hello")?)?;
    if spec.wait_for_attach {
        attached.wait_for_first(ATTACH_WAIT);
    }
    write_message(&mut guest, &Message::Spec(spec.process.clone()))?;
    let writer = Arc::new(Mutex::new(guest.try_clone()?));
    if !spec.open_stdin {
        write_message(&mut *lock(&writer), &Message::StdinEof)?;
    }
    attached.connect_guest(writer);
    let outcome = loop {
        let Some(message) = read_message(&mut guest)? else {
            return Err(ProtocolError::Closed("exit report"));
        };
        let now = SystemTime::now();
        match &message {
            Message::Stdout(data) => log_write(&mut log, Stream::Stdout, data, now),
            Message::Stderr(data) => log_write(&mut log, Stream::Stderr, data, now),
            Message::Started(_) => {}
            Message::Exit(status) => break ExitOutcome::Exited(*status),
            Message::Error(report) => break ExitOutcome::Failed(report.clone()),
            other => {
                return Err(ProtocolError::Unexpected {
                    expected: "output or an exit report",
                    got: other.kind(),
                })
            }
        }
        attached.relay(&message);
    };
    let now = SystemTime::now();
    if let Err(e) = log.flush_partial(now) {
        tracing::warn!("container log: {e}");
    }
    let exit = ContainerExit {
        outcome,
        finished_at: rfc3339(now),
    };
    if let Err(e) = exit.write(&spec.exit_file) {
        tracing::error!("writing {}: {e}", spec.exit_file.display());
    }
    attached.relay(&match &exit.outcome {
        ExitOutcome::Exited(status) => Message::Exit(*status),
        ExitOutcome::Failed(report) => Message::Error(report.clone()),
    });
    // Guest-init waits for us to close before it powers off.
    let _ = guest.shutdown(std::net::Shutdown::Both);
    Ok(())
}

/// A full disk must not stop the container: its output still reaches the attached.
fn log_write(log: &mut LogWriter, stream: Stream, data: &[u8], now: SystemTime) {
    if let Err(e) = log.write(stream, data, now) {
        tracing::warn!("container log: {e}");
    }
}

fn lock(stream: &Mutex<UnixStream>) -> std::sync::MutexGuard<'_, UnixStream> {
    stream.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
