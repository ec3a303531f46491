//! Serving a virtqueue in batches: take every chain the driver made available, then tell the
//! driver once (and only if it asked to hear, with EVENT_IDX) instead of once per chain.

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};

use super::{ActivateError, ActiveQueue, GuestMem, Interrupt};

/// The ring features our devices offer: virtio 1.x, EVENT_IDX notification suppression, and
/// indirect descriptor tables (what Linux uses for multi-buffer requests).
pub(crate) const RING_FEATURES: u64 =
    (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX) | (1 << VIRTIO_RING_F_INDIRECT_DESC);

/// Takes the queues the transport handed over: exactly `N`, each inside guest memory, set to
/// the EVENT_IDX mode the driver accepted.
pub(crate) fn accept_queues<const N: usize>(
    queues: Vec<ActiveQueue>,
    mem: &GuestMem,
    acked_features: u64,
) -> Result<[ActiveQueue; N], ActivateError> {
    let got = queues.len();
    let mut queues: [ActiveQueue; N] = queues
        .try_into()
        .map_err(|_| ActivateError::QueueCount { want: N, got })?;
    let event_idx = acked_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
    for (index, q) in queues.iter_mut().enumerate() {
        q.queue.set_event_idx(event_idx);
        if !q.queue.is_valid(mem) {
            return Err(ActivateError::Device(format!(
                "the driver set up queue {index} outside guest memory"
            )));
        }
    }
    Ok(queues)
}

/// Hands every available chain to `serve` and puts it in the used ring with the length `serve`
/// wrote. Notifications from the driver stay off while we work, and the ring is re-checked after
/// turning them back on so a chain added in between is not left waiting for a kick that never
/// comes. Returns how many chains were used.
pub(crate) fn serve_available<F>(queue: &mut Queue, mem: &GuestMem, mut serve: F) -> usize
where
    F: FnMut(DescriptorChain<&GuestMem>) -> u32,
{
    serve_available_while(queue, mem, |chain| Some(serve(chain))).0
}

/// [`serve_available`], except that `serve` may decline a chain (`None`, e.g. while the host side
/// cannot take more): the chain goes back to the available ring, serving stops with the driver's
/// notifications left off (the caller resumes on its own event), and the second value is true.
pub(crate) fn serve_available_while<F>(
    queue: &mut Queue,
    mem: &GuestMem,
    mut serve: F,
) -> (usize, bool)
where
    F: FnMut(DescriptorChain<&GuestMem>) -> Option<u32>,
{
    let mut used = 0;
    // A ring whose indices are corrupt yields no chain yet always looks non-empty: give up on it
    // after a second empty pass instead of spinning (the next kick retries).
    let mut empty_passes = 0;
    loop {
        if let Err(e) = queue.disable_notification(mem) {
            tracing::warn!("virtqueue unusable: {e}");
            return (used, false);
        }
        let mut popped = 0;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let Some(len) = serve(chain) else {
                queue.go_to_previous_position();
                return (used + popped, true);
            };
            if let Err(e) = queue.add_used(mem, head, len) {
                tracing::warn!("cannot return descriptor chain {head}: {e}");
            }
            popped += 1;
        }
        used += popped;
        empty_passes = if popped == 0 { empty_passes + 1 } else { 0 };
        match queue.enable_notification(mem) {
            Ok(true) if empty_passes < 2 => continue,
            Ok(_) => return (used, false),
            Err(e) => {
                tracing::warn!("virtqueue unusable: {e}");
                return (used, false);
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
