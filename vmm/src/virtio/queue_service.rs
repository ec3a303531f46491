//! Serving a virtqueue in batches: take every chain the driver made available, then tell the
//! driver once (and only if it asked to hear, with EVENT_IDX) instead of once per chain.

use virtio_queue::{DescriptorChain, Queue, QueueT};

use super::{GuestMem, Interrupt};

/// Hands every available chain to `serve` and puts it in the used ring with the length `serve`
/// wrote. Notifications from the driver stay off while we work, and the ring is re-checked after
/// turning them back on so a chain added in between is not left waiting for a kick that never
/// comes. Returns how many chains were used.
pub(crate) fn serve_available<F>(queue: &mut Queue, mem: &GuestMem, mut serve: F) -> usize
where
    F: FnMut(DescriptorChain<&GuestMem>) -> u32,
{
    let mut used = 0;
    // A ring whose indices are corrupt yields no chain yet always looks non-empty: give up on it
    // after a second empty pass instead of spinning (the next kick retries).
    let mut empty_passes = 0;
    loop {
        if let Err(e) = queue.disable_notification(mem) {
            tracing::warn!("virtqueue unusable: {e}");
            return used;
        }
        let mut popped = 0;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let len = serve(chain);
            if let Err(e) = queue.add_used(mem, head, len) {
                tracing::warn!("cannot return descriptor chain {head}: {e}");
            }
            popped += 1;
        }
        used += popped;
        empty_passes = if popped == 0 { empty_passes + 1 } else { 0 };
        match queue.enable_notification(mem) {
            Ok(true) if empty_passes < 2 => continue,
            Ok(_) => return used,
            Err(e) => {
                tracing::warn!("virtqueue unusable: {e}");
                return used;
            }
        }
    }
}

/// Interrupts the guest if it wants to hear about the chains used since the last call.
pub(crate) fn notify_guest(queue: &mut Queue, mem: &GuestMem, interrupt: &dyn Interrupt) {
    match queue.needs_notification(mem) {
        Ok(true) => {
            if let Err(e) = interrupt.signal_used_queue() {
                tracing::error!("cannot interrupt the guest: {e}");
            }
        }
        Ok(false) => {}
        Err(e) => tracing::warn!("virtqueue unusable: {e}"),
    }
}
