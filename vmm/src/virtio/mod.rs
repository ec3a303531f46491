//! The contract between virtio devices and their transport (virtio-mmio).
//!
//! A device describes itself (type, features, queues, config space) and, once the driver has set
//! it up, is handed its queues, the guest memory and a way to interrupt the guest. From then on
//! the device serves its queues on its own worker thread(s), woken by each queue's notification
//! eventfd (an ioeventfd the transport registered with KVM), so the vCPU threads never block on
//! device work.

use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

// VMM core: the transport and the entropy device.
pub mod mmio;
pub mod rng;

// Devices helper: devices and what they share.
pub(crate) mod config_space;
pub(crate) mod device_thread;
pub(crate) mod event_loop;
pub mod fs;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod net;
pub(crate) mod queue_service;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod test_driver;
pub mod vsock;

/// Guest memory as every device sees it.
pub type GuestMem = GuestMemoryMmap<()>;

/// Raises the device's interrupt in the guest.
pub trait Interrupt: Send + Sync {
    /// The device put buffers in a used ring.
    fn signal_used_queue(&self) -> std::io::Result<()>;
    /// The device changed its configuration space.
    fn signal_config_change(&self) -> std::io::Result<()>;
}

/// A queue the driver has set up, with the eventfd the guest kicks when it adds buffers.
pub struct ActiveQueue {
    pub queue: Queue,
    pub notify: EventFd,
}

#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("the driver set up {got} queues, the device needs {want}")]
    QueueCount { want: usize, got: usize },
    #[error("cannot start the device worker: {0}")]
    Worker(#[source] std::io::Error),
    #[error("{0}")]
    Device(String),
}

/// One virtio device, independent of its transport.
pub trait VirtioDevice: Send {
    /// The virtio device ID (`virtio_bindings::virtio_ids`).
    fn device_type(&self) -> u32;
    /// The maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits offered to the driver (VIRTIO_F_VERSION_1 included): by default the ring
    /// features every device of ours serves its queues with; a device with its own feature bits
    /// adds them.
    fn device_features(&self) -> u64 {
        queue_service::RING_FEATURES
    }
    /// Reads `data.len()` bytes of config space at `offset`; bytes past the end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes config space; most devices ignore it.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Starts serving `queues` (in queue-index order) with the features the driver accepted.
    fn activate(
        &mut self,
        mem: GuestMem,
        interrupt: Arc<dyn Interrupt>,
        queues: Vec<ActiveQueue>,
        acked_features: u64,
    ) -> Result<(), ActivateError>;
    /// Stops the workers so the driver can set the device up again; false if it cannot.
    fn reset(&mut self) -> bool {
        false
    }
}
