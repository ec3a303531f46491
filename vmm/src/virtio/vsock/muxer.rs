//! The Unix-socket backend (Firecracker's convention): host clients connect to one listening
//! socket and ask for a guest port with `CONNECT <port>\n`; guest connections to host port P go
//! to the Unix socket `<path>_P`. The muxer owns the connection table, watches every host socket
//! with one edge-triggered epoll set, and decides which connection fills the next guest receive
//! buffer (round robin, so one busy or stuck peer cannot starve the others).

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io::{self, ErrorKind, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use virtio_vsock::packet::VsockPacket;
use vm_memory::bitmap::BitmapSlice;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::connection::{Connection, GuestPacket};
use super::proto::{ConnKey, Reply, HOST_CID, OP_REQUEST, OP_RST, TYPE_STREAM};

/// Epoll token of the listening socket; tokens below `FIRST_FD_TOKEN` are the worker's.
pub(crate) const LISTENER_TOKEN: u64 = 8;
const FIRST_FD_TOKEN: u64 = 16;
/// Open connections at most (each may buffer up to `CONN_BUF_SIZE` for a slow host peer).
const MAX_CONNECTIONS: usize = 256;
/// Host clients that have connected but not yet said which port they want.
const MAX_PENDING_CLIENTS: usize = 64;
/// Resets for packets that name no connection, waiting for receive buffers.
const MAX_ORPHAN_RSTS: usize = 256;
/// Longest acceptable `CONNECT <port>\n` line.
const MAX_CONNECT_LINE: usize = 32;
/// Host ports we pick for host-initiated connections start here (as Firecracker's do).
const FIRST_LOCAL_PORT: u32 = 1 << 30;

struct Entry {
    conn: Connection,
    token: u64,
    /// Already in `rx_ready`.
    queued: bool,
}

pub(crate) struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    epoll: Epoll,
    listener: UnixListener,
    pending: HashMap<u64, UnixStream>,
    conns: HashMap<ConnKey, Entry>,
    tokens: HashMap<u64, ConnKey>,
    next_token: u64,
    next_local_port: u32,
    orphan_rsts: VecDeque<ConnKey>,
    rx_ready: VecDeque<ConnKey>,
}

impl Muxer {
    /// Listens on `uds_path` for host clients, which must not exist yet.
    pub(crate) fn new(guest_cid: u64, uds_path: &Path) -> io::Result<Muxer> {
        let listener = UnixListener::bind(uds_path)?;
        // Whoever connects here can run commands in the guest: the owner only, whatever the
        // process umask (the file server clears it).
        std::fs::set_permissions(uds_path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            listener.as_raw_fd(),
            EpollEvent::new(EventSet::IN, LISTENER_TOKEN),
        )?;
        Ok(Muxer {
            guest_cid,
            uds_path: uds_path.to_owned(),
            epoll,
            listener,
            pending: HashMap::new(),
            conns: HashMap::new(),
            tokens: HashMap::new(),
            next_token: FIRST_FD_TOKEN,
            next_local_port: FIRST_LOCAL_PORT,
            orphan_rsts: VecDeque::new(),
            rx_ready: VecDeque::new(),
        })
    }

    /// The epoll set the worker waits on; it adds its own sources with tokens below 8.
    pub(crate) fn epoll(&self) -> &Epoll {
        &self.epoll
    }

    /// Drops every connection (the driver was reset: the guest's sockets are gone).
    pub(crate) fn reset(&mut self) {
        for (_, entry) in self.conns.drain() {
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                entry.conn.stream().as_raw_fd(),
                EpollEvent::default(),
            );
        }
        for (_, stream) in self.pending.drain() {
            let _ = self.epoll.ctl(
                ControlOperation::Delete,
                stream.as_raw_fd(),
                EpollEvent::default(),
            );
        }
        self.tokens.clear();
        self.orphan_rsts.clear();
        self.rx_ready.clear();
    }

    /// Handles readiness of the listener or a host socket.
    pub(crate) fn on_fd_event(&mut self, token: u64, events: EventSet) {
        if token == LISTENER_TOKEN {
            self.accept_clients();
        } else if self.pending.contains_key(&token) {
            self.read_connect_line(token);
        } else if let Some(&key) = self.tokens.get(&token) {
            if let Some(entry) = self.conns.get_mut(&key) {
                let hung_up = events.intersects(EventSet::HANG_UP | EventSet::ERROR);
                entry.conn.on_host_event(
                    events.contains(EventSet::IN),
                    events.contains(EventSet::OUT),
                    hung_up,
                );
            }
            self.tend(key);
        }
    }

    fn accept_clients(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("vsock: accepting a host client failed: {e}");
                    return;
                }
            };
            if self.pending.len() >= MAX_PENDING_CLIENTS || stream.set_nonblocking(true).is_err() {
                continue; // dropped: closed
            }
            let token = self.take_token();
            // Edge-triggered: a partial line stays in the socket (we only peek) and must not
            // wake us again until more arrives.
            let event = EpollEvent::new(
                EventSet::IN | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED,
                token,
            );
            if self
                .epoll
                .ctl(ControlOperation::Add, stream.as_raw_fd(), event)
                .is_ok()
            {
                self.pending.insert(token, stream);
            }
        }
    }

    fn take_token(&mut self) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        token
    }

    /// Reads `CONNECT <port>\n` (exactly that line: bytes after it are stream data) and starts
    /// the connection; a client that says anything else is closed.
    fn read_connect_line(&mut self, token: u64) {
        let Some(stream) = self.pending.get(&token) else {
            return;
        };
        let mut peek = [0u8; MAX_CONNECT_LINE];
        // SAFETY: recv writes at most `peek.len()` bytes into `peek`.
        let n = unsafe {
            libc::recv(
                stream.as_raw_fd(),
                peek.as_mut_ptr().cast(),
                peek.len(),
                libc::MSG_PEEK,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) {
                return;
            }
        }
        let peeked = &peek[..usize::try_from(n).unwrap_or(0)];
        let Some(end) = peeked.iter().position(|&b| b == b'\n') else {
            if n <= 0 || peeked.len() == MAX_CONNECT_LINE {
                self.drop_pending(token); // EOF, error, or no line in sight
            }
            return;
        };
        let port = parse_connect_line(&peeked[..end]);
        let Some(mut stream) = self.drop_pending(token) else {
            return;
        };
        let mut line = [0u8; MAX_CONNECT_LINE];
        if stream.read_exact(&mut line[..=end]).is_err() {
            return;
        }
        let Some(peer_port) = port else {
            tracing::debug!("vsock: host client sent no valid CONNECT line");
            return;
        };
        if self.conns.len() >= MAX_CONNECTIONS {
            tracing::warn!("vsock: too many connections; refusing a host client");
            return;
        }
        let key = self.free_local_key(peer_port);
        self.add_connection(key, Connection::host_initiated(key, stream));
    }

    fn drop_pending(&mut self, token: u64) -> Option<UnixStream> {
        let stream = self.pending.remove(&token)?;
        let _ = self.epoll.ctl(
            ControlOperation::Delete,
            stream.as_raw_fd(),
            EpollEvent::default(),
        );
        Some(stream)
    }

    fn free_local_key(&mut self, peer_port: u32) -> ConnKey {
        loop {
            let key = ConnKey {
                local_port: self.next_local_port,
                peer_port,
            };
            self.next_local_port = self
                .next_local_port
                .checked_add(1)
                .unwrap_or(FIRST_LOCAL_PORT);
            if !self.conns.contains_key(&key) {
                return key;
            }
        }
    }

    fn add_connection(&mut self, key: ConnKey, conn: Connection) {
        let token = self.take_token();
        let event = EpollEvent::new(
            EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED,
            token,
        );
        if let Err(e) = self
            .epoll
            .ctl(ControlOperation::Add, conn.stream().as_raw_fd(), event)
        {
            tracing::warn!("vsock: cannot watch a host socket: {e}");
            self.queue_orphan_rst(key);
            return;
        }
        self.tokens.insert(token, key);
        self.conns.insert(
            key,
            Entry {
                conn,
                token,
                queued: false,
            },
        );
        self.tend(key);
    }

    /// Queues the connection for the guest if it has something to send; removes it once done.
    fn tend(&mut self, key: ConnKey) {
        let Some(entry) = self.conns.get_mut(&key) else {
            return;
        };
        if entry.conn.is_finished() {
            if let Some(entry) = self.conns.remove(&key) {
                self.tokens.remove(&entry.token);
                let _ = self.epoll.ctl(
                    ControlOperation::Delete,
                    entry.conn.stream().as_raw_fd(),
                    EpollEvent::default(),
                );
            }
            return;
        }
        if !entry.queued && entry.conn.has_rx_work() {
            entry.queued = true;
            self.rx_ready.push_back(key);
        }
    }

    fn queue_orphan_rst(&mut self, key: ConnKey) {
        if self.orphan_rsts.len() < MAX_ORPHAN_RSTS {
            self.orphan_rsts.push_back(key);
        } else {
            tracing::debug!("vsock: too many unanswered resets; dropping one");
        }
    }

    /// Handles one packet the guest sent.
    pub(crate) fn on_guest_packet<B: BitmapSlice>(&mut self, pkt: &VsockPacket<'_, B>) {
        if pkt.src_cid() != self.guest_cid {
            tracing::debug!(
                src = pkt.src_cid(),
                "vsock: dropped a packet with a spoofed source"
            );
            return;
        }
        let key = ConnKey {
            local_port: pkt.dst_port(),
            peer_port: pkt.src_port(),
        };
        if pkt.dst_cid() != HOST_CID || pkt.type_() != TYPE_STREAM {
            if pkt.op() != OP_RST {
                self.queue_orphan_rst(key);
            }
            return;
        }
        if let Some(entry) = self.conns.get_mut(&key) {
            entry.conn.on_guest_packet(GuestPacket {
                op: pkt.op(),
                flags: pkt.flags(),
                buf_alloc: pkt.buf_alloc(),
                fwd_cnt: pkt.fwd_cnt(),
                data: pkt.data_slice(),
            });
            self.tend(key);
            return;
        }
        match pkt.op() {
            OP_REQUEST => self.connect_to_host(key, pkt.buf_alloc(), pkt.fwd_cnt()),
            OP_RST => {}
            _ => self.queue_orphan_rst(key),
        }
    }

    /// The guest connects to host port `key.local_port`: forward to `<uds_path>_<port>`.
    fn connect_to_host(&mut self, key: ConnKey, buf_alloc: u32, fwd_cnt: u32) {
        if self.conns.len() >= MAX_CONNECTIONS {
            tracing::warn!(
                "vsock: too many connections; refusing guest port {}",
                key.peer_port
            );
            self.queue_orphan_rst(key);
            return;
        }
        let mut path = OsString::from(self.uds_path.as_os_str());
        path.push(format!("_{}", key.local_port));
        match connect_nonblocking(Path::new(&path)) {
            Ok(stream) => {
                let conn = Connection::guest_initiated(key, stream, buf_alloc, fwd_cnt);
                self.add_connection(key, conn);
            }
            Err(e) => {
                tracing::debug!("vsock: nobody takes host port {}: {e}", key.local_port);
                self.queue_orphan_rst(key);
            }
        }
    }

    /// Whether some packet waits for a guest receive buffer.
    pub(crate) fn has_rx_work(&self) -> bool {
        !self.orphan_rsts.is_empty() || !self.rx_ready.is_empty()
    }

    /// Fills one guest receive buffer; None if nothing was ready after all.
    pub(crate) fn fill_rx<B: BitmapSlice>(&mut self, pkt: &mut VsockPacket<'_, B>) -> Option<u32> {
        if let Some(key) = self.orphan_rsts.pop_front() {
            return Some(Reply::rst(key).write_to(pkt, self.guest_cid, 0));
        }
        // One pass over the ready connections at most.
        for _ in 0..self.rx_ready.len() {
            let key = self.rx_ready.pop_front()?;
            let Some(entry) = self.conns.get_mut(&key) else {
                continue;
            };
            entry.queued = false;
            let used = entry.conn.fill_rx(pkt, self.guest_cid);
            self.tend(key);
            if used.is_some() {
                return used;
            }
        }
        None
    }
}

impl Drop for Muxer {
    fn drop(&mut self) {
        // The socket file would outlive us and make the next bind on this path fail.
        let _ = std::fs::remove_file(&self.uds_path);
    }
}

/// `CONNECT <port>` (without the newline) → the port.
fn parse_connect_line(line: &[u8]) -> Option<u32> {
    let line = std::str::from_utf8(line).ok()?;
    let port = line.strip_prefix("CONNECT ")?.trim_end_matches('\r');
    port.parse().ok()
}

/// Connects without ever blocking: a listener whose backlog is full refuses (EAGAIN) instead
/// of stalling every other connection.
fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            "socket path too long",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    // SAFETY: socket takes no pointers; we own the returned descriptor.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: addr is a valid sockaddr_un and len does not exceed its size.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixStream::from(fd))
}
