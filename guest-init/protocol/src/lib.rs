//! The host <-> guest-init wire protocol, version 1.
//!
//! # Transport
//! One vsock stream per process session. guest-init connects to the host (CID 2) on
//! [`CONTROL_PORT`] at boot for the container's main process; the host connects to the guest on
//! [`EXEC_PORT`] for every `exec` (through the VMM's Unix socket: `CONNECT 1025\n` → `OK <port>\n`).
//!
//! # Frames
//! ```text
//! +---------+----------------------+------------------+
//! | type u8 | length u32 (big end) | payload (length) |
//! +---------+----------------------+------------------+
//! ```
//! `length` never exceeds [`MAX_PAYLOAD`]; a receiver rejects a larger length from the header alone,
//! before allocating anything. Control messages carry a JSON payload, data messages raw bytes.
//!
//! | type | message     | payload              | direction     |
//! |------|-------------|----------------------|---------------|
//! | 0x01 | `Hello`     | JSON [`Hello`]       | both, first   |
//! | 0x02 | `Spec`      | JSON [`ProcessSpec`] | host → guest  |
//! | 0x03 | `Started`   | JSON [`Started`]     | guest → host  |
//! | 0x04 | `Stdin`     | bytes                | host → guest  |
//! | 0x05 | `StdinEof`  | empty                | host → guest  |
//! | 0x06 | `Stdout`    | bytes                | guest → host  |
//! | 0x07 | `Stderr`    | bytes                | guest → host  |
//! | 0x08 | `Signal`    | JSON [`SignalMsg`]   | host → guest  |
//! | 0x09 | `Resize`    | JSON [`TerminalSize`]| host → guest  |
//! | 0x0a | `Exit`      | JSON [`ExitStatus`]  | guest → host  |
//! | 0x0b | `Error`     | JSON [`ErrorReport`] | guest → host  |
//! | 0x0c | `ListProcesses` | empty            | host → guest  |
//! | 0x0d | `Processes` | JSON [`ProcessList`] | guest → host  |
//!
//! # Session
//! 1. Each side sends `Hello` as soon as the stream is up and checks the peer's `version` equals
//!    [`PROTOCOL_VERSION`] (a mismatch is an error on both sides; there is no negotiation yet).
//! 2. The host sends `Spec`.
//! 3. The guest answers `Started` once the process runs, or `Error` (with a shell-style exit code:
//!    127 when the program is not found, 126 when it cannot be run) and closes the stream.
//! 4. Streams: `Stdin`/`StdinEof`/`Signal`/`Resize` from the host, `Stdout`/`Stderr` from the guest.
//!    In TTY mode the guest sends everything as `Stdout`.
//! 5. When the process exits the guest sends its remaining output, then `Exit`, then shuts down
//!    its sending side. The host closes the stream once it has the `Exit`; for the main process,
//!    guest-init waits for that close (briefly) before powering the VM off, so the last frames are
//!    not lost in flight.
//!
//! On the exec port the host may send `ListProcesses` instead of `Spec` (for `docker top`): the
//! guest answers one `Processes` and closes the stream.
//!
//! Both sides treat the peer as untrusted: every decoding problem is a [`ProtocolError`], never a
//! panic, and no allocation is larger than [`MAX_PAYLOAD`].

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::io::{self, Read, Write};

mod network;
mod processes;
pub use network::{GuestInterface, GuestNetwork, HostEntry};
pub use processes::{ProcessInfo, ProcessList};

/// Version spoken by this build. Bump on any incompatible change of frames or messages.
pub const PROTOCOL_VERSION: u32 = 1;
/// Host port guest-init connects to at boot (the main process session).
pub const CONTROL_PORT: u32 = 1024;
/// Guest port guest-init serves `exec` sessions on.
pub const EXEC_PORT: u32 = 1025;
/// Frame header: type byte + big-endian u32 length.
pub const HEADER_LEN: usize = 5;
/// Largest payload either side accepts (a spec with a large environment still fits easily).
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Largest data payload a sender puts into one frame; keeps signals and resizes responsive.
pub const DATA_CHUNK: usize = 32 * 1024;
/// `PATH` a process gets when its [`ProcessSpec`] sets none (Docker's default). The host puts it in
/// the specs it builds; guest-init falls back to it.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Errors of encoding, decoding or exchanging protocol messages.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("i/o error on the control stream: {0}")]
    Io(#[from] io::Error),
    #[error("peer closed the stream in the middle of a frame ({got} of {expected} bytes)")]
    Truncated { expected: usize, got: usize },
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    #[error("malformed {kind} message: {source}")]
    BadJson {
        kind: &'static str,
        source: serde_json::Error,
    },
    #[error("{kind} frame must be empty, got {len} bytes")]
    UnexpectedPayload { kind: &'static str, len: usize },
    #[error("peer speaks protocol version {theirs}, this side speaks {ours}")]
    VersionMismatch { ours: u32, theirs: u32 },
    #[error("expected a {expected} message, got {got}")]
    Unexpected {
        expected: &'static str,
        got: &'static str,
    },
    #[error("peer closed the stream before sending {0}")]
    Closed(&'static str),
}

/// First message on every stream, from both sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    /// Free-form name and version of the sender, for diagnostics only.
    #[serde(default)]
    pub agent: String,
}

impl Hello {
    pub fn ours(agent: &str) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            agent: agent.to_string(),
        }
    }
}

/// One resource limit, named like OCI's `process.rlimits[].type` (e.g. `RLIMIT_NOFILE`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    #[serde(rename = "type")]
    pub kind: String,
    pub soft: u64,
    pub hard: u64,
}

/// Terminal dimensions in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    pub rows: u16,
    pub cols: u16,
}

fn root_dir() -> String {
    "/".to_string()
}

/// Everything guest-init needs to start a process: the main one or an exec'd one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// Program and arguments; `args[0]` is looked up in the spec's `PATH` unless it has a `/`.
    pub args: Vec<String>,
    /// `KEY=VALUE` entries. guest-init adds a default `PATH` and `HOME` when absent.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[serde(default = "root_dir")]
    pub cwd: String,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
    /// Host name of the VM; applied for the main process only (exec shares the VM's).
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    /// The most processes (and threads) the container may have at once, its execs included
    /// (`--pids-limit`); for the main process only. None: no limit.
    #[serde(default)]
    pub pids_limit: Option<u64>,
    /// Run on a pseudo terminal (stdout and stderr merged) instead of three pipes.
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub terminal_size: Option<TerminalSize>,
    /// File systems to mount before the process starts, in order; for the main process only
    /// (exec shares the VM's).
    #[serde(default)]
    pub mounts: Vec<GuestMount>,
    /// Links to configure and the `/etc` files that go with them; for the main process only.
    /// Boxed: a spec travels in enums (`Message`, the session requests) that clippy wants small.
    #[serde(default)]
    pub network: Option<Box<GuestNetwork>>,
}

/// A file system guest-init mounts in the container: a virtio-fs share (a volume) or a tmpfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestMount {
    pub source: MountSource,
    /// Absolute path inside the container; created when missing.
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
    /// A volume's first mount: when the share is empty, the image's files at `target` are copied
    /// into it first (Docker's copy of image content into a new volume).
    #[serde(default)]
    pub copy_up: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountSource {
    /// The virtio-fs device with this tag.
    Share { tag: String },
    /// A tmpfs; `options` as tmpfs takes them (`size=64m,mode=1777`), already checked by the host.
    Tmpfs { options: String },
}

impl ProcessSpec {
    /// A spec running `args` as root in `/` with no environment.
    pub fn new(args: Vec<String>) -> ProcessSpec {
        ProcessSpec {
            args,
            env: Vec::new(),
            cwd: root_dir(),
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            hostname: None,
            rlimits: Vec::new(),
            pids_limit: None,
            tty: false,
            terminal_size: None,
            mounts: Vec::new(),
            network: None,
        }
    }
}

/// An empty spec (no arguments): what `new` gives, for records built field by field.
impl Default for ProcessSpec {
    fn default() -> ProcessSpec {
        ProcessSpec::new(Vec::new())
    }
}

/// The process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// Its PID inside the VM.
    pub pid: i32,
}

/// A signal to deliver to the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalMsg {
    pub signal: i32,
}

/// How the process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// The shell convention: the code itself, or 128 + the signal number.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

/// The process could not be started (or guest-init failed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReport {
    pub message: String,
    /// Shell-style code for the failure: 127 not found, 126 cannot run, 125 guest-init trouble.
    pub exit_code: i32,
}

/// One protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Hello(Hello),
    Spec(ProcessSpec),
    Started(Started),
    Stdin(Vec<u8>),
    StdinEof,
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Signal(SignalMsg),
    Resize(TerminalSize),
    Exit(ExitStatus),
    Error(ErrorReport),
    ListProcesses,
    Processes(ProcessList),
}

mod frame_type {
    pub const HELLO: u8 = 0x01;
    pub const SPEC: u8 = 0x02;
    pub const STARTED: u8 = 0x03;
    pub const STDIN: u8 = 0x04;
    pub const STDIN_EOF: u8 = 0x05;
    pub const STDOUT: u8 = 0x06;
    pub const STDERR: u8 = 0x07;
    pub const SIGNAL: u8 = 0x08;
    pub const RESIZE: u8 = 0x09;
    pub const EXIT: u8 = 0x0a;
    pub const ERROR: u8 = 0x0b;
    pub const LIST_PROCESSES: u8 = 0x0c;
    pub const PROCESSES: u8 = 0x0d;
}

impl Message {
    /// Short name for diagnostics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello(_) => "Hello",
            Message::Spec(_) => "Spec",
            Message::Started(_) => "Started",
            Message::Stdin(_) => "Stdin",
            Message::StdinEof => "StdinEof",
            Message::Stdout(_) => "Stdout",
            Message::Stderr(_) => "Stderr",
            Message::Signal(_) => "Signal",
            Message::Resize(_) => "Resize",
            Message::Exit(_) => "Exit",
            Message::Error(_) => "Error",
            Message::ListProcesses => "ListProcesses",
            Message::Processes(_) => "Processes",
        }
    }

    /// Appends the encoded frame to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
        use frame_type::*;
        let (ty, payload): (u8, std::borrow::Cow<'_, [u8]>) = match self {
            Message::Hello(m) => (HELLO, to_json(m)?.into()),
            Message::Spec(m) => (SPEC, to_json(m)?.into()),
            Message::Started(m) => (STARTED, to_json(m)?.into()),
            Message::Stdin(b) => (STDIN, b.as_slice().into()),
            Message::StdinEof => (STDIN_EOF, (&[][..]).into()),
            Message::ListProcesses => (LIST_PROCESSES, (&[][..]).into()),
            Message::Stdout(b) => (STDOUT, b.as_slice().into()),
            Message::Stderr(b) => (STDERR, b.as_slice().into()),
            Message::Signal(m) => (SIGNAL, to_json(m)?.into()),
            Message::Resize(m) => (RESIZE, to_json(m)?.into()),
            Message::Exit(m) => (EXIT, to_json(m)?.into()),
            Message::Error(m) => (ERROR, to_json(m)?.into()),
            Message::Processes(m) => (PROCESSES, to_json(m)?.into()),
        };
        if payload.len() > MAX_PAYLOAD {
            return Err(ProtocolError::TooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        out.reserve(HEADER_LEN + payload.len());
        out.push(ty);
        // Cannot truncate: checked against MAX_PAYLOAD above.
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
        Ok(())
    }

    /// The encoded frame.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut out = Vec::new();
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Decodes one frame's payload given its type byte.
    pub fn decode(ty: u8, payload: &[u8]) -> Result<Message, ProtocolError> {
        use frame_type::*;
        Ok(match ty {
            HELLO => Message::Hello(from_json("Hello", payload)?),
            SPEC => Message::Spec(from_json("Spec", payload)?),
            STARTED => Message::Started(from_json("Started", payload)?),
            STDIN => Message::Stdin(payload.to_vec()),
            STDIN_EOF => {
                expect_empty("StdinEof", payload)?;
                Message::StdinEof
            }
            LIST_PROCESSES => {
                expect_empty("ListProcesses", payload)?;
                Message::ListProcesses
            }
            STDOUT => Message::Stdout(payload.to_vec()),
            STDERR => Message::Stderr(payload.to_vec()),
            SIGNAL => Message::Signal(from_json("Signal", payload)?),
            RESIZE => Message::Resize(from_json("Resize", payload)?),
            EXIT => Message::Exit(from_json("Exit", payload)?),
            ERROR => Message::Error(from_json("Error", payload)?),
            PROCESSES => Message::Processes(from_json("Processes", payload)?),
            other => return Err(ProtocolError::UnknownType(other)),
        })
    }
}

fn expect_empty(kind: &'static str, payload: &[u8]) -> Result<(), ProtocolError> {
    if payload.is_empty() {
        Ok(())
    } else {
        Err(ProtocolError::UnexpectedPayload {
            kind,
            len: payload.len(),
        })
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, ProtocolError> {
    serde_json::to_vec(value).map_err(|source| ProtocolError::BadJson {
        kind: "outgoing",
        source,
    })
}

fn from_json<T: DeserializeOwned>(kind: &'static str, payload: &[u8]) -> Result<T, ProtocolError> {
    serde_json::from_slice(payload).map_err(|source| ProtocolError::BadJson { kind, source })
}

/// Parses a frame header, refusing oversize lengths before any payload is buffered.
fn parse_header(header: &[u8; HEADER_LEN]) -> Result<(u8, usize), ProtocolError> {
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(ProtocolError::TooLarge {
            len,
            max: MAX_PAYLOAD,
        });
    }
    Ok((header[0], len))
}

/// Incremental decoder for non-blocking or async readers: feed it bytes as they arrive and take
/// complete messages out. It never holds more than one maximal frame plus one read's worth.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
}

impl FrameDecoder {
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Whether the caller may read more input: false while a complete frame waits to be taken,
    /// so a flooding peer cannot grow the buffer without bound.
    pub fn wants_input(&self) -> bool {
        self.buffered() < HEADER_LEN + MAX_PAYLOAD
    }

    fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Takes the next complete message, `Ok(None)` if more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, ProtocolError> {
        let pending = &self.buf[self.start..];
        let Some(header) = pending.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let (ty, len) = parse_header(header)?;
        if pending.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let message = Message::decode(ty, &pending[HEADER_LEN..HEADER_LEN + len])?;
        self.start += HEADER_LEN + len;
        if self.start > MAX_PAYLOAD {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(message))
    }

    /// Call when the peer closed the stream: an error if it stopped inside a frame.
    pub fn finish(&self) -> Result<(), ProtocolError> {
        let pending = &self.buf[self.start..];
        if pending.is_empty() {
            return Ok(());
        }
        let expected = match pending.first_chunk::<HEADER_LEN>() {
            Some(header) => HEADER_LEN + parse_header(header)?.1,
            None => HEADER_LEN,
        };
        Err(ProtocolError::Truncated {
            expected,
            got: pending.len(),
        })
    }
}

/// Reads exactly `buf.len()` bytes; `Ok(n < len)` only when the stream ended first.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Blocking read of one message; `Ok(None)` when the peer closed the stream between frames.
pub fn read_message(r: &mut impl Read) -> Result<Option<Message>, ProtocolError> {
    let mut header = [0u8; HEADER_LEN];
    let got = read_full(r, &mut header)?;
    if got == 0 {
        return Ok(None);
    }
    if got < HEADER_LEN {
        return Err(ProtocolError::Truncated {
            expected: HEADER_LEN,
            got,
        });
    }
    let (ty, len) = parse_header(&header)?;
    let mut payload = vec![0u8; len];
    let got = read_full(r, &mut payload)?;
    if got < len {
        return Err(ProtocolError::Truncated {
            expected: HEADER_LEN + len,
            got: HEADER_LEN + got,
        });
    }
    Message::decode(ty, &payload).map(Some)
}

/// Blocking read of a message that must be there.
pub fn expect_message(r: &mut impl Read, what: &'static str) -> Result<Message, ProtocolError> {
    read_message(r)?.ok_or(ProtocolError::Closed(what))
}

/// Blocking write of one message as a single `write_all`.
pub fn write_message(w: &mut impl Write, message: &Message) -> Result<(), ProtocolError> {
    w.write_all(&message.encode()?)?;
    Ok(())
}

/// Checks the peer's `Hello`.
pub fn check_hello(message: Message) -> Result<Hello, ProtocolError> {
    match message {
        Message::Hello(h) if h.version == PROTOCOL_VERSION => Ok(h),
        Message::Hello(h) => Err(ProtocolError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: h.version,
        }),
        other => Err(ProtocolError::Unexpected {
            expected: "Hello",
            got: other.kind(),
        }),
    }
}

#[cfg(test)]
mod tests;
