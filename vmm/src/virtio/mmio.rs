//! The virtio-mmio transport (virtio 1.x "modern" register layout, version 2).
//!
//! One 4 KiB window per device. The guest driver negotiates features and sets up queues through
//! these registers (vCPU threads, MMIO exits); on DRIVER_OK the queues are handed to the device,
//! which serves them on its own threads. Queue kicks bypass this code: each queue's QueueNotify
//! write is an ioeventfd (datamatch = queue index). Interrupts go out through an irqfd, with the
//! reason kept in InterruptStatus until the driver acknowledges it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{ActiveQueue, GuestMem, Interrupt, VirtioDevice};
use crate::devices::bus::BusDevice;

/// "virt" in little endian.
const MAGIC: u32 = 0x7472_6976;
const VERSION: u32 = 2;
/// No PCI vendor behind these devices.
const VENDOR_ID: u32 = 0;
/// The QueueNotify register, which the VM maps to per-queue ioeventfds.
pub const QUEUE_NOTIFY_OFFSET: u64 = 0x50;
const CONFIG_SPACE_OFFSET: u64 = 0x100;
const INT_USED_RING: u32 = 1;
const INT_CONFIG: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum MmioError {
    #[error("the device offers no queues")]
    NoQueues,
    #[error("queue {0} has an invalid maximum size {1} (must be a power of two up to 32768)")]
    QueueSize(usize, u16),
    #[error("cannot create an eventfd: {0}")]
    EventFd(#[source] std::io::Error),
}

/// The device's interrupt line: an irqfd plus the InterruptStatus register it explains.
pub struct MmioInterrupt {
    status: AtomicU32,
    irqfd: EventFd,
}

impl MmioInterrupt {
    fn raise(&self, reason: u32) -> std::io::Result<()> {
        self.status.fetch_or(reason, Ordering::SeqCst);
        self.irqfd.write(1)
    }
}

impl Interrupt for MmioInterrupt {
    fn signal_used_queue(&self) -> std::io::Result<()> {
        self.raise(INT_USED_RING)
    }

    fn signal_config_change(&self) -> std::io::Result<()> {
        self.raise(INT_CONFIG)
    }
}

/// One virtio device behind its MMIO register window.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMem,
    interrupt: Arc<MmioInterrupt>,
    queues: Vec<Queue>,
    /// The driver asked for a size the queue cannot have; such a queue fails activation.
    bad_size: Vec<bool>,
    notify: Vec<EventFd>,
    queue_sel: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    status: u32,
    /// How many queues the device got at DRIVER_OK (0 while not activated).
    activated_queues: usize,
    /// The device could not be reset: it keeps running and the transport refuses a new setup.
    wedged: bool,
}

impl MmioTransport {
    /// Wraps `device`; `irqfd` is the eventfd KVM turns into its interrupt.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMem,
        irqfd: EventFd,
    ) -> Result<Self, MmioError> {
        let sizes = device.queue_max_sizes().to_vec();
        if sizes.is_empty() {
            return Err(MmioError::NoQueues);
        }
        let mut queues = Vec::with_capacity(sizes.len());
        let mut notify = Vec::with_capacity(sizes.len());
        for (i, &max) in sizes.iter().enumerate() {
            queues.push(Queue::new(max).map_err(|_| MmioError::QueueSize(i, max))?);
            notify.push(EventFd::new(EFD_NONBLOCK).map_err(MmioError::EventFd)?);
        }
        Ok(MmioTransport {
            device,
            mem,
            interrupt: Arc::new(MmioInterrupt {
                status: AtomicU32::new(0),
                irqfd,
            }),
            bad_size: vec![false; queues.len()],
            queues,
            notify,
            queue_sel: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            status: 0,
            activated_queues: 0,
            wedged: false,
        })
    }

    /// The per-queue notification eventfds, in queue order, for registration as ioeventfds.
    pub fn queue_notifiers(&self) -> &[EventFd] {
        &self.notify
    }

    /// The virtio device type (for logs).
    pub fn device_type(&self) -> u32 {
        self.device.device_type()
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Queue registers may change only while the driver sets the device up and the queue is off.
    fn queue_writable(&self) -> bool {
        self.activated_queues == 0
            && self.status & VIRTIO_CONFIG_S_DRIVER_OK == 0
            && self
                .queues
                .get(self.queue_sel as usize)
                .is_some_and(|q| !q.ready())
    }

    fn read_register(&self, offset: u64) -> u32 {
        let sel = self.queue_sel as usize;
        match offset {
            0x00 => MAGIC,
            0x04 => VERSION,
            0x08 => self.device.device_type(),
            0x0c => VENDOR_ID,
            0x10 => match self.device_features_sel {
                0 => self.device.device_features() as u32,
                1 => (self.device.device_features() >> 32) as u32,
                _ => 0,
            },
            0x34 => self.queues.get(sel).map_or(0, |q| u32::from(q.max_size())),
            0x44 => {
                let handed_over = sel < self.activated_queues;
                u32::from(handed_over || self.queues.get(sel).is_some_and(|q| q.ready()))
            }
            0x60 => self.interrupt.status.load(Ordering::SeqCst),
            0x70 => self.status,
            // No shared memory regions: length all-ones means "absent".
            0xb0 | 0xb4 | 0xb8 | 0xbc => u32::MAX,
            // The config space never changes under the driver's feet.
            0xfc => 0,
            _ => 0,
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            0x14 => self.device_features_sel = value,
            0x20 => self.write_driver_features(value),
            0x24 => self.driver_features_sel = value,
            0x30 => self.queue_sel = value,
            0x38 if self.queue_writable() => {
                let sel = self.queue_sel as usize;
                if let Some(q) = self.queues.get_mut(sel) {
                    let ok = u16::try_from(value).is_ok_and(|size| q.try_set_size(size).is_ok());
                    self.bad_size[sel] = !ok;
                }
            }
            0x44 if self.activated_queues == 0 && self.status & VIRTIO_CONFIG_S_DRIVER_OK == 0 => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(value == 1);
                }
            }
            0x50 => self.notify_queue(value),
            0x64 => {
                self.interrupt.status.fetch_and(!value, Ordering::SeqCst);
            }
            0x70 => self.write_status(value),
            0x80..=0xa4 if self.queue_writable() => {
                let Some(q) = self.selected_queue() else {
                    return;
                };
                match offset {
                    0x80 => q.set_desc_table_address(Some(value), None),
                    0x84 => q.set_desc_table_address(None, Some(value)),
                    0x90 => q.set_avail_ring_address(Some(value), None),
                    0x94 => q.set_avail_ring_address(None, Some(value)),
                    0xa0 => q.set_used_ring_address(Some(value), None),
                    0xa4 => q.set_used_ring_address(None, Some(value)),
                    _ => tracing::debug!("virtio-mmio: write to reserved register {offset:#x}"),
                }
            }
            0xac => {} // SHMSel: there are no regions to select
            _ => tracing::debug!("virtio-mmio: ignored write {value:#x} to register {offset:#x}"),
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        let during_negotiation = self.status & VIRTIO_CONFIG_S_DRIVER != 0
            && self.status & VIRTIO_CONFIG_S_FEATURES_OK == 0;
        if !during_negotiation {
            tracing::debug!("virtio-mmio: driver features written outside negotiation, ignored");
            return;
        }
        match self.driver_features_sel {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(value),
            1 => {
                self.driver_features =
                    (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
            }
            _ => {}
        }
    }

    /// A QueueNotify write that KVM did not catch as an ioeventfd (odd width or value):
    /// forward it to the same eventfd so the device still sees the kick.
    fn notify_queue(&self, index: u32) {
        if let Some(evt) = self.notify.get(index as usize) {
            if let Err(e) = evt.write(1) {
                tracing::warn!("virtio-mmio: cannot forward queue notification: {e}");
            }
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        if self.wedged {
            return;
        }
        // The driver only ever adds bits; anything else is a confused driver.
        if value & self.status != self.status {
            tracing::warn!(
                "virtio-mmio: status {:#x} -> {value:#x} clears bits; ignored",
                self.status
            );
            return;
        }
        let added = value & !self.status;
        let mut new = value;
        if added & VIRTIO_CONFIG_S_FEATURES_OK != 0 && !self.features_acceptable() {
            // Leaving FEATURES_OK unset tells the driver we refuse its feature set.
            new &= !VIRTIO_CONFIG_S_FEATURES_OK;
        }
        self.status = new;
        let ready = VIRTIO_CONFIG_S_ACKNOWLEDGE
            | VIRTIO_CONFIG_S_DRIVER
            | VIRTIO_CONFIG_S_FEATURES_OK
            | VIRTIO_CONFIG_S_DRIVER_OK;
        if added & VIRTIO_CONFIG_S_DRIVER_OK != 0
            && new & ready == ready
            && self.activated_queues == 0
        {
            self.activate();
        }
    }

    fn features_acceptable(&self) -> bool {
        let offered = self.device.device_features();
        let unknown = self.driver_features & !offered;
        let modern = self.driver_features & (1 << VIRTIO_F_VERSION_1) != 0;
        if unknown != 0 || !modern {
            tracing::warn!(
                "virtio-mmio: driver asked for features {:#x} (offered {offered:#x}); refused",
                self.driver_features
            );
            return false;
        }
        true
    }

    fn activate(&mut self) {
        match self.take_active_queues() {
            Ok(active) => {
                let count = active.len();
                let result = self.device.activate(
                    self.mem.clone(),
                    self.interrupt.clone(),
                    active,
                    self.driver_features,
                );
                match result {
                    Ok(()) => {
                        self.activated_queues = count;
                        return;
                    }
                    Err(e) => tracing::error!(
                        "virtio device type {} failed to start: {e}",
                        self.device.device_type()
                    ),
                }
            }
            Err(why) => tracing::warn!("virtio device type {}: {why}", self.device.device_type()),
        }
        self.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
        if let Err(e) = self.interrupt.signal_config_change() {
            tracing::warn!("virtio-mmio: cannot interrupt the guest: {e}");
        }
    }

    /// Copies of the driver's ready queues (which must come first, in order) for the device.
    fn take_active_queues(&self) -> Result<Vec<ActiveQueue>, String> {
        let event_idx = self.driver_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        let count = self.queues.iter().take_while(|q| q.ready()).count();
        if count == 0 || self.queues[count..].iter().any(|q| q.ready()) {
            return Err("the driver's ready queues are not a prefix of the queue list".into());
        }
        let mut active = Vec::with_capacity(count);
        for (i, q) in self.queues[..count].iter().enumerate() {
            if self.bad_size[i] || !q.is_valid(&self.mem) {
                return Err(format!(
                    "queue {i} has an invalid size or addresses outside guest memory"
                ));
            }
            let mut queue = Queue::try_from(q.state()).map_err(|e| format!("queue {i}: {e:?}"))?;
            queue.set_event_idx(event_idx);
            let notify = self.notify[i]
                .try_clone()
                .map_err(|e| format!("queue {i}: {e}"))?;
            active.push(ActiveQueue { queue, notify });
        }
        Ok(active)
    }

    fn reset(&mut self) {
        if self.activated_queues > 0 && !self.device.reset() {
            tracing::warn!(
                "virtio device type {} cannot be reset; it stays unusable",
                self.device.device_type()
            );
            self.wedged = true;
            self.status = VIRTIO_CONFIG_S_FAILED;
            return;
        }
        for q in &mut self.queues {
            q.reset();
        }
        self.bad_size.fill(false);
        self.activated_queues = 0;
        self.queue_sel = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.status = 0;
        self.interrupt.status.store(0, Ordering::SeqCst);
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            self.device.read_config(offset - CONFIG_SPACE_OFFSET, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            tracing::debug!(
                "virtio-mmio: {}-byte read at {offset:#x} ignored",
                data.len()
            );
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_register(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            self.device.write_config(offset - CONFIG_SPACE_OFFSET, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            tracing::debug!(
                "virtio-mmio: {}-byte write at {offset:#x} ignored",
                data.len()
            );
            return;
        };
        if !offset.is_multiple_of(4) {
            return;
        }
        self.write_register(offset, u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestAddress;

    use super::*;
    use crate::virtio::ActivateError;

    /// What the fake device saw.
    #[derive(Default)]
    struct Seen {
        activations: Vec<(usize, u64)>,
        resets: usize,
    }

    struct FakeDevice {
        seen: Arc<Mutex<Seen>>,
        sizes: Vec<u16>,
        resettable: bool,
    }

    impl VirtioDevice for FakeDevice {
        fn device_type(&self) -> u32 {
            42
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &self.sizes
        }
        fn device_features(&self) -> u64 {
            1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_EVENT_IDX | 1
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            for (i, b) in data.iter_mut().enumerate() {
                *b = (offset as u8).wrapping_add(i as u8);
            }
        }
        fn activate(
            &mut self,
            _mem: GuestMem,
            _interrupt: Arc<dyn Interrupt>,
            queues: Vec<ActiveQueue>,
            acked: u64,
        ) -> Result<(), ActivateError> {
            self.seen
                .lock()
                .unwrap()
                .activations
                .push((queues.len(), acked));
            Ok(())
        }
        fn reset(&mut self) -> bool {
            self.seen.lock().unwrap().resets += 1;
            self.resettable
        }
    }

    fn mem() -> GuestMem {
        GuestMem::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    fn transport(
        mem: &GuestMem,
        sizes: &[u16],
        resettable: bool,
    ) -> (MmioTransport, Arc<Mutex<Seen>>) {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let dev = FakeDevice {
            seen: seen.clone(),
            sizes: sizes.to_vec(),
            resettable,
        };
        let t = MmioTransport::new(
            Box::new(dev),
            mem.clone(),
            EventFd::new(EFD_NONBLOCK).unwrap(),
        )
        .unwrap();
        (t, seen)
    }

    fn rd(t: &mut MmioTransport, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn wr(t: &mut MmioTransport, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }

    fn set_queue(t: &mut MmioTransport, index: u32, size: u32, desc: u64, avail: u64, used: u64) {
        wr(t, 0x30, index);
        wr(t, 0x38, size);
        for (reg, addr) in [(0x80, desc), (0x90, avail), (0xa0, used)] {
            wr(t, reg, addr as u32);
            wr(t, reg + 4, (addr >> 32) as u32);
        }
        wr(t, 0x44, 1);
    }

    /// Negotiates VERSION_1, points queue `index` at the mock queue `q` and sets DRIVER_OK.
    fn start_with(t: &mut MmioTransport, index: u32, q: &MockSplitQueue<GuestMem>) {
        negotiate(t, 1 << VIRTIO_F_VERSION_1);
        set_queue(
            t,
            index,
            16,
            q.desc_table_addr().0,
            q.avail_addr().0,
            q.used_addr().0,
        );
        wr(t, 0x70, ALL_OK);
    }

    /// Runs the driver's side of negotiation; returns the status read back after FEATURES_OK.
    fn negotiate(t: &mut MmioTransport, features: u64) -> u32 {
        wr(t, 0x70, VIRTIO_CONFIG_S_ACKNOWLEDGE);
        wr(
            t,
            0x70,
            VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER,
        );
        wr(t, 0x24, 0);
        wr(t, 0x20, features as u32);
        wr(t, 0x24, 1);
        wr(t, 0x20, (features >> 32) as u32);
        wr(
            t,
            0x70,
            VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK,
        );
        rd(t, 0x70)
    }

    const ALL_OK: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE
        | VIRTIO_CONFIG_S_DRIVER
        | VIRTIO_CONFIG_S_FEATURES_OK
        | VIRTIO_CONFIG_S_DRIVER_OK;

    #[test]
    fn identification_registers() {
        let m = mem();
        let (mut t, _) = transport(&m, &[16, 8], true);
        assert_eq!(rd(&mut t, 0x00), MAGIC);
        assert_eq!(rd(&mut t, 0x04), 2);
        assert_eq!(rd(&mut t, 0x08), 42);
        wr(&mut t, 0x14, 1);
        assert_eq!(rd(&mut t, 0x10), 1, "VERSION_1 is bit 32");
        wr(&mut t, 0x30, 1);
        assert_eq!(rd(&mut t, 0x34), 8);
        wr(&mut t, 0x30, 7);
        assert_eq!(rd(&mut t, 0x34), 0, "a missing queue has max size 0");
        assert_eq!(rd(&mut t, 0xb0), u32::MAX, "no shared memory");
        let mut cfg = [0u8; 3];
        t.read(0x104, &mut cfg);
        assert_eq!(cfg, [4, 5, 6]);
    }

    #[test]
    fn full_setup_activates_device_with_ready_queues() {
        let m = mem();
        let (mut t, seen) = transport(&m, &[16, 16], true);
        let q0 = MockSplitQueue::create(&m, GuestAddress(0x1000), 16);
        let q1 = MockSplitQueue::create(&m, GuestAddress(0x4000), 16);
        let features = 1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_EVENT_IDX;
        assert_ne!(negotiate(&mut t, features) & VIRTIO_CONFIG_S_FEATURES_OK, 0);
        for (i, q) in [&q0, &q1].iter().enumerate() {
            set_queue(
                &mut t,
                i as u32,
                16,
                q.desc_table_addr().0,
                q.avail_addr().0,
                q.used_addr().0,
            );
        }
        wr(&mut t, 0x70, ALL_OK);
        assert_eq!(rd(&mut t, 0x70), ALL_OK);
        assert_eq!(seen.lock().unwrap().activations, vec![(2, features)]);
        // Queue registers are frozen once running.
        wr(&mut t, 0x30, 0);
        wr(&mut t, 0x38, 4);
        assert_eq!(rd(&mut t, 0x44), 1);
    }

    #[test]
    fn unoffered_or_legacy_features_are_refused() {
        let m = mem();
        let (mut t, _) = transport(&m, &[16], true);
        assert_eq!(
            negotiate(&mut t, 1 << VIRTIO_F_VERSION_1 | 1 << 5) & VIRTIO_CONFIG_S_FEATURES_OK,
            0
        );
        wr(&mut t, 0x70, 0);
        assert_eq!(
            negotiate(&mut t, 1) & VIRTIO_CONFIG_S_FEATURES_OK,
            0,
            "no VERSION_1"
        );
    }

    #[test]
    fn queues_outside_memory_or_badly_sized_need_reset_instead_of_activating() {
        let m = mem();
        for (size, desc) in [
            (16, 0xffff_0000_0000),
            (16, 0xfffc0),
            (3, 0x1000),
            (64, 0x1000),
        ] {
            let (mut t, seen) = transport(&m, &[16], true);
            negotiate(&mut t, 1 << VIRTIO_F_VERSION_1);
            set_queue(&mut t, 0, size, desc, 0x2000, 0x3000);
            wr(&mut t, 0x70, ALL_OK);
            assert_ne!(
                rd(&mut t, 0x70) & VIRTIO_CONFIG_S_NEEDS_RESET,
                0,
                "size {size} desc {desc:#x}"
            );
            assert_eq!(rd(&mut t, 0x60) & INT_CONFIG, INT_CONFIG);
            assert!(seen.lock().unwrap().activations.is_empty());
        }
    }

    #[test]
    fn a_gap_in_ready_queues_is_refused() {
        let m = mem();
        let (mut t, seen) = transport(&m, &[16, 16], true);
        let q = MockSplitQueue::create(&m, GuestAddress(0x1000), 16);
        start_with(&mut t, 1, &q);
        assert_ne!(rd(&mut t, 0x70) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
        assert!(seen.lock().unwrap().activations.is_empty());
    }

    #[test]
    fn interrupt_ack_and_reset() {
        let m = mem();
        let (mut t, seen) = transport(&m, &[16], true);
        let q = MockSplitQueue::create(&m, GuestAddress(0x1000), 16);
        start_with(&mut t, 0, &q);
        t.interrupt.signal_used_queue().unwrap();
        t.interrupt.signal_config_change().unwrap();
        assert_eq!(rd(&mut t, 0x60), 3);
        wr(&mut t, 0x64, 1);
        assert_eq!(rd(&mut t, 0x60), 2);
        wr(&mut t, 0x70, 0);
        assert_eq!(rd(&mut t, 0x70), 0);
        assert_eq!(rd(&mut t, 0x60), 0);
        assert_eq!(rd(&mut t, 0x44), 0, "queue off after reset");
        assert_eq!(seen.lock().unwrap().resets, 1);
        // And it can be set up again.
        start_with(&mut t, 0, &q);
        assert_eq!(seen.lock().unwrap().activations.len(), 2);
    }

    #[test]
    fn a_device_that_cannot_reset_is_failed_not_reused() {
        let m = mem();
        let (mut t, seen) = transport(&m, &[16], false);
        let q = MockSplitQueue::create(&m, GuestAddress(0x1000), 16);
        start_with(&mut t, 0, &q);
        wr(&mut t, 0x70, 0);
        assert_eq!(rd(&mut t, 0x70), VIRTIO_CONFIG_S_FAILED);
        negotiate(&mut t, 1 << VIRTIO_F_VERSION_1);
        wr(&mut t, 0x70, ALL_OK);
        assert_eq!(seen.lock().unwrap().activations.len(), 1);
    }

    #[test]
    fn odd_accesses_and_stray_notifies_do_not_panic() {
        let m = mem();
        let (mut t, _) = transport(&m, &[16], true);
        let mut b = [0u8; 2];
        t.read(0x00, &mut b);
        assert_eq!(b, [0, 0]);
        t.write(0x70, &[1]);
        t.write(0x71, &[1, 2, 3, 4]);
        assert_eq!(rd(&mut t, 0x70), 0);
        wr(&mut t, 0x50, 99);
        wr(&mut t, 0x50, 0);
        assert_eq!(
            t.queue_notifiers()[0].read().unwrap(),
            1,
            "fallback notify reaches the eventfd"
        );
        let mut big = [0u8; 8];
        t.read(0xfff, &mut big);
    }
}
