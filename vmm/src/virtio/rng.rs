//! virtio-rng: the guest's entropy source, filled from the host's `getrandom(2)`.
//!
//! A freshly booted guest has little entropy of its own; without this device anything that
//! needs random numbers early (TLS, `getrandom()` in the container's first process) may block.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;
use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes};
use vmm_sys_util::eventfd::EventFd;

use super::device_thread::DeviceThread;
use super::event_loop::EventLoop;
use super::queue_service::{accept_queues, notify_guest, serve_available};
use super::{ActivateError, ActiveQueue, GuestMem, Interrupt, VirtioDevice};
use crate::seccomp::ThreadKind;

const QUEUE_SIZES: [u16; 1] = [256];
/// The most one request gets; Linux asks for far less, a hostile driver for 4 GiB.
const MAX_BYTES_PER_REQUEST: u32 = 64 * 1024;
const CHUNK: usize = 4096;

/// The entropy device. No config space, one request queue.
pub struct RngDevice {
    worker: DeviceThread,
}

impl RngDevice {
    /// The device, with its (idle) worker thread.
    pub fn new() -> std::io::Result<Self> {
        Ok(RngDevice {
            worker: DeviceThread::start("virtio-rng", ThreadKind::RngWorker)?,
        })
    }
}

impl VirtioDevice for RngDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(
        &mut self,
        mem: GuestMem,
        interrupt: Arc<dyn Interrupt>,
        queues: Vec<ActiveQueue>,
        acked_features: u64,
    ) -> Result<(), ActivateError> {
        let [queue] = accept_queues::<1>(queues, &mem, acked_features)?;
        self.worker
            .run(move |stop| {
                if let Err(e) = serve(queue, &mem, interrupt.as_ref(), stop) {
                    tracing::error!("virtio-rng stopped: {e}");
                }
            })
            .map_err(ActivateError::Worker)
    }

    fn reset(&mut self) -> bool {
        self.worker.stop();
        true
    }
}

/// The worker: serves the queue on every kick until `stop` fires.
fn serve(
    mut q: ActiveQueue,
    mem: &GuestMem,
    interrupt: &dyn Interrupt,
    stop: &EventFd,
) -> std::io::Result<()> {
    let events = EventLoop::new(stop)?;
    events.add(q.notify.as_raw_fd(), 0)?;
    let serve_queue = |q: &mut ActiveQueue| {
        if serve_available(&mut q.queue, mem, |chain| fill_chain(mem, chain)) > 0 {
            notify_guest(&mut q.queue, mem, interrupt);
        }
    };
    // Also covers buffers made available before the first kick reached us.
    serve_queue(&mut q);
    events.run(|_| {
        // A failed read only means the counter was already drained.
        let _ = q.notify.read();
        serve_queue(&mut q);
    })
}

/// Fills the chain's writable buffers with random bytes; returns how many were written.
/// A buffer outside guest memory ends the request with what was written so far.
pub(super) fn fill_chain(mem: &GuestMem, chain: DescriptorChain<&GuestMem>) -> u32 {
    let mut chunk = [0u8; CHUNK];
    let mut written: u32 = 0;
    for desc in chain.writable() {
        let want = desc.len().min(MAX_BYTES_PER_REQUEST - written);
        let mut done = 0u32;
        while done < want {
            let n = (want - done).min(CHUNK as u32) as usize;
            if let Err(e) = getrandom(&mut chunk[..n]) {
                tracing::error!("getrandom failed: {e}");
                return written + done;
            }
            let Some(addr) = desc.addr().checked_add(u64::from(done)) else {
                return written + done;
            };
            if mem.write_slice(&chunk[..n], addr).is_err() {
                tracing::debug!(
                    "virtio-rng: buffer at {:#x} is outside guest memory",
                    addr.raw_value()
                );
                return written + done;
            }
            done += n as u32;
        }
        written += done;
        if written >= MAX_BYTES_PER_REQUEST {
            break;
        }
    }
    written
}

/// Fills `buf` from the kernel's random pool.
pub(crate) fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: `rest` is valid writable memory of the given length.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
            continue;
        }
        filled += n as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::split::Descriptor as SplitDescriptor;

    use super::*;
    use crate::virtio::test_driver::{
        counting_interrupt, guest_memory, Buf, DriverQueue, MEM_SIZE,
    };

    const WAIT: Duration = Duration::from_secs(5);

    fn started(
        mem: &GuestMem,
    ) -> (
        RngDevice,
        DriverQueue<'_>,
        Arc<crate::virtio::test_driver::CountingInterrupt>,
    ) {
        let q = DriverQueue::new(mem, 0x1000, 16);
        let irq = counting_interrupt();
        let mut dev = RngDevice::new().unwrap();
        dev.activate(
            mem.clone(),
            irq.clone(),
            vec![q.active()],
            1 << VIRTIO_F_VERSION_1,
        )
        .unwrap();
        (dev, q, irq)
    }

    #[test]
    fn fills_writable_buffers_with_random_bytes() {
        let mem = guest_memory();
        let (_dev, mut q, irq) = started(&mem);
        q.offer(&[
            Buf::readable(0x10_0000, 16),
            Buf::writable(0x20_0000, 100),
            Buf::writable(0x30_0000, 5000),
        ]);
        q.kick();
        let (_, len) = q.wait_used(WAIT).expect("request served");
        assert_eq!(
            len, 5100,
            "readable buffer skipped, both writable ones filled"
        );
        assert_ne!(q.read(0x20_0000, 100), vec![0u8; 100]);
        assert_ne!(q.read(0x30_0000 + 4096, 904), vec![0u8; 904]);
        assert_eq!(
            q.read(0x10_0000, 16),
            vec![0u8; 16],
            "readable buffer untouched"
        );
        assert!(irq.used.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    }

    #[test]
    fn huge_requests_are_capped() {
        let mem = guest_memory();
        let (_dev, mut q, _) = started(&mem);
        q.offer(&[Buf::writable(0x20_0000, u32::MAX / 2)]);
        q.kick();
        // Writes stop at the end of guest memory or at the cap, whichever comes first.
        let (_, len) = q.wait_used(WAIT).expect("served");
        assert_eq!(len, MAX_BYTES_PER_REQUEST);
    }

    #[test]
    fn malformed_chains_get_short_answers_not_panics() {
        let mem = guest_memory();
        let (mut dev, mut q, _) = started(&mem);
        // A buffer past the end of guest memory: nothing written.
        q.offer(&[Buf::writable(MEM_SIZE as u64 + 0x1000, 64)]);
        q.kick();
        assert_eq!(q.wait_used(WAIT).expect("served").1, 0);
        // A buffer that runs off the end of guest memory: written up to the end, in chunks.
        q.offer(&[Buf::writable(MEM_SIZE as u64 - 100, 4196)]);
        q.kick();
        assert!(q.wait_used(WAIT).expect("served").1 < 4196);
        // An address that wraps around the 64-bit space.
        q.offer(&[Buf::writable(u64::MAX - 10, 64)]);
        q.kick();
        assert_eq!(q.wait_used(WAIT).expect("served").1, 0);
        // A descriptor that chains to itself: the loop is cut, the request still answered.
        let flags = (VRING_DESC_F_WRITE | VRING_DESC_F_NEXT) as u16;
        let at = q.next_index(1);
        q.offer_raw(&[SplitDescriptor::new(0x20_0000, 8, flags, at)]);
        q.kick();
        let (_, len) = q.wait_used(WAIT).expect("looping chain answered");
        assert!(len <= 16 * 8);
        // A chain pointing past the descriptor table.
        q.offer_raw(&[SplitDescriptor::new(0x20_0000, 8, flags, 999)]);
        q.kick();
        assert!(q.wait_used(WAIT).is_some());
        assert!(dev.reset());
    }

    #[test]
    fn reset_stops_and_reactivation_serves_again() {
        let mem = guest_memory();
        let (mut dev, _, _) = started(&mem);
        assert!(dev.reset());
        let mut q = DriverQueue::new(&mem, 0x8000, 16);
        dev.activate(mem.clone(), counting_interrupt(), vec![q.active()], 0)
            .unwrap();
        q.offer(&[Buf::writable(0x20_0000, 32)]);
        q.kick();
        assert_eq!(q.wait_used(WAIT).expect("served").1, 32);
        let err = dev
            .activate(mem.clone(), counting_interrupt(), vec![], 0)
            .unwrap_err();
        assert!(matches!(err, ActivateError::QueueCount { want: 1, got: 0 }));
    }
}
