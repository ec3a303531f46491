//! The vsock device against a fake guest driver on one side and real Unix sockets on the other.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::proto::*;
use super::VsockDevice;
use crate::virtio::test_driver::{counting_interrupt, guest_memory, Buf, DriverQueue};
use crate::virtio::{GuestMem, VirtioDevice};

const GUEST_CID: u64 = 3;
const WAIT: Duration = Duration::from_secs(5);
const RX_BUFFERS: usize = 8;
const RX_BASE: u64 = 0x10_0000;
const RX_SLOT: u64 = 0x2000;
const RX_DATA_LEN: u32 = 4096;
const TX_BASE: u64 = 0x80_0000;
const TX_SLOT: u64 = 0x2_0000;

/// A packet header as the guest reads and writes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Hdr {
    src_cid: u64,
    dst_cid: u64,
    src_port: u32,
    dst_port: u32,
    len: u32,
    type_: u16,
    op: u16,
    flags: u32,
    buf_alloc: u32,
    fwd_cnt: u32,
}

impl Hdr {
    /// A guest packet from guest port `src` to host port `dst`.
    fn guest(op: u16, src: u32, dst: u32) -> Hdr {
        Hdr {
            src_cid: GUEST_CID,
            dst_cid: HOST_CID,
            src_port: src,
            dst_port: dst,
            type_: TYPE_STREAM,
            op,
            buf_alloc: 64 * 1024,
            ..Hdr::default()
        }
    }

    fn to_bytes(self) -> Vec<u8> {
        let mut b = Vec::with_capacity(44);
        b.extend_from_slice(&self.src_cid.to_le_bytes());
        b.extend_from_slice(&self.dst_cid.to_le_bytes());
        b.extend_from_slice(&self.src_port.to_le_bytes());
        b.extend_from_slice(&self.dst_port.to_le_bytes());
        b.extend_from_slice(&self.len.to_le_bytes());
        b.extend_from_slice(&self.type_.to_le_bytes());
        b.extend_from_slice(&self.op.to_le_bytes());
        b.extend_from_slice(&self.flags.to_le_bytes());
        b.extend_from_slice(&self.buf_alloc.to_le_bytes());
        b.extend_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    fn from_bytes(b: &[u8]) -> Hdr {
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().expect("2 bytes"));
        Hdr {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }
}

/// The guest driver: a device activated on its three queues, with receive buffers posted.
struct Guest<'m> {
    dev: VsockDevice,
    rx: DriverQueue<'m>,
    tx: DriverQueue<'m>,
    _event: DriverQueue<'m>,
    rx_slots: HashMap<u16, u64>,
    next_rx_slot: u64,
    next_tx_slot: u64,
}

impl<'m> Guest<'m> {
    fn start(mem: &'m GuestMem, uds: &Path) -> Guest<'m> {
        let mut dev = VsockDevice::new(GUEST_CID, uds).expect("device");
        let rx = DriverQueue::new(mem, 0, 256);
        let tx = DriverQueue::new(mem, 0x1_0000, 256);
        let event = DriverQueue::new(mem, 0x2_0000, 256);
        let features = dev.device_features();
        dev.activate(
            mem.clone(),
            counting_interrupt(),
            vec![rx.active(), tx.active(), event.active()],
            features,
        )
        .expect("activate");
        let mut guest = Guest {
            dev,
            rx,
            tx,
            _event: event,
            rx_slots: HashMap::new(),
            next_rx_slot: 0,
            next_tx_slot: 0,
        };
        for _ in 0..RX_BUFFERS {
            guest.post_rx();
        }
        guest.rx.kick();
        guest
    }

    /// Offers one receive buffer: a header descriptor and a data descriptor, as Linux 6.1 does.
    fn post_rx(&mut self) {
        let addr = RX_BASE + (self.next_rx_slot % 64) * RX_SLOT;
        self.next_rx_slot += 1;
        let head = self.rx.offer(&[
            Buf::writable(addr, PKT_HEADER_LEN),
            Buf::writable(addr + 0x800, RX_DATA_LEN),
        ]);
        self.rx_slots.insert(head, addr);
    }

    /// Sends a packet in a header and a data descriptor and waits until the device took it.
    fn send(&mut self, hdr: Hdr, data: &[u8]) {
        let hdr = Hdr {
            len: data.len() as u32,
            ..hdr
        };
        let addr = TX_BASE + (self.next_tx_slot % 32) * TX_SLOT;
        self.next_tx_slot += 1;
        self.tx.write(addr, &hdr.to_bytes());
        if data.is_empty() {
            self.tx.offer(&[Buf::readable(addr, PKT_HEADER_LEN)]);
        } else {
            self.tx.write(addr + 0x100, data);
            self.tx.offer(&[
                Buf::readable(addr, PKT_HEADER_LEN),
                Buf::readable(addr + 0x100, data.len() as u32),
            ]);
        }
        self.tx.kick();
        self.tx.wait_used(WAIT).expect("tx buffer returned");
    }

    /// Offers raw buffers on the tx queue (for malformed packets) and waits until returned.
    fn send_raw(&mut self, bufs: &[Buf]) {
        self.tx.offer(bufs);
        self.tx.kick();
        self.tx.wait_used(WAIT).expect("tx buffer returned");
    }

    /// The next packet the device sent, within `timeout`; the buffer is re-posted.
    fn recv_within(&mut self, timeout: Duration) -> Option<(Hdr, Vec<u8>)> {
        let (head, used) = self.rx.wait_used(timeout)?;
        let addr = self
            .rx_slots
            .remove(&(head as u16))
            .expect("known rx buffer");
        let hdr = Hdr::from_bytes(&self.rx.read(addr, PKT_HEADER_LEN as usize));
        assert_eq!(used, PKT_HEADER_LEN + hdr.len, "used length vs header len");
        let data = self.rx.read(addr + 0x800, hdr.len as usize);
        self.post_rx();
        self.rx.kick();
        Some((hdr, data))
    }

    fn recv(&mut self) -> (Hdr, Vec<u8>) {
        self.recv_within(WAIT).expect("a packet from the device")
    }

    /// The next packet that is not a credit update (those may come at any time).
    fn recv_skipping_credit(&mut self) -> (Hdr, Vec<u8>) {
        loop {
            let (hdr, data) = self.recv();
            if hdr.op != OP_CREDIT_UPDATE {
                return (hdr, data);
            }
        }
    }

    /// A host client connects to guest `port`; returns the client and the host port the device
    /// picked, after the guest answered with a RESPONSE advertising `buf_alloc`.
    fn accept_host_client(&mut self, uds: &Path, port: u32, buf_alloc: u32) -> (UnixStream, u32) {
        let mut client = UnixStream::connect(uds).expect("connect to the vsock socket");
        client
            .write_all(format!("CONNECT {port}\n").as_bytes())
            .expect("write CONNECT");
        let (req, _) = self.recv();
        assert_eq!(req.op, OP_REQUEST);
        assert_eq!(
            (req.src_cid, req.dst_cid, req.dst_port),
            (HOST_CID, GUEST_CID, port)
        );
        assert_eq!(req.type_, TYPE_STREAM);
        let local = req.src_port;
        self.send(
            Hdr {
                buf_alloc,
                ..Hdr::guest(OP_RESPONSE, port, local)
            },
            &[],
        );
        let ok = read_line(&mut client);
        assert_eq!(ok, format!("OK {local}\n"));
        (client, local)
    }
}

const PKT_HEADER_LEN: u32 = 44;

fn read_line(s: &mut UnixStream) -> String {
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut line = Vec::new();
    let mut byte = [0u8];
    while line.last() != Some(&b'\n') {
        s.read_exact(&mut byte).expect("read a line byte");
        line.push(byte[0]);
    }
    String::from_utf8(line).expect("utf8 line")
}

fn read_exactly(s: &mut UnixStream, n: usize) -> Vec<u8> {
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).expect("read from the host socket");
    buf
}

fn uds_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("vsock.sock")
}

/// Path of the host listener for guest connections to host `port`.
fn port_path(uds: &Path, port: u32) -> PathBuf {
    PathBuf::from(format!("{}_{port}", uds.display()))
}

#[test]
fn config_space_holds_the_guest_cid_and_bad_cids_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = VsockDevice::new(42, &uds_in(&dir)).expect("device");
    assert_eq!(dev.device_type(), 19);
    assert_eq!(dev.queue_max_sizes().len(), 3);
    let mut cid = [0u8; 8];
    dev.read_config(0, &mut cid);
    assert_eq!(u64::from_le_bytes(cid), 42);
    for bad in [0, 1, 2, u64::from(u32::MAX), 1 << 40] {
        let path = dir.path().join(format!("bad{bad}"));
        assert!(VsockDevice::new(bad, &path).is_err(), "cid {bad} accepted");
    }
    // Only the owner may connect (it reaches the guest's exec service).
    let mode = std::fs::metadata(uds_in(&dir))
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The socket path is taken while the device lives, and freed when it goes.
    assert!(VsockDevice::new(5, &uds_in(&dir)).is_err());
    drop(dev);
    assert!(!uds_in(&dir).exists());
}

#[test]
fn host_connects_to_the_guest_and_data_flows_both_ways() {
    let dir = tempfile::tempdir().expect("tempdir");
    let uds = uds_in(&dir);
    let mem = guest_memory();
    let mut guest = Guest::start(&mem, &uds);
    let (mut client, local) = guest.accept_host_client(&uds, 1025, 64 * 1024);

    client.write_all(b"ping from host").expect("host write");
    let (hdr, data) = guest.recv_skipping_credit();
    assert_eq!(hdr.op, OP_RW);
    assert_eq!((hdr.src_port, hdr.dst_port), (local, 1025));
    assert_eq!(hdr.buf_alloc, 256 * 1024);
    assert_eq!(data, b"ping from host");

    guest.send(Hdr::guest(OP_RW, 1025, local), b"pong from guest");
    assert_eq!(read_exactly(&mut client, 15), b"pong from guest");

    // The guest resets: the host client sees the stream end.
    guest.send(Hdr::guest(OP_RST, 1025, local), &[]);
    let mut rest = Vec::new();
    client.set_read_timeout(Some(WAIT)).expect("timeout");
    assert_eq!(client.read_to_end(&mut rest).expect("EOF"), 0);
}

#[test]
fn a_refused_host_connect_closes_the_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let uds = uds_in(&dir);
    let mem = guest_memory();
    let mut guest = Guest::start(&mem, &uds);
    let mut client = UnixStream::connect(&uds).expect("connect");
    client.write_all(b"CONNECT 7777\n").expect("write");
    let (req, _) = guest.recv();
    assert_eq!(req.op, OP_REQUEST);
    guest.send(Hdr::guest(OP_RST, 7777, req.src_port), &[]);
    client.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut buf = Vec::new();
    assert_eq!(client.read_to_end(&mut buf).expect("closed"), 0);

    // A client that does not speak the protocol is closed too.
    let mut bad = UnixStream::connect(&uds).expect("connect");
    bad.write_all(b"HELLO\n").expect("write");
    bad.set_read_timeout(Some(WAIT)).expect("timeout");
    assert_eq!(bad.read_to_end(&mut buf).expect("closed"), 0);
    assert!(guest.recv_within(Duration::from_millis(100)).is_none());
}

#[test]
fn host_data_waits_for_guest_credit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let uds = uds_in(&dir);
    let mem = guest_memory();
    let mut guest = Guest::start(&mem, &uds);
    let (mut client, local) = guest.accept_host_client(&uds, 1025, 8);

    client
        .write_all(b"0123456789abcdefghij")
        .expect("host write");
    let (hdr, data) = guest.recv();
    assert_eq!((hdr.op, data.as_slice()), (OP_RW, &b"01234567"[..]));
    let (hdr, _) = guest.recv();
    assert_eq!(
        hdr.op, OP_CREDIT_REQUEST,
        "out of credit, the device asks for more"
    );
    assert!(
        guest.recv_within(Duration::from_millis(200)).is_none(),
        "no data beyond the guest's credit"
    );

    let update = |fwd_cnt| Hdr {
        buf_alloc: 8,
        fwd_cnt,
        ..Hdr::guest(OP_CREDIT_UPDATE, 1025, local)
    };
    guest.send(update(8), &[]);
    let (hdr, data) = guest.recv();
    assert_eq!((hdr.op, data.as_slice()), (OP_RW, &b"89abcdef"[..]));
    assert_eq!(guest.recv().0.op, OP_CREDIT_REQUEST, "out of credit again");
    guest.send(update(16), &[]);
    let (hdr, data) = guest.recv();
    assert_eq!((hdr.op, data.as_slice()), (OP_RW, &b"ghij"[..]));
}

#[test]
fn guest_connects_to_a_host_listener_with_half_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let uds = uds_in(&dir);
    let listener = UnixListener::bind(port_path(&uds, 1024)).expect("listen");
    let mem = guest_memory();
    let mut guest = Guest::start(&mem, &uds);

    guest.send(Hdr::guest(OP_REQUEST, 5000, 1024), &[]);
    let (hdr, _) = guest.recv();
    assert_eq!(hdr.op, OP_RESPONSE);
    assert_eq!(
        (hdr.src_cid, hdr.src_port, hdr.dst_cid, hdr.dst_port),
        (HOST_CID, 1024, GUEST_CID, 5000)
    );
    let (mut host, _) = listener.accept().expect("accept");

    guest.send(Hdr::guest(OP_RW, 5000, 1024), b"status: ready");
    assert_eq!(read_exactly(&mut host, 13), b"status: ready");

    // The guest is done sending: the host reads EOF but can still answer.
    guest.send(
        Hdr {
            flags: SHUTDOWN_SEND,
            ..Hdr::guest(OP_SHUTDOWN, 5000, 1024)
        },
        &[],
    );
    let mut rest = Vec::new();
    host.set_read_timeout(Some(WAIT)).expect("timeout");
    assert_eq!(host.read_to_end(&mut rest).expect("EOF"), 0);
    host.write_all(b"ack").expect("host still writes");
    let (hdr, data) = guest.recv_skipping_credit();
    assert_eq!((hdr.op, data.as_slice()), (OP_RW, &b"ack"[..]));

    // The host closes: the guest hears it will get nothing more.
    drop(host);
    let (hdr, _) = guest.recv_skipping_credit();
    assert_eq!(hdr.op, OP_SHUTDOWN);
    assert_ne!(hdr.flags & SHUTDOWN_SEND, 0);

    // The guest closes too and gets the RST that completes its close.
    guest.send(
        Hdr {
            flags: SHUTDOWN_SEND | SHUTDOWN_RCV,
            ..Hdr::guest(OP_SHUTDOWN, 5000, 1024)
        },
        &[],
    );
    let (hdr, _) = guest.recv_skipping_credit();
    assert_eq!((hdr.op, hdr.src_port, hdr.dst_port), (OP_RST, 1024, 5000));
}

#[test]
fn a_guest_connect_to_a_port_nobody_listens_on_is_reset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let uds = uds_in(&dir);
    let mem = guest_memory();
    let mut guest = Guest::start(&mem, &uds);
    guest.send(Hdr::guest(OP_REQUEST, 5001, 4242), &[]);
    let (hdr, _) = guest.recv();
    assert_eq!((hdr.op, hdr.src_port, hdr.dst_port), (OP_RST, 4242, 5001));
}

#[test]
fn malformed_packets_are_dropped_or_reset_and_the_device_keeps_working() {
    let dir = tempfile::tempdir().expect("tempdir");
    let uds = uds_in(&dir);
    let _listener = UnixListener::bind(port_path(&uds, 1024)).expect("listen");
    let mem = guest_memory();
    let mut guest = Guest::start(&mem, &uds);

    // A header descriptor shorter than a header: dropped.
    guest.send_raw(&[Buf::readable(TX_BASE, 10)]);
    // A header outside guest memory: dropped.
    guest.send_raw(&[Buf::readable(1 << 40, PKT_HEADER_LEN)]);
    // A header claiming more data than a packet may carry: dropped.
    let huge = Hdr {
        len: 1 << 20,
        ..Hdr::guest(OP_RW, 1, 2)
    };
    guest.tx.write(TX_BASE, &huge.to_bytes());
    guest.send_raw(&[
        Buf::readable(TX_BASE, PKT_HEADER_LEN),
        Buf::readable(TX_BASE + 0x100, 16),
    ]);
    // A data length larger than its descriptor: dropped.
    let short = Hdr {
        len: 100,
        ..Hdr::guest(OP_RW, 1, 2)
    };
    guest.tx.write(TX_BASE, &short.to_bytes());
    guest.send_raw(&[
        Buf::readable(TX_BASE, PKT_HEADER_LEN),
        Buf::readable(TX_BASE + 0x100, 10),
    ]);
    // A spoofed source CID: dropped silently.
    guest.send(
        Hdr {
            src_cid: 99,
            ..Hdr::guest(OP_REQUEST, 6000, 1024)
        },
        &[],
    );
    assert!(
        guest.recv_within(Duration::from_millis(100)).is_none(),
        "no answer to junk"
    );

    // Unknown op, unknown socket type, wrong destination CID, data for no connection: RST each.
    guest.send(Hdr::guest(99, 6001, 1024), &[]);
    guest.send(
        Hdr {
            type_: 2,
            ..Hdr::guest(OP_REQUEST, 6002, 1024)
        },
        &[],
    );
    guest.send(
        Hdr {
            dst_cid: 7,
            ..Hdr::guest(OP_REQUEST, 6003, 1024)
        },
        &[],
    );
    guest.send(Hdr::guest(OP_RW, 6004, 1024), b"stray");
    for port in 6001..=6004 {
        let (hdr, _) = guest.recv();
        assert_eq!((hdr.op, hdr.dst_port), (OP_RST, port));
    }

    // A REQUEST on an established connection is a protocol violation: RST.
    guest.send(Hdr::guest(OP_REQUEST, 6005, 1024), &[]);
    assert_eq!(guest.recv().0.op, OP_RESPONSE);
    guest.send(Hdr::guest(OP_REQUEST, 6005, 1024), &[]);
    assert_eq!(guest.recv_skipping_credit().0.op, OP_RST);

    // Still serving.
    guest.send(Hdr::guest(OP_REQUEST, 6006, 1024), &[]);
    assert_eq!(guest.recv().0.op, OP_RESPONSE);
}

#[test]
fn a_stalled_host_peer_bounds_buffering_and_does_not_block_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let uds = uds_in(&dir);
    let stalled_listener = UnixListener::bind(port_path(&uds, 1030)).expect("listen");
    let mem = guest_memory();
    let mut guest = Guest::start(&mem, &uds);

    guest.send(Hdr::guest(OP_REQUEST, 7000, 1030), &[]);
    assert_eq!(guest.recv().0.op, OP_RESPONSE);
    let (_stalled, _) = stalled_listener.accept().expect("accept");

    // The host never reads: the device takes what its socket and our buffer hold, then resets a
    // guest that keeps sending beyond its credit.
    let chunk = vec![0x5au8; 64 * 1024];
    let mut reset = false;
    for sent in 0..64 {
        guest.send(Hdr::guest(OP_RW, 7000, 1030), &chunk);
        if let Some((hdr, _)) = guest.recv_within(Duration::from_millis(20)) {
            if hdr.op == OP_RST {
                assert!(sent >= 4, "reset before the 256 KiB credit was used up");
                reset = true;
                break;
            }
        }
    }
    assert!(reset, "a guest overrunning its credit must be reset");

    // Meanwhile a host client talks to the guest as usual.
    let (mut client, local) = guest.accept_host_client(&uds, 1025, 64 * 1024);
    guest.send(Hdr::guest(OP_RW, 1025, local), b"still here");
    assert_eq!(read_exactly(&mut client, 10), b"still here");
}

#[test]
fn a_guest_that_respects_credit_gets_everything_through_a_slow_host_peer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let uds = uds_in(&dir);
    let listener = UnixListener::bind(port_path(&uds, 1031)).expect("listen");
    let mem = guest_memory();
    let mut guest = Guest::start(&mem, &uds);

    guest.send(Hdr::guest(OP_REQUEST, 7100, 1031), &[]);
    let (resp, _) = guest.recv();
    assert_eq!(resp.op, OP_RESPONSE);
    let (mut host, _) = listener.accept().expect("accept");

    // The guest sends 2 MiB, never more than the device's advertised credit in flight.
    let total: usize = 2 << 20;
    let pattern: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::with_capacity(total);
        let mut buf = [0u8; 8192];
        host.set_read_timeout(Some(WAIT)).expect("timeout");
        while got.len() < total {
            std::thread::sleep(Duration::from_micros(200)); // a slow reader
            match host.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("host read: {e}"),
            }
        }
        got
    });
    let (mut sent, mut peer_fwd, peer_alloc) = (0usize, 0u32, resp.buf_alloc);
    while sent < total {
        let credit = peer_alloc - (sent as u32).wrapping_sub(peer_fwd);
        if credit == 0 {
            let (hdr, _) = guest.recv();
            assert_ne!(hdr.op, OP_RST, "reset while respecting credit");
            peer_fwd = hdr.fwd_cnt;
            continue;
        }
        let n = (credit as usize).min(32 * 1024).min(total - sent);
        guest.send(Hdr::guest(OP_RW, 7100, 1031), &pattern[sent..sent + n]);
        sent += n;
        while let Some((hdr, _)) = guest.recv_within(Duration::ZERO) {
            assert_ne!(hdr.op, OP_RST, "reset while respecting credit");
            peer_fwd = hdr.fwd_cnt;
        }
    }
    let got = reader.join().expect("reader");
    assert_eq!(got.len(), total);
    assert!(got == pattern, "bytes arrived changed or out of order");
}

#[test]
fn a_client_that_sends_half_a_line_does_not_hold_up_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let uds = uds_in(&dir);
    let mem = guest_memory();
    let mut guest = Guest::start(&mem, &uds);
    let mut slow = UnixStream::connect(&uds).expect("connect");
    slow.write_all(b"CONN").expect("write");
    // Others are served meanwhile.
    let (mut client, local) = guest.accept_host_client(&uds, 1025, 64 * 1024);
    guest.send(Hdr::guest(OP_RW, 1025, local), b"x");
    assert_eq!(read_exactly(&mut client, 1), b"x");
    // The rest of the line completes the handshake.
    slow.write_all(b"ECT 1026\n").expect("write");
    let (req, _) = guest.recv();
    assert_eq!((req.op, req.dst_port), (OP_REQUEST, 1026));
}

#[test]
fn a_host_half_close_reaches_the_guest_as_shutdown_and_the_guest_can_still_send() {
    let dir = tempfile::tempdir().expect("tempdir");
    let uds = uds_in(&dir);
    let mem = guest_memory();
    let mut guest = Guest::start(&mem, &uds);
    let (mut client, local) = guest.accept_host_client(&uds, 1025, 64 * 1024);

    client.write_all(b"request").expect("host write");
    client
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    let (hdr, data) = guest.recv_skipping_credit();
    assert_eq!((hdr.op, data.as_slice()), (OP_RW, &b"request"[..]));
    let (hdr, _) = guest.recv_skipping_credit();
    assert_eq!((hdr.op, hdr.flags), (OP_SHUTDOWN, SHUTDOWN_SEND));

    guest.send(Hdr::guest(OP_RW, 1025, local), b"response");
    assert_eq!(read_exactly(&mut client, 8), b"response");
}

#[test]
fn a_device_reset_closes_every_host_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let uds = uds_in(&dir);
    let mem = guest_memory();
    let mut guest = Guest::start(&mem, &uds);
    let (mut client, _) = guest.accept_host_client(&uds, 1025, 64 * 1024);
    assert!(guest.dev.reset());
    client.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut rest = Vec::new();
    assert_eq!(client.read_to_end(&mut rest).expect("EOF"), 0);
}

#[test]
fn packets_already_in_the_tx_ring_reach_the_host_when_the_device_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let uds = uds_in(&dir);
    let mem = guest_memory();
    let mut guest = Guest::start(&mem, &uds);
    let (mut client, local) = guest.accept_host_client(&uds, 1025, 64 * 1024);
    // The guest's last words, made available without a kick, then the VM goes away.
    let hdr = Hdr {
        len: 9,
        ..Hdr::guest(OP_RW, 1025, local)
    };
    guest.tx.write(TX_BASE, &hdr.to_bytes());
    guest.tx.write(TX_BASE + 0x100, b"status=0\n");
    guest.tx.offer(&[
        Buf::readable(TX_BASE, PKT_HEADER_LEN),
        Buf::readable(TX_BASE + 0x100, 9),
    ]);
    drop(guest);
    assert_eq!(read_exactly(&mut client, 9), b"status=0\n");
}
