//! virtio-net for the fuzz targets (`fuzzing` feature): the worker on a tap's stand-in, one turn
//! at a time on the calling thread.
//!
//! The stand-in is one end of an `AF_UNIX` `SOCK_SEQPACKET` pair, as in the unit tests: it keeps
//! frame boundaries as a tap does, and the worker drives it through the same datagram `recv` and
//! `send` a tap has. The target holds the other end.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use libc::c_uint;
use virtio_queue::QueueT;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::worker::NetWorker;
use super::{tap_offloads, Backend, NetStats, NET_FEATURES, OFFLOAD_FEATURES};
use crate::virtio::event_loop::EventLoop;
use crate::virtio::queue_service::{accept_queues, RING_FEATURES};
use crate::virtio::{ActivateError, ActiveQueue, GuestMem, Interrupt};

/// The device's end of the socket pair, in a tap's place.
struct PairEnd(OwnedFd);

impl AsFd for PairEnd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Backend for PairEnd {
    fn offloads(&self) -> bool {
        true
    }

    fn set_offload(&self, _flags: c_uint) -> io::Result<()> {
        Ok(())
    }

    fn describe(&self) -> String {
        "seqpacket pair".into()
    }
}

/// The device's worker on its stand-in tap, without the thread.
pub struct NetHarness {
    backend: Arc<PairEnd>,
    stop: EventFd,
    /// The worker of the current activation and the event loop it was built for.
    active: Option<(NetWorker, EventLoop)>,
}

impl NetHarness {
    /// Everything the device offers a driver on a tap (no MTU).
    pub const FEATURES: u64 = RING_FEATURES | NET_FEATURES | OFFLOAD_FEATURES;
    /// The longest frame (vnet header included) the device moves either way.
    pub const MAX_FRAME_LEN: usize = super::MAX_FRAME_LEN;

    /// A device not yet activated, and the host's end of its stand-in tap (non-blocking): what
    /// is written there is a frame from the host, what is read there a frame from the guest.
    pub fn new() -> io::Result<(NetHarness, OwnedFd)> {
        let mut fds = [0; 2];
        let kind = libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        // SAFETY: `fds` has room for the two descriptors socketpair writes.
        if unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, fds.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nothing else.
        let (ours, host) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let harness = NetHarness {
            backend: Arc::new(PairEnd(ours)),
            stop: EventFd::new(EFD_NONBLOCK)?,
            active: None,
        };
        Ok((harness, host))
    }

    /// What `NetDevice::activate` does (a reset first when the device was active: the worker and
    /// the frame it held are gone), up to starting the worker's thread; then the worker's first
    /// turn, as its thread takes it before waiting.
    pub fn activate(
        &mut self,
        mem: GuestMem,
        interrupt: Arc<dyn Interrupt>,
        queues: Vec<ActiveQueue>,
        acked_features: u64,
    ) -> Result<(), ActivateError> {
        let acked_features = acked_features & Self::FEATURES;
        let mut queues = accept_queues::<2>(queues, &mem, acked_features)?;
        self.active = None;
        self.backend
            .set_offload(tap_offloads(acked_features))
            .map_err(|e| ActivateError::Device(e.to_string()))?;
        // As `NetWorker::run` starts: receive kicks off while the backend is watched (a failure
        // only costs wakeups), a loop of its own (the backend's watch is registered there), then
        // a turn.
        let _ = queues[0].queue.disable_notification(&mem);
        let events = EventLoop::new(&self.stop).map_err(ActivateError::Worker)?;
        let worker = NetWorker::new(
            mem,
            interrupt,
            queues,
            self.backend.clone(),
            acked_features,
            Arc::new(NetStats::default()),
        );
        self.active = Some((worker, events));
        self.turn();
        Ok(())
    }

    /// What the worker does when woken by kicks of both queues: the guest's transmit chains to
    /// the backend, then frames from the backend into receive buffers. (A guest may kick either
    /// queue at any time, so this covers what the backend's readiness would have woken it for.)
    pub fn turn(&mut self) {
        if let Some((worker, events)) = &mut self.active {
            worker.process_tx(events);
            worker.process_rx(events);
        }
    }
}
