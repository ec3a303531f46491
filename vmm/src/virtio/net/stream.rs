//! A net device's host side on a stream socket in QEMU's `-netdev stream` framing, which passt
//! speaks: every Ethernet frame preceded by its length as a 4-byte big-endian number, with no
//! vnet header (so no offloads: the guest is offered none on this backend).
//!
//! The peer is hostile like the guest. A frame may arrive over any number of reads and several
//! may come in one: bytes wait in a fixed buffer until a frame is whole. A length longer than the
//! longest frame cannot be skipped safely (the framing is lost), so receiving stops for good; a
//! length shorter than an Ethernet header yields a frame the worker drops. Writes may be partial:
//! the rest of the frame waits in a buffer of one frame's size, and further frames are refused
//! (back-pressure to the guest's transmit queue) until it is out.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use libc::c_uint;

use super::backend::{Backend, Recv, Sent};
use super::{NetError, MAX_FRAME_LEN, VNET_HDR_LEN};

/// Bytes of the length before each frame.
const LEN_PREFIX: usize = 4;
/// The longest frame on the stream: the longest the device carries, less the vnet header.
pub(crate) const MAX_STREAM_FRAME: usize = MAX_FRAME_LEN - VNET_HDR_LEN;
/// The receive buffer: room for two of the longest frames with their lengths, so one read can
/// take the end of one frame and the whole of the next.
const RX_BUF_LEN: usize = 2 * (LEN_PREFIX + MAX_STREAM_FRAME);

/// A connected stream socket, non-blocking and close-on-exec.
pub(crate) struct Stream {
    sock: OwnedFd,
    name: String,
    state: Mutex<State>,
}

struct State {
    rx: Box<[u8]>,
    /// Received bytes not yet handed over: `rx[rx_start..rx_end]`.
    rx_start: usize,
    rx_end: usize,
    /// The unwritten rest of the last frame sent, from `tx_sent` on.
    tx: Vec<u8>,
    tx_sent: usize,
    /// Sending failed for good: every frame is lost from now on.
    tx_broken: bool,
}

impl Stream {
    /// Connects to the Unix stream socket at `path` (passt's `--socket`).
    pub(crate) fn connect(path: &Path) -> Result<Stream, NetError> {
        let fail = |source| NetError::Connect {
            path: path.to_path_buf(),
            source,
        };
        let sock = UnixStream::connect(path).map_err(fail)?;
        sock.set_nonblocking(true).map_err(fail)?;
        Ok(Stream::new(
            sock.into(),
            format!("stream {}", path.display()),
        ))
    }

    /// Takes over a connected, non-blocking stream socket.
    pub(crate) fn new(sock: OwnedFd, name: String) -> Stream {
        Stream {
            sock,
            name,
            state: Mutex::new(State {
                rx: vec![0; RX_BUF_LEN].into_boxed_slice(),
                rx_start: 0,
                rx_end: 0,
                tx: Vec::with_capacity(LEN_PREFIX + MAX_STREAM_FRAME),
                tx_sent: 0,
                tx_broken: false,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // One worker at a time uses it; a worker that panicked left consistent buffers behind.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl Backend for Stream {
    fn offloads(&self) -> bool {
        false
    }

    fn set_offload(&self, _flags: c_uint) -> io::Result<()> {
        // No offloads are offered, so none can be accepted.
        Ok(())
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn recv(&self, buf: &mut [u8]) -> Recv {
        let fd = self.sock.as_raw_fd();
        let mut state = self.state();
        let s = &mut *state;
        loop {
            let have = &s.rx[s.rx_start..s.rx_end];
            if let Some(prefix) = have.first_chunk::<LEN_PREFIX>() {
                let len = u32::from_be_bytes(*prefix) as usize;
                let room = buf.len().saturating_sub(VNET_HDR_LEN);
                if len > MAX_STREAM_FRAME.min(room) {
                    // Left in the buffer: every later call ends here too.
                    return Recv::Broken(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "the peer announced a {len}-byte frame (at most {} fit); the framing \
                             cannot be trusted any more",
                            MAX_STREAM_FRAME.min(room)
                        ),
                    ));
                }
                if let Some(frame) = have.get(LEN_PREFIX..LEN_PREFIX + len) {
                    buf[..VNET_HDR_LEN].fill(0);
                    buf[VNET_HDR_LEN..VNET_HDR_LEN + len].copy_from_slice(frame);
                    s.rx_start += LEN_PREFIX + len;
                    if s.rx_start == s.rx_end {
                        (s.rx_start, s.rx_end) = (0, 0);
                    }
                    return Recv::Frame(VNET_HDR_LEN + len);
                }
            }
            // A frame is not whole yet: move its start to the front (once: it stays there until
            // it is whole), so the buffer has room for the rest of it.
            if s.rx_start > 0 {
                s.rx.copy_within(s.rx_start..s.rx_end, 0);
                (s.rx_start, s.rx_end) = (0, s.rx_end - s.rx_start);
            }
            let free = &mut s.rx[s.rx_end..];
            // SAFETY: `free` is valid writable memory of the length passed.
            let n = unsafe { libc::read(fd, free.as_mut_ptr().cast(), free.len()) };
            match usize::try_from(n) {
                Ok(0) => return Recv::Closed,
                Ok(n) => s.rx_end += n,
                Err(_) => {
                    let e = io::Error::last_os_error();
                    match e.kind() {
                        io::ErrorKind::Interrupted => {}
                        io::ErrorKind::WouldBlock => return Recv::Empty,
                        _ => return Recv::Broken(e),
                    }
                }
            }
        }
    }

    fn flush(&self) -> bool {
        let mut state = self.state();
        match state.flush(self.sock.as_raw_fd()) {
            Ok(done) => done,
            Err(e) => {
                tracing::debug!("virtio-net: {}: {e}; sending stops", self.name);
                true
            }
        }
    }

    fn send(&self, frame: &[u8]) -> Sent {
        let fd = self.sock.as_raw_fd();
        let mut state = self.state();
        let s = &mut *state;
        if s.tx_broken {
            return Sent::Lost(io::ErrorKind::NotConnected.into());
        }
        // What is left of the last frame goes first.
        match s.flush(fd) {
            Ok(true) => {}
            Ok(false) => return Sent::Busy,
            Err(e) => return Sent::Lost(e),
        }
        let payload = frame.get(VNET_HDR_LEN..).unwrap_or_default();
        if payload.len() > MAX_STREAM_FRAME {
            return Sent::Lost(io::ErrorKind::InvalidInput.into());
        }
        // Fits: at most MAX_STREAM_FRAME.
        let prefix = (payload.len() as u32).to_be_bytes();
        let written = match send_parts(fd, &[&prefix, payload]) {
            Ok(n) => n,
            Err(e) => {
                s.tx_broken = true;
                return Sent::Lost(e);
            }
        };
        if written < LEN_PREFIX + payload.len() {
            s.tx.extend_from_slice(&prefix);
            s.tx.extend_from_slice(payload);
            s.tx_sent = written;
        }
        Sent::Taken
    }
}

impl State {
    /// Writes the rest of the last frame as far as the socket takes it; true when none is left.
    /// An error breaks sending for good (the rest is dropped).
    fn flush(&mut self, fd: i32) -> io::Result<bool> {
        while self.tx_sent < self.tx.len() {
            match send_parts(fd, &[&self.tx[self.tx_sent..]]) {
                Ok(0) => return Ok(false),
                Ok(n) => self.tx_sent += n,
                Err(e) => {
                    self.tx_broken = true;
                    self.tx.clear();
                    self.tx_sent = 0;
                    return Err(e);
                }
            }
        }
        self.tx.clear();
        self.tx_sent = 0;
        Ok(true)
    }
}

/// Writes as much of `parts` as the socket takes now, without SIGPIPE; 0 when it takes nothing.
fn send_parts(fd: i32, parts: &[&[u8]]) -> io::Result<usize> {
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; 2];
    for (slot, part) in iov.iter_mut().zip(parts) {
        *slot = libc::iovec {
            iov_base: part.as_ptr().cast_mut().cast(),
            iov_len: part.len(),
        };
    }
    // SAFETY: zeroed msghdr is a valid empty message; the fields set below point at `iov`.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = parts.len().min(iov.len());
    loop {
        // SAFETY: `msg` points at iovecs over memory borrowed for the call; sendmsg only reads it.
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
        if let Ok(n) = usize::try_from(n) {
            return Ok(n);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => return Ok(0),
            _ => return Err(e),
        }
    }
}
