//! virtio-vsock for the fuzz targets (`fuzzing` feature): the worker's loop, one turn at a time
//! on the calling thread.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use vmm_sys_util::epoll::EpollEvent;

use super::muxer::{Muxer, LISTENER_TOKEN};
use super::worker::VsockWorker;
use super::{ActiveQueue, GuestMem, Interrupt};

/// A device's worker and muxer (listening on `uds_path`), without the thread.
pub struct VsockHarness {
    worker: VsockWorker,
    muxer: Arc<Mutex<Muxer>>,
}

impl VsockHarness {
    pub fn new(
        guest_cid: u64,
        uds_path: &Path,
        mem: GuestMem,
        interrupt: Arc<dyn Interrupt>,
        queues: [ActiveQueue; 3],
    ) -> io::Result<VsockHarness> {
        let muxer = Arc::new(Mutex::new(Muxer::new(guest_cid, uds_path)?));
        let worker = VsockWorker::new(mem, interrupt, queues, muxer.clone());
        Ok(VsockHarness { worker, muxer })
    }

    /// What the worker does on a wakeup: the guest's packets to the muxer, the host sockets'
    /// events that are ready now, then what the muxer has for the guest into receive buffers.
    pub fn turn(&mut self) {
        let mut muxer = self.muxer.lock().unwrap_or_else(PoisonError::into_inner);
        self.worker.process_tx(&mut muxer);
        let mut events = [EpollEvent::default(); 16];
        if let Ok(n) = muxer.epoll().wait(0, &mut events) {
            for event in &events[..n] {
                if event.data() >= LISTENER_TOKEN {
                    muxer.on_fd_event(event.data(), event.event_set());
                }
            }
        }
        self.worker.fill_rx(&mut muxer);
    }
}
