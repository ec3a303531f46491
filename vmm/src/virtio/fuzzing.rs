//! Entry points for the fuzz targets in `vmm/fuzz` (`fuzzing` feature, never in shipped builds):
//! each device's handling of the chains a queue holds, run on the calling thread so a target is
//! deterministic and fast. Queues are built with [`super::test_driver`].

use virtio_queue::Queue;

pub use super::fs::fuzzing::FsHarness;
pub use super::net::fuzzing::NetHarness;
use super::queue_service::serve_available;
pub use super::vsock::fuzzing::VsockHarness;
use super::GuestMem;

/// Serves every chain available on `queue` as the entropy device's worker does.
pub fn serve_rng(queue: &mut Queue, mem: &GuestMem) -> usize {
    serve_available(queue, mem, |chain| super::rng::fill_chain(mem, chain))
}
