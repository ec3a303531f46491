//! One vsock stream between a guest socket and a host Unix socket: its state, the credit both
//! sides grant each other, and the packets it owes the guest.
//!
//! Flow control, guest → host: we grant the guest `CONN_BUF_SIZE` bytes. What the host socket
//! does not take at once waits in `to_host`; `fwd_cnt` counts what the host has taken, so the
//! guest never has more than `CONN_BUF_SIZE` bytes in flight and a guest that sends more than its
//! credit is reset. Host → guest: we read from the host socket only as much as the guest's last
//! advertised `buf_alloc`/`fwd_cnt` allow, and only while it has receive buffers; the rest stays
//! in the host socket, which pushes back on the host writer.

use std::io::{self, ErrorKind, Write};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::net::UnixStream;

use virtio_vsock::packet::VsockPacket;
use vm_memory::bitmap::BitmapSlice;
use vm_memory::{ReadVolatile, VolatileMemoryError, VolatileSlice, WriteVolatile};

use super::proto::{
    ConnKey, Reply, OP_CREDIT_REQUEST, OP_CREDIT_UPDATE, OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW,
    OP_SHUTDOWN, SHUTDOWN_RCV, SHUTDOWN_SEND,
};

/// The receive buffer we grant the guest per connection.
pub(crate) const CONN_BUF_SIZE: u32 = 256 * 1024;
/// Tell the guest about freed buffer space once this much has been forwarded unannounced.
const CREDIT_UPDATE_THRESHOLD: u32 = CONN_BUF_SIZE / 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Host-initiated: the guest has not answered our REQUEST yet.
    Connecting,
    Established,
    /// Done; only the packets still owed (an RST) remain to be sent.
    Closed,
}

/// Packets owed to the guest, sent as receive buffers become free.
#[derive(Debug, Default, Clone, Copy)]
struct Owed {
    request: bool,
    response: bool,
    rst: bool,
    credit_update: bool,
}

/// What the guest's packet carried, beyond addressing.
pub(crate) struct GuestPacket<'a, B: BitmapSlice> {
    pub(crate) op: u16,
    pub(crate) flags: u32,
    pub(crate) buf_alloc: u32,
    pub(crate) fwd_cnt: u32,
    pub(crate) data: Option<&'a VolatileSlice<'a, B>>,
}

pub(crate) struct Connection {
    key: ConnKey,
    stream: UnixStream,
    state: State,
    owed: Owed,
    /// Guest data the host socket has not taken yet, from `to_host_start` on.
    to_host: Vec<u8>,
    to_host_start: usize,
    /// Bytes received from the guest / forwarded to the host / last announced as forwarded.
    recv_cnt: Wrapping<u32>,
    fwd_cnt: Wrapping<u32>,
    announced_fwd_cnt: Wrapping<u32>,
    /// Bytes sent to the guest, and the guest's receive buffer as it last described it.
    sent_cnt: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    /// We asked the guest for credit and wait for its update.
    credit_requested: bool,
    /// Shutdown flags the guest announced, those we owe it, and those we announced.
    peer_shutdown: u32,
    owed_shutdown: u32,
    our_shutdown: u32,
    host_readable: bool,
    host_writable: bool,
    host_eof: bool,
    host_write_shut: bool,
}

impl Connection {
    /// A host client asked to connect to guest port `key.peer_port`: we owe the guest a REQUEST.
    pub(crate) fn host_initiated(key: ConnKey, stream: UnixStream) -> Connection {
        let mut conn = Connection::new(key, stream, State::Connecting);
        conn.owed.request = true;
        conn
    }

    /// The guest's REQUEST reached a host listener: we owe the guest a RESPONSE.
    pub(crate) fn guest_initiated(
        key: ConnKey,
        stream: UnixStream,
        peer_buf_alloc: u32,
        peer_fwd_cnt: u32,
    ) -> Connection {
        let mut conn = Connection::new(key, stream, State::Established);
        conn.owed.response = true;
        conn.peer_buf_alloc = peer_buf_alloc;
        conn.peer_fwd_cnt = Wrapping(peer_fwd_cnt);
        conn
    }

    fn new(key: ConnKey, stream: UnixStream, state: State) -> Connection {
        Connection {
            key,
            stream,
            state,
            owed: Owed::default(),
            to_host: Vec::new(),
            to_host_start: 0,
            recv_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            announced_fwd_cnt: Wrapping(0),
            sent_cnt: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            credit_requested: false,
            peer_shutdown: 0,
            owed_shutdown: 0,
            our_shutdown: 0,
            // Bytes may have arrived before we watched the socket; a read finds out.
            host_readable: true,
            host_writable: true,
            host_eof: false,
            host_write_shut: false,
        }
    }

    pub(crate) fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Gone for good: nothing more to send and nothing more to receive.
    pub(crate) fn is_finished(&self) -> bool {
        self.state == State::Closed && !self.owed.rst
    }

    /// Ends the connection with an RST to the guest.
    pub(crate) fn reset(&mut self) {
        self.state = State::Closed;
        self.owed = Owed {
            rst: true,
            ..Owed::default()
        };
    }

    /// Ends the connection without telling the guest (it reset it, or never knew of it).
    fn forget(&mut self) {
        self.state = State::Closed;
        self.owed = Owed::default();
    }

    /// Handles a packet the guest sent on this connection.
    pub(crate) fn on_guest_packet<B: BitmapSlice>(&mut self, pkt: GuestPacket<'_, B>) {
        if self.state == State::Closed {
            return;
        }
        // Every packet carries the sender's current receive buffer state.
        self.peer_buf_alloc = pkt.buf_alloc;
        self.peer_fwd_cnt = Wrapping(pkt.fwd_cnt);
        match (self.state, pkt.op) {
            (_, OP_RST) => self.forget(),
            (State::Connecting, OP_RESPONSE) => self.accept_response(),
            (State::Established, OP_RW) => self.take_guest_data(pkt.data),
            (State::Established, OP_CREDIT_UPDATE) => self.credit_requested = false,
            (State::Established, OP_CREDIT_REQUEST) => self.owed.credit_update = true,
            (State::Established, OP_SHUTDOWN) => {
                self.peer_shutdown |= pkt.flags & (SHUTDOWN_RCV | SHUTDOWN_SEND);
                self.flush_to_host();
            }
            // Anything else is a protocol violation.
            _ => self.reset(),
        }
    }

    /// The guest accepted a host-initiated connection: tell the host client, Firecracker-style.
    fn accept_response(&mut self) {
        self.state = State::Established;
        let line = format!("OK {}\n", self.key.local_port);
        // A fresh socket's send buffer takes a few bytes at once; if not, the client is broken.
        if !matches!(self.stream.write(line.as_bytes()), Ok(n) if n == line.len()) {
            self.reset();
        }
    }

    fn take_guest_data<B: BitmapSlice>(&mut self, data: Option<&VolatileSlice<'_, B>>) {
        let Some(data) = data else {
            return;
        };
        if self.peer_shutdown & SHUTDOWN_SEND != 0 || self.host_write_shut {
            self.reset();
            return;
        }
        let buffered = self.recv_cnt - self.fwd_cnt;
        if data.len() as u64 > u64::from(CONN_BUF_SIZE - buffered.0.min(CONN_BUF_SIZE)) {
            tracing::debug!(?self.key, "guest sent beyond its credit; resetting");
            self.reset();
            return;
        }
        self.recv_cnt += Wrapping(data.len() as u32);
        let mut written = 0;
        if self.to_host_pending() == 0 && self.host_writable {
            let result = self.stream.write_volatile(data).map_err(io_error);
            let Some(n) = self.host_took(result) else {
                return;
            };
            written = n;
            self.fwd_cnt += Wrapping(n as u32);
        }
        if written < data.len() {
            let rest = data.len() - written;
            let old = self.to_host.len();
            self.to_host.resize(old + rest, 0);
            match data.subslice(written, rest) {
                Ok(tail) => {
                    tail.copy_to(&mut self.to_host[old..]);
                }
                Err(_) => {
                    self.reset();
                    return;
                }
            }
        }
        self.after_forwarding();
    }

    fn to_host_pending(&self) -> usize {
        self.to_host.len() - self.to_host_start
    }

    /// Sends buffered guest data to the host socket as far as it takes it.
    pub(crate) fn flush_to_host(&mut self) {
        while self.to_host_pending() > 0 && self.host_writable {
            let result = self.stream.write(&self.to_host[self.to_host_start..]);
            let Some(n) = self.host_took(result) else {
                return;
            };
            self.to_host_start += n;
            self.fwd_cnt += Wrapping(n as u32);
        }
        self.after_forwarding();
    }

    /// How many bytes a write to the host socket took (0 if it would block), or None once a
    /// failed write has reset the connection.
    fn host_took(&mut self, result: io::Result<usize>) -> Option<usize> {
        match result {
            Ok(n) => Some(n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                self.host_writable = false;
                Some(0)
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => Some(0),
            Err(e) => {
                tracing::debug!(?self.key, "host socket write failed: {e}");
                self.reset();
                None
            }
        }
    }

    /// Bookkeeping once data reached the host: free the buffer, announce credit, and carry out a
    /// guest shutdown that was waiting for the buffer to drain.
    fn after_forwarding(&mut self) {
        if self.state == State::Closed {
            return;
        }
        if self.to_host_pending() == 0 {
            // Memory only while a host peer is slow.
            self.to_host = Vec::new();
            self.to_host_start = 0;
        } else if self.to_host_start > self.to_host.len() / 2 {
            self.to_host.drain(..self.to_host_start);
            self.to_host_start = 0;
        }
        if (self.fwd_cnt - self.announced_fwd_cnt).0 >= CREDIT_UPDATE_THRESHOLD {
            self.owed.credit_update = true;
        }
        if self.to_host_pending() > 0 {
            return;
        }
        if self.peer_shutdown & SHUTDOWN_SEND != 0 && !self.host_write_shut {
            // Half-close: the host reads EOF but may still answer.
            let _ = self.stream.shutdown(Shutdown::Write);
            self.host_write_shut = true;
        }
        if self.peer_shutdown == SHUTDOWN_RCV | SHUTDOWN_SEND {
            // The guest closed its socket and waits for our RST to finish.
            self.reset();
        }
    }

    /// The host socket became readable/writable/hung up (edge-triggered).
    pub(crate) fn on_host_event(&mut self, readable: bool, writable: bool, hung_up: bool) {
        if readable || hung_up {
            self.host_readable = true;
        }
        if writable {
            self.host_writable = true;
            self.flush_to_host();
        }
        if hung_up && self.state == State::Established {
            // The host peer is gone in both directions: it takes nothing more, and sends nothing
            // beyond what its socket still holds (announced once a read hits the end).
            self.host_write_shut = true;
            if self.host_eof {
                self.owed_shutdown |= SHUTDOWN_RCV;
            }
        }
    }

    /// How many bytes the guest can take now.
    fn peer_credit(&self) -> u32 {
        let in_flight = (self.sent_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    fn wants_host_data(&self) -> bool {
        self.state == State::Established
            && self.host_readable
            && !self.host_eof
            && self.peer_shutdown & SHUTDOWN_RCV == 0
    }

    /// Whether the connection has a packet for the guest if given a receive buffer.
    pub(crate) fn has_rx_work(&self) -> bool {
        let o = &self.owed;
        o.request
            || o.response
            || o.rst
            || o.credit_update
            || self.owed_shutdown & !self.our_shutdown != 0
            || (self.wants_host_data() && (self.peer_credit() > 0 || !self.credit_requested))
    }

    /// Fills the guest receive buffer `pkt` with the next packet this connection owes; returns
    /// the bytes used, or None if it had nothing after all (the buffer goes back to the ring).
    pub(crate) fn fill_rx<B: BitmapSlice>(
        &mut self,
        pkt: &mut VsockPacket<'_, B>,
        guest_cid: u64,
    ) -> Option<u32> {
        if self.owed.rst {
            self.owed.rst = false;
            return Some(Reply::rst(self.key).write_to(pkt, guest_cid, 0));
        }
        if self.owed.request {
            self.owed.request = false;
            return Some(self.control(pkt, guest_cid, OP_REQUEST, 0));
        }
        if self.owed.response {
            self.owed.response = false;
            return Some(self.control(pkt, guest_cid, OP_RESPONSE, 0));
        }
        if self.wants_host_data() {
            if self.peer_credit() == 0 {
                if !self.credit_requested {
                    // Ask once; its CREDIT_UPDATE clears the request.
                    self.credit_requested = true;
                    return Some(self.control(pkt, guest_cid, OP_CREDIT_REQUEST, 0));
                }
            } else if let Some(used) = self.read_host_data(pkt, guest_cid) {
                return Some(used);
            }
        }
        let unannounced = self.owed_shutdown & !self.our_shutdown;
        if unannounced != 0 && self.state == State::Established {
            self.our_shutdown |= unannounced;
            let flags = self.our_shutdown;
            return Some(self.control(pkt, guest_cid, OP_SHUTDOWN, flags));
        }
        if self.owed.credit_update {
            return Some(self.control(pkt, guest_cid, OP_CREDIT_UPDATE, 0));
        }
        None
    }

    /// Moves host bytes into the guest buffer; None if the host had none ready.
    fn read_host_data<B: BitmapSlice>(
        &mut self,
        pkt: &mut VsockPacket<'_, B>,
        guest_cid: u64,
    ) -> Option<u32> {
        let room = pkt.data_slice().map_or(0, |d| d.len());
        let max = room.min(self.peer_credit() as usize);
        let buf = pkt.data_slice()?.subslice(0, max).ok()?;
        match read_some(&mut self.stream, buf) {
            Ok(0) => {
                // The host will send no more; if it is gone entirely it takes no more either.
                self.host_eof = true;
                self.owed_shutdown |= SHUTDOWN_SEND;
                if self.host_write_shut {
                    self.owed_shutdown |= SHUTDOWN_RCV;
                }
                None
            }
            Ok(n) => {
                self.sent_cnt += Wrapping(n as u32);
                Some(self.header(pkt, guest_cid, OP_RW, 0, n as u32))
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                self.host_readable = false;
                None
            }
            Err(e) => {
                tracing::debug!(?self.key, "host socket read failed: {e}");
                self.reset();
                self.owed.rst = false;
                Some(Reply::rst(self.key).write_to(pkt, guest_cid, 0))
            }
        }
    }

    fn control<B: BitmapSlice>(
        &mut self,
        pkt: &mut VsockPacket<'_, B>,
        guest_cid: u64,
        op: u16,
        flags: u32,
    ) -> u32 {
        self.header(pkt, guest_cid, op, flags, 0)
    }

    /// Writes a header carrying our current credit, which makes any owed update redundant.
    fn header<B: BitmapSlice>(
        &mut self,
        pkt: &mut VsockPacket<'_, B>,
        guest_cid: u64,
        op: u16,
        flags: u32,
        len: u32,
    ) -> u32 {
        self.owed.credit_update = false;
        self.announced_fwd_cnt = self.fwd_cnt;
        Reply {
            key: self.key,
            op,
            flags,
            buf_alloc: CONN_BUF_SIZE,
            fwd_cnt: self.fwd_cnt.0,
        }
        .write_to(pkt, guest_cid, len)
    }
}

fn read_some<B: BitmapSlice>(
    stream: &mut UnixStream,
    mut buf: VolatileSlice<'_, B>,
) -> io::Result<usize> {
    loop {
        match stream.read_volatile(&mut buf).map_err(io_error) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn io_error(e: VolatileMemoryError) -> io::Error {
    match e {
        VolatileMemoryError::IOError(e) => e,
        other => io::Error::other(other),
    }
}
