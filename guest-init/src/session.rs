//! One process session, guest side: handshake, start the process, pump its stdio and the host's
//! signals and resizes over the stream, report how it ended.
//!
//! Works over any stream socket (vsock in the VM, a Unix socket pair in tests) and does not need
//! to be PID 1. Single-threaded: one `poll` loop per session. Writes to the child's stdin are
//! buffered and non-blocking, so a child that does not read its stdin cannot stall its output.

use crate::process::{self, Child, SpawnError, Stdio};
use crate::protocol::{
    check_hello, expect_message, write_message, ErrorReport, ExitStatus, FrameDecoder, Hello,
    Message, ProcessSpec, ProtocolError, Started, DATA_CHUNK,
};
use crate::reaper::{exit_status, ExitWatch, Reaper};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// Our `Hello.agent`.
pub const AGENT: &str = concat!("skiff-init ", env!("CARGO_PKG_VERSION"));
/// Host stdin buffered for a child that reads slowly before we stop reading the stream.
const STDIN_BUFFER_LIMIT: usize = 1 << 20;
/// How long a pty may keep delivering output after its process exited (the kernel moves pty data
/// to the master asynchronously; background jobs may also hold the terminal open).
const PTY_DRAIN_LIMIT: Duration = Duration::from_secs(2);
const PTY_DRAIN_IDLE_MS: libc::c_int = 100;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("poll: {0}")]
    Poll(io::Error),
}

/// What the host asks for on a new stream.
#[derive(Debug)]
pub enum Request {
    /// Boxed: a spec is large and the other request carries nothing.
    Run(Box<ProcessSpec>),
    ListProcesses,
}

/// Exchanges `Hello`s and reads the spec.
pub fn accept_spec<S: Read + Write>(stream: &mut S) -> Result<ProcessSpec, ProtocolError> {
    match accept_request(stream)? {
        Request::Run(spec) => Ok(*spec),
        Request::ListProcesses => Err(ProtocolError::Unexpected {
            expected: "Spec",
            got: "ListProcesses",
        }),
    }
}

/// Exchanges `Hello`s and reads the request: a spec, or (exec port only) `ListProcesses`.
pub fn accept_request<S: Read + Write>(stream: &mut S) -> Result<Request, ProtocolError> {
    write_message(stream, &Message::Hello(Hello::ours(AGENT)))?;
    check_hello(expect_message(stream, "Hello")?)?;
    match expect_message(stream, "Spec")? {
        Message::Spec(spec) => Ok(Request::Run(Box::new(spec))),
        Message::ListProcesses => Ok(Request::ListProcesses),
        other => Err(ProtocolError::Unexpected {
            expected: "Spec",
            got: other.kind(),
        }),
    }
}

/// Half-closes `stream` and waits (at most `patience_ms` between reads) for the host to close it,
/// which means it has read everything we sent.
pub fn goodbye(stream: &File, patience_ms: libc::c_int) {
    let fd = stream.as_raw_fd();
    // SAFETY: shutdown, poll and read on our own socket with valid buffers.
    unsafe {
        libc::shutdown(fd, libc::SHUT_WR);
        let mut buf = [0u8; 256];
        loop {
            let mut pfd = poll_fd(fd, libc::POLLIN);
            if libc::poll(&mut pfd, 1, patience_ms) <= 0 {
                return;
            }
            if libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) <= 0 {
                return;
            }
        }
    }
}

/// Sends an `Error` report; the stream may already be broken, which changes nothing then.
pub fn report_error<S: Write>(stream: &mut S, message: String, exit_code: i32) {
    let _ = write_message(stream, &Message::Error(ErrorReport { message, exit_code }));
}

/// Starts `spec` and serves it until it exits. Returns the shell-style code reported to the host
/// (127/126 if it could not start, after an `Error` frame).
pub fn run<S>(stream: &mut S, spec: &ProcessSpec, reaper: &Reaper) -> Result<i32, SessionError>
where
    S: Read + Write + AsFd,
{
    let child = match process::spawn(spec, reaper) {
        Ok(child) => child,
        Err(SpawnError { message, exit_code }) => {
            report_error(stream, message, exit_code);
            return Ok(exit_code);
        }
    };
    let pid = child.pid;
    let mut pump = Pump::new(stream, child);
    if let Err(e) = write_message(pump.stream, &Message::Started(Started { pid })) {
        pump.kill();
        pump.wait_exit();
        return Err(e.into());
    }
    let status = pump.serve()?;
    if pump.stream_open {
        write_message(pump.stream, &Message::Exit(status))?;
    }
    Ok(status.shell_code())
}

/// Where the child's input goes.
enum Input {
    Pipe(File),
    Pty,
    Closed,
}

struct Pump<'s, S> {
    stream: &'s mut S,
    stream_open: bool,
    decoder: FrameDecoder,
    pid: libc::pid_t,
    exit: ExitWatch,
    /// The pty master in TTY mode (input, output and resizes all go through it).
    pty: Option<File>,
    /// Output pipes, owned here so the descriptors in `outputs` stay valid.
    _output_pipes: Vec<File>,
    input: Input,
    input_buf: Vec<u8>,
    input_eof: bool,
    /// Output descriptors still open, and whether each is stderr.
    outputs: Vec<(RawFd, bool)>,
}

fn poll_fd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

fn raw_read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: reads into a valid buffer of the given length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

impl<'s, S: Read + Write + AsFd> Pump<'s, S> {
    fn new(stream: &'s mut S, child: Child) -> Self {
        let Child { pid, stdio, exit } = child;
        let (input, outputs, pty, pipes) = match stdio {
            Stdio::Pipes {
                stdin,
                stdout,
                stderr,
            } => {
                let outputs = vec![(stdout.as_raw_fd(), false), (stderr.as_raw_fd(), true)];
                (Input::Pipe(stdin), outputs, None, vec![stdout, stderr])
            }
            Stdio::Pty { master } => {
                let outputs = vec![(master.as_raw_fd(), false)];
                (Input::Pty, outputs, Some(master), Vec::new())
            }
        };
        Pump {
            stream,
            stream_open: true,
            decoder: FrameDecoder::new(),
            pid,
            exit,
            pty,
            _output_pipes: pipes,
            input,
            input_buf: Vec::new(),
            input_eof: false,
            outputs,
        }
    }

    fn kill(&self) {
        // SAFETY: plain kill(2); the child runs in its own process group (setsid).
        unsafe {
            libc::kill(-self.pid, libc::SIGKILL);
            libc::kill(self.pid, libc::SIGKILL);
        }
    }

    fn wait_exit(&mut self) -> ExitStatus {
        match self.exit.wait() {
            Ok(raw) => exit_status(raw),
            // The reaper never drops a registered child; if its pipe breaks, say "killed".
            Err(_) => ExitStatus::Signal(libc::SIGKILL),
        }
    }

    fn input_fd(&self) -> Option<RawFd> {
        match (&self.input, &self.pty) {
            (Input::Pipe(f), _) => Some(f.as_raw_fd()),
            (Input::Pty, Some(master)) => Some(master.as_raw_fd()),
            _ => None,
        }
    }

    /// The stream broke or misbehaved: nobody can see the process any more, so end it.
    fn abandon(&mut self, why: &dyn std::fmt::Display) {
        if self.stream_open {
            eprintln!("skiff-init: session of pid {} ends: {why}", self.pid);
            self.stream_open = false;
            self.kill();
        }
    }

    fn send(&mut self, message: &Message) {
        if self.stream_open {
            if let Err(e) = write_message(self.stream, message) {
                self.abandon(&e);
            }
        }
    }

    fn serve(&mut self) -> Result<ExitStatus, SessionError> {
        let mut buf = vec![0u8; DATA_CHUNK];
        loop {
            let mut fds = Vec::with_capacity(5);
            fds.push(poll_fd(self.exit.fd().as_raw_fd(), libc::POLLIN));
            let stream_slot = (self.stream_open
                && self.input_buf.len() < STDIN_BUFFER_LIMIT
                && self.decoder.wants_input())
            .then(|| {
                fds.push(poll_fd(self.stream.as_fd().as_raw_fd(), libc::POLLIN));
                fds.len() - 1
            });
            let input_slot = match self.input_fd() {
                Some(fd) if !self.input_buf.is_empty() => {
                    fds.push(poll_fd(fd, libc::POLLOUT));
                    Some(fds.len() - 1)
                }
                _ => None,
            };
            let first_output = fds.len();
            for (fd, _) in &self.outputs {
                fds.push(poll_fd(*fd, libc::POLLIN));
            }
            // SAFETY: fds is a valid array of pollfd.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                self.kill();
                return Err(SessionError::Poll(err));
            }
            // Output first, so nothing the child wrote before exiting is lost.
            let mut closed = Vec::new();
            for (i, pfd) in fds[first_output..].iter().enumerate() {
                if pfd.revents != 0 && !self.forward_output(i, &mut buf) {
                    closed.push(i);
                }
            }
            for i in closed.into_iter().rev() {
                self.outputs.remove(i);
            }
            if input_slot.is_some_and(|i| fds[i].revents != 0) {
                self.flush_input();
            }
            if stream_slot.is_some_and(|i| fds[i].revents != 0) {
                self.read_stream(&mut buf);
            }
            if fds[0].revents != 0 {
                let status = self.wait_exit();
                self.drain_outputs(&mut buf);
                return Ok(status);
            }
        }
    }

    /// Reads once from output `index`; false when it reached its end.
    fn forward_output(&mut self, index: usize, buf: &mut [u8]) -> bool {
        let (fd, is_stderr) = self.outputs[index];
        match raw_read(fd, buf) {
            Ok(0) => false,
            Ok(n) => {
                let data = buf[..n].to_vec();
                self.send(&if is_stderr {
                    Message::Stderr(data)
                } else {
                    Message::Stdout(data)
                });
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
            // EIO: the pty's other side is closed for good.
            Err(_) => false,
        }
    }

    /// After the exit: forward what the child left in its pipes (or pty).
    fn drain_outputs(&mut self, buf: &mut [u8]) {
        let pty = self.pty.is_some();
        let deadline = Instant::now() + PTY_DRAIN_LIMIT;
        for index in (0..self.outputs.len()).rev() {
            let fd = self.outputs[index].0;
            loop {
                if pty {
                    let mut pfd = [poll_fd(fd, libc::POLLIN)];
                    // SAFETY: valid single pollfd.
                    let ready = unsafe { libc::poll(pfd.as_mut_ptr(), 1, PTY_DRAIN_IDLE_MS) };
                    if ready <= 0 || Instant::now() > deadline {
                        break;
                    }
                }
                match raw_read(fd, buf) {
                    Ok(n) if n > 0 => {
                        let data = buf[..n].to_vec();
                        let is_stderr = self.outputs[index].1;
                        self.send(&if is_stderr {
                            Message::Stderr(data)
                        } else {
                            Message::Stdout(data)
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // EOF, EAGAIN (a background job still holds the pipe), EIO: done.
                    _ => break,
                }
            }
        }
    }

    fn read_stream(&mut self, buf: &mut [u8]) {
        let result = self.stream.read(buf);
        match result {
            Ok(0) => {
                let why = match self.decoder.finish() {
                    Err(e) => e.to_string(),
                    Ok(()) => "the host closed the stream".to_string(),
                };
                self.abandon(&why);
            }
            Ok(n) => {
                self.decoder.push(&buf[..n]);
                loop {
                    match self.decoder.next_message() {
                        Ok(Some(message)) => self.handle(message),
                        Ok(None) => break,
                        Err(e) => {
                            self.abandon(&e);
                            break;
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => self.abandon(&e),
        }
    }

    fn handle(&mut self, message: Message) {
        match message {
            Message::Stdin(data) => {
                if !matches!(self.input, Input::Closed) && !self.input_eof {
                    self.input_buf.extend_from_slice(&data);
                }
            }
            Message::StdinEof => {
                self.input_eof = true;
                if matches!(self.input, Input::Pty) {
                    // End of input on a terminal is the EOF character (^D in canonical mode).
                    self.input_buf.push(0x04);
                }
                self.close_input_if_done();
            }
            Message::Signal(s) if (1..=64).contains(&s.signal) => {
                // SAFETY: plain kill(2) of our own child.
                unsafe { libc::kill(self.pid, s.signal) };
            }
            Message::Resize(size) => {
                if let Some(master) = &self.pty {
                    let _ = process::set_window_size(master, size);
                }
            }
            other => {
                let why = format!("unexpected {} message from the host", other.kind());
                self.abandon(&why);
            }
        }
    }

    fn flush_input(&mut self) {
        let Some(fd) = self.input_fd() else {
            self.input_buf.clear();
            return;
        };
        // SAFETY: writes from a valid buffer; the descriptor is non-blocking.
        let n = unsafe { libc::write(fd, self.input_buf.as_ptr().cast(), self.input_buf.len()) };
        if n >= 0 {
            self.input_buf.drain(..n as usize);
        } else {
            let err = io::Error::last_os_error();
            if !matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) {
                // EPIPE: the child closed its stdin; what it did not read is dropped.
                self.input_buf.clear();
                self.input = Input::Closed;
            }
        }
        self.close_input_if_done();
    }

    fn close_input_if_done(&mut self) {
        if self.input_eof && self.input_buf.is_empty() && matches!(self.input, Input::Pipe(_)) {
            self.input = Input::Closed;
        }
    }
}
