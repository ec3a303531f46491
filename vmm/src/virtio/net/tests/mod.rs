//! The net device against a fake guest driver on one side and, in place of the host side, one
//! end of a socket pair: SOCK_SEQPACKET in place of a tap (it keeps frame boundaries, as a tap
//! does; `tap`), SOCK_STREAM in place of passt (`stream`).

mod stream;
mod tap;

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::virtio::test_driver::{
    counting_interrupt, guest_memory, Buf, CountingInterrupt, DriverQueue, MEM_SIZE,
};

const WAIT: Duration = Duration::from_secs(5);
/// How long to wait for something that must not happen.
const QUIET: Duration = Duration::from_millis(150);
const RX_BASE: u64 = 0x10_0000;
const RX_SLOT: u64 = 0x1_0000;
const TX_BASE: u64 = 0x80_0000;
const ALL: u64 = u64::MAX;

/// Lets the worker settle, then checks that it does not wake up again on its own.
fn assert_settles(stats: &NetStats) {
    std::thread::sleep(QUIET);
    let woken = stats.wakeups.load(Ordering::SeqCst);
    std::thread::sleep(QUIET * 2);
    assert_eq!(
        stats.wakeups.load(Ordering::SeqCst),
        woken,
        "the worker spins"
    );
}

/// The tap's stand-in: our end of the socket pair, recording the offloads it is told.
struct FakeTap {
    sock: OwnedFd,
    offload: AtomicU32,
}

impl AsFd for FakeTap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl Backend for FakeTap {
    fn offloads(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        "fake tap".into()
    }

    fn set_offload(&self, flags: libc::c_uint) -> std::io::Result<()> {
        self.offload.store(flags, Ordering::SeqCst);
        Ok(())
    }
}

fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    let kind = libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    let rc = unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, fds.as_mut_ptr()) };
    assert_eq!(rc, 0, "socketpair: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just created and are owned by nothing else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// A frame as the tap carries it: a vnet header (flags DATA_VALID, hdr_len 54, num_buffers
/// 0x7777 to see it rewritten), then `len - 12` bytes of a pattern picked by `seed`.
fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0] = VIRTIO_NET_HDR_F_DATA_VALID as u8;
    f[2..4].copy_from_slice(&54u16.to_le_bytes());
    f[10..12].copy_from_slice(&0x7777u16.to_le_bytes());
    for (i, b) in f[VNET_HDR_LEN..].iter_mut().enumerate() {
        *b = seed.wrapping_add((i % 251) as u8);
    }
    f
}

/// `f` as the guest must see it: `num_buffers` set, flags kept only with GUEST_CSUM.
fn as_received(f: &[u8], num_buffers: u16, guest_csum: bool) -> Vec<u8> {
    let mut f = f.to_vec();
    f[10..12].copy_from_slice(&num_buffers.to_le_bytes());
    if !guest_csum {
        f[0] = 0;
    }
    f
}

/// The driver: the device activated with `features` (of those offered) on its two queues, with
/// `B` as its backend.
struct Guest<'m, B = FakeTap> {
    mem: &'m GuestMem,
    dev: NetDevice,
    rx: DriverQueue<'m>,
    tx: DriverQueue<'m>,
    irq: Arc<CountingInterrupt>,
    backend: Arc<B>,
    /// The host's end of the socket pair.
    host: OwnedFd,
    /// Receive chains offered by `offer_rx`: head index → slot.
    rx_slots: HashMap<u16, u64>,
}

impl<'m> Guest<'m> {
    /// On a tap's stand-in.
    fn start(mem: &'m GuestMem, features: u64) -> Guest<'m> {
        let (ours, host) = seqpacket_pair();
        let tap = FakeTap {
            sock: ours,
            offload: AtomicU32::new(u32::MAX),
        };
        Guest::on(mem, tap, host, features)
    }
}

impl<'m, B: Backend> Guest<'m, B> {
    /// On `backend`, whose peer is `host`.
    fn on(mem: &'m GuestMem, backend: B, host: OwnedFd, features: u64) -> Guest<'m, B> {
        let backend = Arc::new(backend);
        let mac = MacAddr([2, 0, 0, 0, 0, 9]);
        let dev = NetDevice::new(backend.clone(), Some(mac), Some(1500)).expect("device");
        let mut guest = Guest {
            mem,
            dev,
            rx: DriverQueue::new(mem, 0, 256),
            tx: DriverQueue::new(mem, 0x1_0000, 256),
            irq: counting_interrupt(),
            backend,
            host,
            rx_slots: HashMap::new(),
        };
        guest.activate(features);
        guest
    }

    fn activate(&mut self, features: u64) {
        let acked = self.dev.device_features() & features;
        self.dev
            .activate(
                self.mem.clone(),
                self.irq.clone(),
                vec![self.rx.active(), self.tx.active()],
                acked,
            )
            .expect("activate");
    }

    /// Sends `bufs` (the frame laid out in them) on the tx queue and waits for them back.
    fn transmit(&mut self, bufs: &[Buf]) -> u32 {
        self.tx.offer(bufs);
        self.tx.kick();
        self.tx.wait_used(WAIT).expect("tx chain returned").1
    }

    /// Writes `f` from the host's end, waiting while the socket is full.
    fn host_send(&self, f: &[u8]) {
        let mut sent = 0;
        while sent < f.len() {
            let rest = &f[sent..];
            // SAFETY: `rest` is valid readable memory of the length passed.
            let n = unsafe { libc::write(self.host.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
            match usize::try_from(n) {
                Ok(n) => sent += n,
                Err(_) => {
                    let e = std::io::Error::last_os_error();
                    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}");
                    assert!(self.host_poll(libc::POLLOUT, WAIT), "the socket stays full");
                }
            }
        }
    }

    /// Whether the host's end becomes ready for `events` within `timeout`.
    fn host_poll(&self, events: libc::c_short, timeout: Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.host.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) == 1 }
    }

    /// What the device wrote next (on a tap's stand-in: one frame), if it comes within
    /// `timeout`.
    fn host_recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        if !self.host_poll(libc::POLLIN, timeout) {
            return None;
        }
        let mut buf = vec![0u8; MAX_FRAME_LEN + 100];
        // SAFETY: `buf` is valid writable memory of the length passed.
        let n = unsafe { libc::read(self.host.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        buf.truncate(usize::try_from(n).ok()?);
        Some(buf)
    }

    /// Offers `count` receive chains of one `size`-byte buffer each, from slot `first` on.
    fn offer_rx(&mut self, first: u64, count: u64, size: u32) {
        for slot in first..first + count {
            let head = self
                .rx
                .offer(&[Buf::writable(RX_BASE + slot * RX_SLOT, size)]);
            self.rx_slots.insert(head, slot);
        }
    }

    /// The next used receive chain: (slot its buffer is in, or `u64::MAX` for a chain not
    /// offered by `offer_rx`; bytes written).
    fn received(&mut self) -> (u64, u32) {
        let (head, len) = self.rx.wait_used(WAIT).expect("rx chain used");
        let slot = u16::try_from(head)
            .ok()
            .and_then(|h| self.rx_slots.get(&h).copied());
        (slot.unwrap_or(u64::MAX), len)
    }
}

fn no_mrg() -> u64 {
    ALL & !(1 << VIRTIO_NET_F_MRG_RXBUF)
}
