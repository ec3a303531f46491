//! The device on a stream socket in passt's framing, its peer one end of a SOCK_STREAM pair.

use std::io::Write;
use std::os::unix::net::UnixStream;

use super::*;
use crate::virtio::net::stream::{Stream, MAX_STREAM_FRAME};

/// A guest on a [`Stream`] whose peer (the test's end, `host`) is non-blocking; `sndbuf` shrinks
/// the device's send buffer.
fn start(mem: &GuestMem, features: u64, sndbuf: Option<i32>) -> Guest<'_, Stream> {
    let (ours, host) = UnixStream::pair().expect("socketpair");
    ours.set_nonblocking(true).unwrap();
    host.set_nonblocking(true).unwrap();
    if let Some(size) = sndbuf {
        // SAFETY: a valid socket and an int option of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                ours.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&size as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
    }
    let stream = Stream::new(ours.into(), "stream test".into());
    Guest::on(mem, stream, host.into(), features)
}

/// An Ethernet frame of `len` bytes (no vnet header), a pattern picked by `seed`.
fn ether(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i % 253) as u8))
        .collect()
}

/// `frame` as the stream carries it: its length (4 bytes, big endian) first.
fn framed(frame: &[u8]) -> Vec<u8> {
    let mut out = (frame.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(frame);
    out
}

/// `frame` as the guest must see it: a zero vnet header (`num_buffers` 1) before it.
fn with_header(frame: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; VNET_HDR_LEN];
    out[10] = 1;
    out.extend_from_slice(frame);
    out
}

impl Guest<'_, Stream> {
    fn host(&self) -> UnixStream {
        UnixStream::from(self.host.try_clone().unwrap())
    }

    /// Reads exactly `len` bytes from the host's end, waiting up to `timeout` for each part.
    fn host_read(&self, len: usize, timeout: Duration) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        while out.len() < len {
            let part = self.host_recv(timeout)?;
            assert!(!part.is_empty(), "the device closed its end");
            out.extend_from_slice(&part);
        }
        assert_eq!(out.len(), len, "more came than a frame");
        Some(out)
    }

    /// Transmits the bare `frame` (behind a vnet header) from `at` in guest memory, without
    /// waiting for its chain.
    fn queue_tx(&mut self, at: u64, frame: &[u8]) {
        self.tx.write(at, &[0u8; VNET_HDR_LEN]);
        self.tx.write(at + VNET_HDR_LEN as u64, frame);
        self.tx.offer(&[
            Buf::readable(at, VNET_HDR_LEN as u32),
            Buf::readable(at + VNET_HDR_LEN as u64, frame.len() as u32),
        ]);
    }
}

#[test]
fn frames_cross_byte_exact_both_ways() {
    let mem = guest_memory();
    let mut g = start(&mem, ALL, None);
    // Guest → stream: the header goes, the length comes.
    for (i, len) in [60, 1514, MAX_STREAM_FRAME].into_iter().enumerate() {
        let f = ether(len, i as u8);
        g.queue_tx(TX_BASE, &f);
        g.tx.kick();
        assert_eq!(g.tx.wait_used(WAIT).expect("tx chain").1, 0);
        assert_eq!(g.host_read(4 + len, WAIT).expect("frame"), framed(&f));
    }
    // Stream → guest: three frames in one write, each into its own buffers.
    let frames: Vec<Vec<u8>> = [42, 1514, 300].iter().map(|&n| ether(n, 9)).collect();
    let bytes: Vec<u8> = frames.iter().flat_map(|f| framed(f)).collect();
    g.offer_rx(0, 3, 2048);
    g.rx.kick();
    g.host_send(&bytes);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(g.received(), (i as u64, (VNET_HDR_LEN + f.len()) as u32));
        let got =
            g.rx.read(RX_BASE + i as u64 * RX_SLOT, VNET_HDR_LEN + f.len());
        assert_eq!(got, with_header(f));
    }
    // The longest frame, over mergeable buffers.
    g.offer_rx(3, 44, 1536);
    g.rx.kick();
    let big = ether(MAX_STREAM_FRAME, 3);
    g.host_send(&framed(&big));
    let mut got = Vec::new();
    for _ in 0..43 {
        let (slot, len) = g.received();
        got.extend(g.rx.read(RX_BASE + slot * RX_SLOT, len as usize));
    }
    let mut want = with_header(&big);
    want[10] = 43;
    assert_eq!(got, want);
    let stats = g.dev.stats();
    assert_eq!(stats.tx_frames.load(Ordering::SeqCst), 3);
    assert_eq!(stats.rx_frames.load(Ordering::SeqCst), 4);
    assert_eq!(stats.rx_dropped.load(Ordering::SeqCst), 0);
}

#[test]
fn frames_split_across_reads_are_put_together() {
    let mem = guest_memory();
    let mut g = start(&mem, ALL, None);
    g.offer_rx(0, 4, 2048);
    g.rx.kick();
    let frames: Vec<Vec<u8>> = [100, 1500, 60].iter().map(|&n| ether(n, 5)).collect();
    let bytes: Vec<u8> = frames.iter().flat_map(|f| framed(f)).collect();
    // Cuts inside a length, inside a frame, and right after a length.
    for part in [
        &bytes[..2],
        &bytes[2..50],
        &bytes[50..108],
        &bytes[108..1000],
    ] {
        g.host_send(part);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(g.received(), (0, (VNET_HDR_LEN + 100) as u32));
    assert_eq!(g.rx.wait_used(QUIET), None, "half a frame is not delivered");
    // The rest one byte at a time.
    for byte in &bytes[1000..] {
        g.host_send(std::slice::from_ref(byte));
    }
    for (i, f) in frames.iter().enumerate().skip(1) {
        assert_eq!(g.received(), (i as u64, (VNET_HDR_LEN + f.len()) as u32));
        let got =
            g.rx.read(RX_BASE + i as u64 * RX_SLOT, VNET_HDR_LEN + f.len());
        assert_eq!(got, with_header(f));
    }
    assert_eq!(g.dev.stats().rx_dropped.load(Ordering::SeqCst), 0);
}

#[test]
fn malformed_lengths_drop_the_frame_or_stop_receiving() {
    let mem = guest_memory();
    let mut g = start(&mem, ALL, None);
    let stats = g.dev.stats();
    g.offer_rx(0, 4, 2048);
    g.rx.kick();
    // Shorter than an Ethernet header (0 and 13 bytes): dropped, the framing holds.
    let good = ether(64, 1);
    let mut bytes = framed(&[]);
    bytes.extend(framed(&ether(13, 2)));
    bytes.extend(framed(&good));
    g.host_send(&bytes);
    assert_eq!(g.received(), (0, (VNET_HDR_LEN + 64) as u32));
    assert_eq!(g.rx.read(RX_BASE, VNET_HDR_LEN + 64), with_header(&good));
    assert_eq!(stats.rx_dropped.load(Ordering::SeqCst), 2);
    // Longer than any frame: nothing is allocated for it, receiving stops for good, and the
    // worker neither spins nor delivers what follows.
    let mut bogus = (MAX_STREAM_FRAME as u32 + 1).to_be_bytes().to_vec();
    bogus.extend(ether(100, 3));
    g.host_send(&bogus);
    g.host_send(&framed(&good));
    assert_eq!(g.rx.wait_used(QUIET), None);
    let woken = stats.wakeups.load(Ordering::SeqCst);
    g.host_send(&u32::MAX.to_be_bytes());
    std::thread::sleep(QUIET * 2);
    assert_eq!(
        stats.wakeups.load(Ordering::SeqCst),
        woken,
        "the worker spins"
    );
    assert_eq!(stats.rx_frames.load(Ordering::SeqCst), 1);
    // Sending still works.
    let out = ether(80, 4);
    g.queue_tx(TX_BASE, &out);
    g.tx.kick();
    assert!(g.tx.wait_used(WAIT).is_some());
    assert_eq!(g.host_read(84, WAIT).expect("tx frame"), framed(&out));
}

#[test]
fn a_guest_that_never_refills_holds_the_peer_back() {
    let mem = guest_memory();
    let mut g = start(&mem, ALL, None);
    let stats = g.dev.stats();
    // The peer writes until the socket takes no more: the device reads no more than a buffer's
    // worth while the guest has no buffers, so the peer is held back.
    let mut host = g.host();
    let mut frames = Vec::new();
    let mut rest = Vec::new();
    loop {
        let f = ether(3000 + frames.len(), frames.len() as u8);
        let bytes = framed(&f);
        match host.write(&bytes) {
            Ok(n) => {
                frames.push(f);
                if n < bytes.len() {
                    rest = bytes[n..].to_vec();
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
        // The test driver's rings hold at most 128 chains in all (virtio-queue's mock lays the
        // used ring over the avail ring's second half).
        assert!(frames.len() < 128, "the socket never filled up");
    }
    assert_settles(&stats);
    assert_eq!(g.rx.wait_used(Duration::ZERO), None);
    // Buffers come: every frame is there, in order.
    g.offer_rx(0, frames.len() as u64, 4096);
    g.rx.kick();
    g.host_send(&rest);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(g.received(), (i as u64, (VNET_HDR_LEN + f.len()) as u32));
        let got =
            g.rx.read(RX_BASE + i as u64 * RX_SLOT, VNET_HDR_LEN + f.len());
        assert_eq!(got, with_header(f), "frame {i}");
    }
    assert_eq!(stats.rx_dropped.load(Ordering::SeqCst), 0);
}

#[test]
fn a_peer_that_does_not_read_holds_the_guest_back() {
    let mem = guest_memory();
    let mut g = start(&mem, ALL, Some(8192));
    let stats = g.dev.stats();
    let frames: Vec<Vec<u8>> = (0..100).map(|i| ether(3000 + i, i as u8)).collect();
    for (i, f) in frames.iter().enumerate() {
        g.queue_tx(TX_BASE + i as u64 * 0x1_0000 / 8, f);
    }
    g.tx.kick();
    let mut used = 0;
    while g.tx.wait_used(QUIET).is_some() {
        used += 1;
    }
    assert!(used < frames.len(), "all {used} frames fit a full socket");
    assert_eq!(stats.tx_dropped.load(Ordering::SeqCst), 0);
    // The peer reads: the rest follows, nothing lost, nothing torn.
    let want: Vec<u8> = frames.iter().flat_map(|f| framed(f)).collect();
    assert_eq!(g.host_read(want.len(), WAIT).expect("every frame"), want);
    while used < frames.len() {
        g.tx.wait_used(WAIT).expect("tx chain returned");
        used += 1;
    }
    assert_eq!(stats.tx_frames.load(Ordering::SeqCst), 100);
    assert_eq!(stats.tx_dropped.load(Ordering::SeqCst), 0);
}

#[test]
fn a_closed_peer_stops_receive_and_loses_what_is_sent() {
    let mem = guest_memory();
    let mut g = start(&mem, ALL, None);
    let stats = g.dev.stats();
    g.offer_rx(0, 4, 2048);
    g.rx.kick();
    // Half a frame, then the peer goes away.
    g.host_send(&framed(&ether(500, 1))[..200]);
    let (_, other) = UnixStream::pair().unwrap();
    drop(std::mem::replace(&mut g.host, other.into()));
    assert_settles(&stats);
    assert_eq!(g.rx.wait_used(Duration::ZERO), None);
    // Sending to a closed socket loses the frame (no SIGPIPE kills the test process).
    for _ in 0..2 {
        g.queue_tx(TX_BASE, &ether(64, 2));
        g.tx.kick();
        assert!(g.tx.wait_used(WAIT).is_some());
    }
    assert_eq!(stats.tx_dropped.load(Ordering::SeqCst), 2);
}

#[test]
fn no_offloads_are_offered_on_a_stream() {
    let mem = guest_memory();
    let g = start(&mem, ALL, None);
    let features = g.dev.device_features();
    for feature in [
        VIRTIO_NET_F_CSUM,
        VIRTIO_NET_F_GUEST_CSUM,
        VIRTIO_NET_F_GUEST_TSO4,
        VIRTIO_NET_F_GUEST_TSO6,
        VIRTIO_NET_F_GUEST_ECN,
        VIRTIO_NET_F_HOST_TSO4,
        VIRTIO_NET_F_HOST_TSO6,
        VIRTIO_NET_F_HOST_ECN,
    ] {
        assert_eq!(features & bit(feature), 0, "feature {feature}");
    }
    for feature in [
        VIRTIO_NET_F_MAC,
        VIRTIO_NET_F_MTU,
        VIRTIO_NET_F_STATUS,
        VIRTIO_NET_F_MRG_RXBUF,
    ] {
        assert_ne!(features & bit(feature), 0, "feature {feature}");
    }
}

/// An ARP request from the guest (MAC `02:00:00:00:00:09`, 10.0.2.15) for `target`.
fn arp_request(target: [u8; 4]) -> Vec<u8> {
    let mac = [2, 0, 0, 0, 0, 9];
    let mut f = vec![0xff; 6];
    f.extend(mac);
    f.extend([0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend(mac);
    f.extend([10, 0, 2, 15]);
    f.extend([0; 6]);
    f.extend(target);
    f
}

/// The real passt (Debian's `passt`; skipped when it is not installed) behind the device, no
/// guest booted: its ARP answer comes back through the stream and the receive queue.
#[test]
fn passt_answers_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    // passt started by root runs as nobody, which must be able to bind its socket here.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let socket = dir.path().join("passt.sock");
    let spawned = std::process::Command::new("passt")
        .args(["--foreground", "--quiet", "--one-off", "--socket"])
        .arg(&socket)
        .args([
            "-4",
            "-a",
            "10.0.2.15",
            "-n",
            "24",
            "-g",
            "10.0.2.2",
            "-D",
            "none",
        ])
        .args(["-t", "none", "-u", "none"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let mut passt = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("passt is not installed: skipped");
            return;
        }
        Err(e) => panic!("starting passt: {e}"),
    };
    let deadline = std::time::Instant::now() + WAIT;
    let stream = loop {
        match Stream::connect(&socket) {
            Ok(stream) => break stream,
            Err(e) if std::time::Instant::now() > deadline => panic!("{e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let mem = guest_memory();
    let (host, _) = UnixStream::pair().unwrap();
    let mut g = Guest::on(&mem, stream, host.into(), ALL);
    g.offer_rx(0, 4, 2048);
    g.rx.kick();
    g.queue_tx(TX_BASE, &arp_request([10, 0, 2, 2]));
    g.tx.kick();
    assert!(g.tx.wait_used(WAIT).is_some());
    let (slot, len) = g.received();
    let reply = g.rx.read(RX_BASE + slot * RX_SLOT, len as usize);
    let arp = &reply[VNET_HDR_LEN..];
    assert_eq!(&arp[..6], &[2, 0, 0, 0, 0, 9], "to the guest: {arp:?}");
    assert_eq!(&arp[12..14], &[0x08, 0x06], "an ARP frame: {arp:?}");
    assert_eq!(&arp[20..22], &[0, 2], "a reply: {arp:?}");
    assert_eq!(&arp[28..32], &[10, 0, 2, 2], "for the gateway: {arp:?}");
    assert_eq!(
        &arp[38..42],
        &[10, 0, 2, 15],
        "to the guest's address: {arp:?}"
    );
    // --one-off: passt ends once the device's end is closed.
    drop(g);
    let status = passt.wait().unwrap();
    assert!(status.success(), "passt: {status}");
}
