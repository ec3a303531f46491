//! virtio-vsock (device ID 19) with a Unix-socket backend on the host.
//!
//! - `proto`: the wire vocabulary and the headers we write.
//! - `connection`: one stream's state machine and credit accounting.
//! - `muxer`: the Unix-socket side (listener, `CONNECT` handshake, `<path>_<port>` forwarding,
//!   connection table, fairness).
//! - `worker`: the device thread moving packets between the virtqueues and the muxer.

mod connection;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzzing;
mod muxer;
mod proto;
#[cfg(test)]
mod tests;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_ids::VIRTIO_ID_VSOCK;

use super::config_space::read_config_bytes;
use super::device_thread::DeviceThread;
use super::queue_service::accept_queues;
use super::{ActivateError, ActiveQueue, GuestMem, Interrupt, VirtioDevice};
use crate::seccomp::ThreadKind;
use muxer::Muxer;
use worker::VsockWorker;

/// Size of each virtqueue offered to the driver.
const QUEUE_SIZE: u16 = 256;
/// rx (device → guest), tx (guest → device), event.
const QUEUE_SIZES: [u16; 3] = [QUEUE_SIZE; 3];

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("guest CID {0} is reserved or out of range (use 3 to 4294967294)")]
    InvalidCid(u64),
    #[error("cannot listen on the vsock socket {path}: {source}")]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the virtio-vsock worker thread: {0}")]
    Worker(#[source] std::io::Error),
}

/// A virtio-vsock device whose host side is Unix sockets around `uds_path`.
pub struct VsockDevice {
    /// Dropped first: the job's muxer must not be the last, or the worker would remove the
    /// socket file (a call its seccomp filter does not allow).
    worker: DeviceThread,
    guest_cid: u64,
    muxer: Arc<Mutex<Muxer>>,
}

impl VsockDevice {
    /// Listens on `uds_path` (which must not exist) for host clients at once; they are served
    /// once the guest driver is up.
    pub fn new(guest_cid: u64, uds_path: &Path) -> Result<VsockDevice, VsockError> {
        if !(3..=u64::from(u32::MAX - 1)).contains(&guest_cid) {
            return Err(VsockError::InvalidCid(guest_cid));
        }
        let muxer = Muxer::new(guest_cid, uds_path).map_err(|source| VsockError::Listen {
            path: uds_path.to_owned(),
            source,
        })?;
        Ok(VsockDevice {
            guest_cid,
            muxer: Arc::new(Mutex::new(muxer)),
            worker: DeviceThread::start("virtio-vsock", ThreadKind::VsockWorker)
                .map_err(VsockError::Worker)?,
        })
    }

    fn stop_worker(&mut self) {
        self.worker.stop();
        // The guest's sockets died with its driver.
        if let Ok(mut muxer) = self.muxer.lock() {
            muxer.reset();
        }
    }
}

impl VirtioDevice for VsockDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.guest_cid.to_le_bytes(), offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMem,
        interrupt: Arc<dyn Interrupt>,
        queues: Vec<ActiveQueue>,
        acked_features: u64,
    ) -> Result<(), ActivateError> {
        let queues = accept_queues(queues, &mem, acked_features)?;
        let worker = VsockWorker::new(mem, interrupt, queues, self.muxer.clone());
        self.stop_worker();
        self.worker
            .run(move |stop| worker.run(stop))
            .map_err(ActivateError::Worker)
    }

    fn reset(&mut self) -> bool {
        self.stop_worker();
        true
    }
}
