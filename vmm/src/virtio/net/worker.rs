//! The virtio-net device thread: frames from the tx queue go to the host side (the backend),
//! frames from it go into buffers from the rx queue, and one event loop wakes it for both queues'
//! kicks and the backend's descriptor.
//!
//! A guest without receive buffers does not stall or spin the worker: the frame at hand waits in
//! a host buffer, the backend is no longer watched for input (a tap's own queue holds the rest and
//! drops what does not fit, as a network may; a stream's peer is held back by the socket), and
//! the next rx kick resumes receiving. A backend that cannot take a frame now (a stream whose
//! last frame is not all written) leaves it in the tx queue, and its writability resumes sending.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use virtio_bindings::virtio_net::{VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_MRG_RXBUF};
use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::backend::{Recv, Sent};
use super::{Backend, NetStats, ETH_HLEN, MAX_FRAME_LEN, VNET_HDR_LEN};
use crate::virtio::event_loop::{EventLoop, Watch};
use crate::virtio::queue_service::{notify_guest, serve_available_while};
use crate::virtio::{ActiveQueue, GuestMem, Interrupt};

const RX_KICK: u64 = 0;
const TX_KICK: u64 = 1;
const BACKEND: u64 = 2;
/// Frames read from the backend per wakeup, so a busy one does not starve the tx queue (it stays
/// readable and wakes the loop again).
const RX_BATCH: usize = 64;
/// Offset of `num_buffers` in the vnet header.
const NUM_BUFFERS_AT: usize = 10;

/// What reading the backend gave.
enum Read {
    /// A frame in `frame`.
    Frame,
    /// A frame that is gone; the next may be there.
    Dropped,
    /// Nothing now (or ever: `rx_broken`).
    Nothing,
}

/// What became of the frame at hand.
enum Delivery {
    /// In the guest's buffers.
    Done,
    /// Not deliverable in any buffer the guest can give: gone.
    Dropped,
    /// Not enough buffers now: the frame waits.
    NoBuffers,
}

pub(super) struct NetWorker {
    mem: GuestMem,
    interrupt: Arc<dyn Interrupt>,
    rx: ActiveQueue,
    tx: ActiveQueue,
    backend: Arc<dyn Backend>,
    /// The backend as log messages name it.
    name: String,
    mrg_rxbuf: bool,
    guest_csum: bool,
    /// The frame read from the backend, waiting for receive buffers while `frame_len > 0`.
    frame: Vec<u8>,
    frame_len: usize,
    /// One frame from the guest being gathered.
    tx_buf: Vec<u8>,
    /// Receive chains of the frame being delivered, not yet in the used ring: (head, length).
    rx_chains: Vec<(u16, u32)>,
    /// What the backend's descriptor is watched for: input unless the guest has no buffers (or
    /// receiving broke), output while sending waits for it (`tx_blocked`).
    watching: Watch,
    /// Reading the backend failed for good: only the tx side works on.
    rx_broken: bool,
    /// The frame at hand waits for the guest's receive buffers (and a kick).
    rx_waits: bool,
    /// Sending waits until the backend is writable: a transmit chain left in the ring, or the
    /// rest of a frame the backend took.
    tx_blocked: bool,
    stats: Arc<NetStats>,
}

impl NetWorker {
    pub(super) fn new(
        mem: GuestMem,
        interrupt: Arc<dyn Interrupt>,
        queues: [ActiveQueue; 2],
        backend: Arc<dyn Backend>,
        acked_features: u64,
        stats: Arc<NetStats>,
    ) -> NetWorker {
        let [rx, tx] = queues;
        NetWorker {
            mem,
            interrupt,
            rx,
            tx,
            name: backend.describe(),
            backend,
            mrg_rxbuf: acked_features & (1 << VIRTIO_NET_F_MRG_RXBUF) != 0,
            guest_csum: acked_features & (1 << VIRTIO_NET_F_GUEST_CSUM) != 0,
            frame: vec![0; MAX_FRAME_LEN],
            frame_len: 0,
            tx_buf: vec![0; MAX_FRAME_LEN],
            rx_chains: Vec::with_capacity(usize::from(super::QUEUE_SIZE)),
            watching: Watch::default(),
            rx_broken: false,
            rx_waits: false,
            tx_blocked: false,
            stats,
        }
    }

    pub(super) fn run(mut self, stop: &EventFd) -> io::Result<()> {
        let events = EventLoop::new(stop)?;
        events.add(self.rx.notify.as_raw_fd(), RX_KICK)?;
        events.add(self.tx.notify.as_raw_fd(), TX_KICK)?;
        // While the backend is watched, receiving needs no kicks (they only come back when the
        // guest runs out of buffers). A failure only costs wakeups.
        let _ = self.rx.queue.disable_notification(&self.mem);
        // Also covers buffers and frames that came before the loop started.
        self.process_tx(&events);
        self.process_rx(&events);
        events.run(|token| {
            self.stats.wakeups.fetch_add(1, Ordering::Relaxed);
            match token {
                // Failed reads only mean the counter was already drained.
                RX_KICK => {
                    let _ = self.rx.notify.read();
                    self.process_rx(&events);
                }
                TX_KICK => {
                    let _ = self.tx.notify.read();
                    self.process_tx(&events);
                }
                // Readiness reported in the same batch as the unwatching is stale.
                BACKEND => {
                    if self.watching.write {
                        self.process_tx(&events);
                    }
                    if self.watching.read {
                        self.process_rx(&events);
                    }
                }
                _ => {}
            }
        })
    }

    /// Sends every frame the guest queued to the backend, as long as it takes them.
    pub(super) fn process_tx(&mut self, events: &EventLoop) {
        let Self {
            mem,
            tx,
            backend,
            name,
            tx_buf,
            stats,
            ..
        } = self;
        let (used, blocked) = serve_available_while(&mut tx.queue, mem, |chain| {
            match gather(mem, chain, tx_buf) {
                Some(len) => send(backend.as_ref(), name, &tx_buf[..len], stats)?,
                None => {
                    let dropped = bump(&stats.tx_dropped);
                    tracing::debug!(
                        "virtio-net: dropped a malformed transmit chain ({dropped} transmit drops \
                         so far)"
                    );
                }
            }
            // The device writes nothing into transmit buffers.
            Some(0)
        });
        // A frame the backend took but could not write whole also waits for writability.
        self.tx_blocked = blocked || !self.backend.flush();
        self.update_watch(events);
        if used > 0 {
            notify_guest(&mut self.tx.queue, &self.mem, self.interrupt.as_ref());
        }
    }

    /// Moves frames from the backend into receive buffers while both last.
    pub(super) fn process_rx(&mut self, events: &EventLoop) {
        let used_before = self.rx.queue.next_used();
        let mut reads = 0;
        let mut rechecks = 0;
        let mut out_of_buffers = false;
        loop {
            if self.frame_len == 0 {
                if self.rx_broken {
                    break;
                }
                if reads == RX_BATCH {
                    // More may wait where the descriptor's readiness does not show it (a
                    // stream's buffer): our own kick brings us back after the other sources.
                    if let Err(e) = self.rx.notify.write(1) {
                        tracing::warn!("virtio-net: cannot requeue receiving: {e}");
                    }
                    break;
                }
                reads += 1;
                match self.read_frame() {
                    Read::Frame => {}
                    Read::Dropped => continue,
                    Read::Nothing => break,
                }
            }
            match self.deliver() {
                Delivery::Done => {
                    self.frame_len = 0;
                    self.stats.rx_frames.fetch_add(1, Ordering::Relaxed);
                }
                Delivery::Dropped => {
                    let len = std::mem::take(&mut self.frame_len);
                    self.drop_rx(format_args!("a {len}-byte frame fits no receive buffer"));
                }
                Delivery::NoBuffers => {
                    // Bounded: a ring whose indices are corrupt always looks non-empty.
                    if self.ask_for_rx_kick() && rechecks < 2 {
                        rechecks += 1;
                        continue;
                    }
                    out_of_buffers = true;
                    break;
                }
            }
        }
        if !out_of_buffers {
            // Receiving goes on through the backend's readiness; kicks are not needed.
            let _ = self.rx.queue.disable_notification(&self.mem);
        }
        self.rx_waits = out_of_buffers;
        self.update_watch(events);
        if self.rx.queue.next_used() != used_before {
            notify_guest(&mut self.rx.queue, &self.mem, self.interrupt.as_ref());
        }
    }

    fn update_watch(&mut self, events: &EventLoop) {
        let now = Watch {
            read: !self.rx_waits && !self.rx_broken,
            write: self.tx_blocked,
        };
        if now == self.watching {
            return;
        }
        let fd = self.backend.as_fd().as_raw_fd();
        match events.rewatch(fd, BACKEND, self.watching, now) {
            Ok(()) => self.watching = now,
            Err(e) => tracing::error!("virtio-net: cannot change the watch on {}: {e}", self.name),
        }
    }

    /// Reads the next frame from the backend into `frame`.
    fn read_frame(&mut self) -> Read {
        let n = match self.backend.recv(&mut self.frame) {
            Recv::Frame(n) => n,
            Recv::Empty => return Read::Nothing,
            Recv::Lost(e) => {
                self.drop_rx(format_args!(
                    "{} failed to hand over a frame: {e}",
                    self.name
                ));
                return Read::Dropped;
            }
            Recv::Closed => {
                tracing::error!("virtio-net: {} was closed; receive stops", self.name);
                self.rx_broken = true;
                return Read::Nothing;
            }
            Recv::Broken(e) => {
                tracing::error!(
                    "virtio-net: reading {} failed: {e}; receive stops",
                    self.name
                );
                self.rx_broken = true;
                return Read::Nothing;
            }
        };
        if n < VNET_HDR_LEN + ETH_HLEN {
            self.drop_rx(format_args!(
                "a {n}-byte frame from {} is too short",
                self.name
            ));
            return Read::Dropped;
        }
        if !self.guest_csum {
            // The driver did not accept checksum offload: the header's flags must be zero.
            self.frame[0] = 0;
        }
        self.frame_len = n;
        Read::Frame
    }

    fn drop_rx(&self, why: fmt::Arguments<'_>) {
        let dropped = bump(&self.stats.rx_dropped);
        tracing::debug!("virtio-net: {why}; dropped ({dropped} receive drops so far)");
    }

    /// Puts the frame at hand into receive buffers: one chain, or as many as it takes with
    /// MRG_RXBUF (their count in the header's `num_buffers`). Chains of a frame that does not
    /// complete go back to the available ring for the next try.
    fn deliver(&mut self) -> Delivery {
        let Self {
            mem,
            rx,
            frame,
            frame_len,
            rx_chains,
            mrg_rxbuf,
            ..
        } = self;
        let mem: &GuestMem = mem;
        let queue = &mut rx.queue;
        let frame = &frame[..*frame_len];
        rx_chains.clear();
        let mut written = 0;
        let mut num_buffers_at = [GuestAddress(0); 2];
        while written < frame.len() {
            let taken = rx_chains.len();
            if *mrg_rxbuf && taken >= usize::from(queue.size()) {
                // The whole ring cannot hold it, now or ever.
                put_back(queue, taken);
                return Delivery::Dropped;
            }
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                put_back(queue, taken);
                return Delivery::NoBuffers;
            };
            let head = chain.head_index();
            let first = taken == 0;
            let n = fill_chain(
                mem,
                chain,
                frame,
                written,
                first.then_some(&mut num_buffers_at),
            );
            if first && n < VNET_HDR_LEN {
                // Not even room for the header: useless, returned empty; the frame tries the next.
                if let Err(e) = queue.add_used(mem, head, 0) {
                    tracing::warn!("virtio-net: cannot return a receive buffer: {e}");
                }
                continue;
            }
            if n == 0 {
                // A chain that holds nothing in the middle of a frame: the frame cannot be
                // delivered whole, and the chains already filled cannot go back in front of this
                // one. All of them are returned empty.
                rx_chains.push((head, 0));
                for &(head, _) in rx_chains.iter() {
                    if let Err(e) = queue.add_used(mem, head, 0) {
                        tracing::warn!("virtio-net: cannot return a receive buffer: {e}");
                    }
                }
                return Delivery::Dropped;
            }
            rx_chains.push((head, n as u32));
            written += n;
            if !*mrg_rxbuf && written < frame.len() {
                // Too small for this frame; it stays for the next one.
                put_back(queue, 1);
                return Delivery::Dropped;
            }
        }
        // At most the queue size (256), which fits.
        let count = rx_chains.len() as u16;
        for (at, byte) in num_buffers_at.into_iter().zip(count.to_le_bytes()) {
            if let Err(e) = mem.write_obj(byte, at) {
                tracing::warn!("virtio-net: cannot write num_buffers: {e}");
            }
        }
        for &(head, len) in rx_chains.iter() {
            if let Err(e) = queue.add_used(mem, head, len) {
                tracing::warn!("virtio-net: cannot return a receive buffer: {e}");
            }
        }
        Delivery::Done
    }

    /// Has the guest kick us when it adds receive buffers beyond those it has made available
    /// already (which were not enough). True if some came in meanwhile.
    fn ask_for_rx_kick(&mut self) -> bool {
        let queue = &mut self.rx.queue;
        let Ok(avail) = queue.avail_idx(&self.mem, Ordering::Acquire) else {
            return false;
        };
        // With EVENT_IDX the kick threshold is taken from the next position to serve: point it
        // at the end of the ring for the moment, then step back to the chains still waiting.
        let next = queue.next_avail();
        queue.set_next_avail(avail.0);
        let more = queue.enable_notification(&self.mem);
        queue.set_next_avail(next);
        match more {
            Ok(more) => more,
            Err(e) => {
                tracing::warn!("virtio-net: receive queue unusable: {e}");
                false
            }
        }
    }
}

/// Returns the last `count` popped chains to the available ring.
fn put_back(queue: &mut virtio_queue::Queue, count: usize) {
    for _ in 0..count {
        queue.go_to_previous_position();
    }
}

/// Copies `frame[offset..]` into the chain's writable buffers as far as they go; returns how many
/// bytes went in. A buffer outside guest memory ends the chain. For the first chain of a frame,
/// `num_buffers_at` gets the guest addresses of the header's `num_buffers` bytes.
fn fill_chain(
    mem: &GuestMem,
    chain: DescriptorChain<&GuestMem>,
    frame: &[u8],
    offset: usize,
    mut num_buffers_at: Option<&mut [GuestAddress; 2]>,
) -> usize {
    let mut pos = offset;
    for desc in chain.writable() {
        let rest = &frame[pos..];
        if rest.is_empty() {
            break;
        }
        let n = rest.len().min(desc.len() as usize);
        if n == 0 {
            continue;
        }
        if mem.write_slice(&rest[..n], desc.addr()).is_err() {
            tracing::debug!(
                "virtio-net: receive buffer at {:#x} is outside guest memory",
                desc.addr().raw_value()
            );
            break;
        }
        if let Some(at) = num_buffers_at.as_deref_mut() {
            for (i, slot) in at.iter_mut().enumerate() {
                let wanted = NUM_BUFFERS_AT + i;
                if (pos..pos + n).contains(&wanted) {
                    // In range of a buffer just written, so no overflow.
                    *slot = GuestAddress(desc.addr().raw_value() + (wanted - pos) as u64);
                }
            }
        }
        pos += n;
    }
    pos - offset
}

/// Copies a transmit chain's bytes into `buf`; `None` for a chain that is not a frame: a
/// writable buffer in it, longer than `buf`, outside guest memory, cut short (its last buffer
/// points to a next one that is not there, or it loops), or shorter than the vnet and Ethernet
/// headers.
fn gather(mem: &GuestMem, chain: DescriptorChain<&GuestMem>, buf: &mut [u8]) -> Option<usize> {
    let mut len = 0usize;
    let mut cut = false;
    for desc in chain {
        if desc.is_write_only() {
            return None;
        }
        let n = desc.len() as usize;
        let dst = buf.get_mut(len..len.checked_add(n)?)?;
        mem.read_slice(dst, desc.addr()).ok()?;
        len += n;
        cut = desc.has_next();
    }
    (!cut && len >= VNET_HDR_LEN + ETH_HLEN).then_some(len)
}

/// Hands one frame to the backend; `None` when it cannot take it now (the frame stays in the
/// guest's ring). A frame the backend refuses is lost, as a network may lose it.
fn send(backend: &dyn Backend, name: &str, frame: &[u8], stats: &NetStats) -> Option<()> {
    match backend.send(frame) {
        Sent::Taken => {
            stats.tx_frames.fetch_add(1, Ordering::Relaxed);
        }
        Sent::Lost(e) => {
            let dropped = bump(&stats.tx_dropped);
            tracing::debug!(
                "virtio-net: {} refused a {}-byte frame: {e}; dropped ({dropped} transmit drops \
                 so far)",
                name,
                frame.len()
            );
        }
        Sent::Busy => return None,
    }
    Some(())
}

fn bump(counter: &AtomicU64) -> u64 {
    counter.fetch_add(1, Ordering::Relaxed) + 1
}
