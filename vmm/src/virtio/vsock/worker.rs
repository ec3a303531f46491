//! The vsock device thread: guest packets from the tx queue go to the muxer, the muxer's
//! packets go into guest buffers from the rx queue, and one epoll set wakes it for queue kicks
//! and host sockets alike.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use virtio_vsock::packet::VsockPacket;
use vmm_sys_util::epoll::{ControlOperation, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::muxer::Muxer;
use super::proto::MAX_PKT_DATA;
use crate::virtio::queue_service::{notify_guest, serve_available};
use crate::virtio::{ActiveQueue, GuestMem, Interrupt};

const STOP_TOKEN: u64 = 0;
const RX_TOKEN: u64 = 1;
const TX_TOKEN: u64 = 2;

pub(super) struct VsockWorker {
    mem: GuestMem,
    interrupt: Arc<dyn Interrupt>,
    rx: ActiveQueue,
    tx: ActiveQueue,
    /// The event queue: held so the driver's buffers stay with us; we send no events.
    _event: ActiveQueue,
    muxer: Arc<Mutex<Muxer>>,
}

impl VsockWorker {
    pub(super) fn new(
        mem: GuestMem,
        interrupt: Arc<dyn Interrupt>,
        queues: [ActiveQueue; 3],
        muxer: Arc<Mutex<Muxer>>,
    ) -> VsockWorker {
        let [rx, tx, event] = queues;
        VsockWorker {
            mem,
            interrupt,
            rx,
            tx,
            _event: event,
            muxer,
        }
    }

    pub(super) fn run(mut self, stop: &EventFd) {
        let muxer = self.muxer.clone();
        // Only one worker runs at a time; a panic of an earlier one leaves nothing half-done
        // that matters more than serving on.
        let mut muxer = muxer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let sources = [
            (stop.as_raw_fd(), STOP_TOKEN),
            (self.rx.notify.as_raw_fd(), RX_TOKEN),
            (self.tx.notify.as_raw_fd(), TX_TOKEN),
        ];
        for (fd, token) in sources {
            let event = EpollEvent::new(EventSet::IN, token);
            if let Err(e) = muxer.epoll().ctl(ControlOperation::Add, fd, event) {
                tracing::error!("virtio-vsock worker cannot start: {e}");
                return;
            }
        }
        if let Err(e) = self.serve(&mut muxer) {
            tracing::error!("virtio-vsock worker stopped: {e}");
        }
        // The eventfds outlive us (the transport holds them): unhook them before a new worker
        // hooks up its own.
        for (fd, _) in sources {
            let _ = muxer
                .epoll()
                .ctl(ControlOperation::Delete, fd, EpollEvent::default());
        }
    }

    fn serve(&mut self, muxer: &mut MutexGuard<'_, Muxer>) -> std::io::Result<()> {
        self.process_tx(muxer);
        self.fill_rx(muxer);
        let mut events = [EpollEvent::default(); 64];
        loop {
            let n = match muxer.epoll().wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let mut tx_kicked = false;
            for event in &events[..n] {
                match event.data() {
                    STOP_TOKEN => {
                        // The VM is going away (often right after the guest's last words, e.g.
                        // an exit status): deliver what is already in the tx ring.
                        self.process_tx(muxer);
                        return Ok(());
                    }
                    // Failed reads only mean the counter was already drained.
                    RX_TOKEN => drop(self.rx.notify.read()),
                    TX_TOKEN => {
                        let _ = self.tx.notify.read();
                        tx_kicked = true;
                    }
                    token => muxer.on_fd_event(token, event.event_set()),
                }
            }
            if tx_kicked {
                self.process_tx(muxer);
            }
            self.fill_rx(muxer);
        }
    }

    /// Hands every packet the guest sent to the muxer.
    pub(super) fn process_tx(&mut self, muxer: &mut Muxer) {
        let Self { mem, tx, .. } = self;
        let used = serve_available(&mut tx.queue, mem, |mut chain| {
            match VsockPacket::from_tx_virtq_chain(mem, &mut chain, MAX_PKT_DATA) {
                Ok(pkt) => muxer.on_guest_packet(&pkt),
                Err(e) => tracing::debug!("virtio-vsock: dropped a malformed packet: {e}"),
            }
            0
        });
        if used > 0 {
            notify_guest(&mut self.tx.queue, &self.mem, self.interrupt.as_ref());
        }
    }

    /// Moves what the muxer has for the guest into receive buffers while both last.
    pub(super) fn fill_rx(&mut self, muxer: &mut Muxer) {
        let queue: &mut Queue = &mut self.rx.queue;
        let mem = &self.mem;
        let mut used = 0;
        // Re-checks after asking for a kick, bounded in case the ring's indices are corrupt.
        let mut rechecks = 0;
        while muxer.has_rx_work() {
            let Some(mut chain) = queue.pop_descriptor_chain(mem) else {
                // Out of buffers: have the guest kick us when it adds some, and catch any it
                // added just now.
                match queue.enable_notification(mem) {
                    Ok(true) if rechecks < 1 => {
                        rechecks += 1;
                        continue;
                    }
                    _ => break,
                }
            };
            let head = chain.head_index();
            let len = match VsockPacket::from_rx_virtq_chain(mem, &mut chain, MAX_PKT_DATA) {
                Ok(mut pkt) if pkt.data_slice().is_some_and(|d| !d.is_empty()) => {
                    match muxer.fill_rx(&mut pkt) {
                        Some(len) => len,
                        None => {
                            // Nothing ready after all: the buffer stays available.
                            queue.go_to_previous_position();
                            break;
                        }
                    }
                }
                Ok(_) => 0,
                Err(e) => {
                    tracing::debug!("virtio-vsock: unusable receive buffer: {e}");
                    0
                }
            };
            if let Err(e) = queue.add_used(mem, head, len) {
                tracing::warn!("virtio-vsock: cannot return a receive buffer: {e}");
            }
            used += 1;
        }
        if used > 0 {
            notify_guest(queue, mem, self.interrupt.as_ref());
        }
    }
}
