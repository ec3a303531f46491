//! A fake guest driver for device unit tests and, with the `fuzzing` feature, the fuzz targets:
//! guest memory, split queues laid out as a virtio driver lays them out, kicks through the notify
//! eventfd and an interrupt counter.
//!
//! Not virtio-queue's `MockSplitQueue`: it places the used ring `len` bytes after the avail ring's
//! start instead of `2 * len`, so from the (len/2)-th chain on, offering one overwrote the used
//! ring's index and the driver read replies the device had not written yet.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{ActiveQueue, GuestMem, Interrupt};

/// Size of the test guest's memory; queues live in the first MiB, buffers above.
pub const MEM_SIZE: usize = 16 << 20;

pub fn guest_memory() -> GuestMem {
    GuestMem::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("guest memory")
}

/// Counts the interrupts a device raises.
#[derive(Default)]
pub struct CountingInterrupt {
    pub used: AtomicUsize,
}

impl Interrupt for CountingInterrupt {
    fn signal_used_queue(&self) -> std::io::Result<()> {
        self.used.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn signal_config_change(&self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn counting_interrupt() -> Arc<CountingInterrupt> {
    Arc::new(CountingInterrupt::default())
}

/// One buffer of a chain: where, how long, and whether the device may write it.
#[derive(Clone, Copy)]
pub struct Buf {
    pub addr: u64,
    pub len: u32,
    pub writable: bool,
}

impl Buf {
    pub fn readable(addr: u64, len: u32) -> Buf {
        Buf {
            addr,
            len,
            writable: false,
        }
    }
    pub fn writable(addr: u64, len: u32) -> Buf {
        Buf {
            addr,
            len,
            writable: true,
        }
    }
}

/// The driver's side of one split virtqueue.
pub struct DriverQueue<'a> {
    mem: &'a GuestMem,
    desc_table: u64,
    avail: u64,
    used: u64,
    size: u16,
    next_desc: u16,
    used_seen: u16,
    notify: EventFd,
}

impl<'a> DriverQueue<'a> {
    /// A queue of `size` entries whose descriptor table starts at `base`, rings zeroed.
    pub fn new(mem: &'a GuestMem, base: u64, size: u16) -> DriverQueue<'a> {
        let entries = u64::from(size);
        // The virtio spec's split layout: flags, idx, ring, then the event index of each ring.
        let avail = base + 16 * entries;
        let used = (avail + 4 + 2 * entries + 2).next_multiple_of(4);
        let end = used + 4 + 8 * entries + 2;
        let zeroes = vec![0u8; (end - base) as usize];
        mem.write_slice(&zeroes, GuestAddress(base))
            .expect("queue inside guest memory");
        DriverQueue {
            mem,
            desc_table: base,
            avail,
            used,
            size,
            next_desc: 0,
            used_seen: 0,
            notify: EventFd::new(EFD_NONBLOCK).expect("eventfd"),
        }
    }

    /// The queue as the transport hands it to the device.
    pub fn active(&self) -> ActiveQueue {
        ActiveQueue {
            queue: self.queue(),
            notify: self.notify.try_clone().expect("eventfd clone"),
        }
    }

    /// What the transport builds from the addresses the driver wrote.
    fn queue(&self) -> Queue {
        let mut queue = Queue::new(self.size).expect("queue size");
        queue.set_size(self.size);
        let halves = |addr: u64| (Some(addr as u32), Some((addr >> 32) as u32));
        let (lo, hi) = halves(self.desc_table);
        queue.set_desc_table_address(lo, hi);
        let (lo, hi) = halves(self.avail);
        queue.set_avail_ring_address(lo, hi);
        let (lo, hi) = halves(self.used);
        queue.set_used_ring_address(lo, hi);
        queue.set_ready(true);
        queue
    }

    fn load_u16(&self, addr: u64) -> u16 {
        self.mem.read_obj(GuestAddress(addr)).expect("ring field")
    }

    /// The descriptor index the next offered chain starts at.
    pub fn next_index(&mut self, chain_len: u16) -> u16 {
        if self.next_desc + chain_len > self.size {
            self.next_desc = 0;
        }
        self.next_desc
    }

    /// Makes a well-formed chain of `bufs` available (without kicking); returns its head index.
    pub fn offer(&mut self, bufs: &[Buf]) -> u16 {
        let first = self.next_index(bufs.len() as u16);
        let descs: Vec<SplitDescriptor> = bufs
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mut flags = if b.writable { VRING_DESC_F_WRITE } else { 0 } as u16;
                if i + 1 < bufs.len() {
                    flags |= VRING_DESC_F_NEXT as u16;
                }
                SplitDescriptor::new(b.addr, b.len, flags, first + i as u16 + 1)
            })
            .collect();
        self.offer_raw(&descs);
        first
    }

    /// Makes `bufs` available as an indirect chain whose descriptor table is written at `table`.
    pub fn offer_indirect(&mut self, table: u64, bufs: &[Buf]) {
        for (i, b) in bufs.iter().enumerate() {
            let mut flags = if b.writable { VRING_DESC_F_WRITE } else { 0 } as u16;
            if i + 1 < bufs.len() {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            let desc =
                RawDescriptor::from(SplitDescriptor::new(b.addr, b.len, flags, i as u16 + 1));
            self.mem
                .write_obj(desc, GuestAddress(table + 16 * i as u64))
                .expect("write indirect descriptor");
        }
        let len = 16 * bufs.len() as u32;
        self.offer_raw(&[SplitDescriptor::new(
            table,
            len,
            VRING_DESC_F_INDIRECT as u16,
            0,
        )]);
    }

    /// Writes `descs` verbatim at `next_index()` onwards and makes the first one available.
    pub fn offer_raw(&mut self, descs: &[SplitDescriptor]) {
        let first = self.next_index(descs.len() as u16);
        for (i, d) in descs.iter().enumerate() {
            let at = self.desc_table + 16 * u64::from(first + i as u16);
            self.mem
                .write_obj(RawDescriptor::from(*d), GuestAddress(at))
                .expect("store descriptor");
        }
        let idx = self.avail_idx();
        let slot = self.avail + 4 + 2 * u64::from(idx % self.size);
        self.mem
            .write_obj(first, GuestAddress(slot))
            .expect("avail slot");
        // The slot before the index that publishes it, as a driver's write barrier orders them.
        std::sync::atomic::fence(Ordering::Release);
        self.mem
            .write_obj(idx.wrapping_add(1), GuestAddress(self.avail + 2))
            .expect("avail idx");
        self.next_desc = first + descs.len() as u16;
    }

    /// The device's `avail_event` (EVENT_IDX): the driver kicks once its avail index passes it.
    pub fn avail_event(&self) -> u16 {
        self.load_u16(self.used + 4 + 8 * u64::from(self.size))
    }

    /// How many chains the driver has made available so far (its avail index).
    pub fn avail_idx(&self) -> u16 {
        self.load_u16(self.avail + 2)
    }

    pub fn kick(&self) {
        self.notify.write(1).expect("kick");
    }

    /// Waits for the device to return the next chain; gives (head index, used length).
    pub fn wait_used(&mut self, timeout: Duration) -> Option<(u32, u32)> {
        let deadline = Instant::now() + timeout;
        while self.load_u16(self.used + 2) == self.used_seen {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        std::sync::atomic::fence(Ordering::Acquire);
        let slot = self.used + 4 + 8 * u64::from(self.used_seen % self.size);
        let id: u32 = self.mem.read_obj(GuestAddress(slot)).expect("used id");
        let len: u32 = self.mem.read_obj(GuestAddress(slot + 4)).expect("used len");
        self.used_seen = self.used_seen.wrapping_add(1);
        Some((id, len))
    }

    pub fn write(&self, addr: u64, bytes: &[u8]) {
        self.mem
            .write_slice(bytes, GuestAddress(addr))
            .expect("write guest memory");
    }

    pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        self.mem
            .read_slice(&mut out, GuestAddress(addr))
            .expect("read guest memory");
        out
    }
}
