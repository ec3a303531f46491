//! Any byte string as what a guest driver and the host do to virtio-net on a tap: the guest's
//! transmit chains (a vnet header and a frame: see `common` for the chain encoding), its receive
//! buffers, and frames of any size the host side writes. After each step the worker takes one
//! turn, as on a wakeup. It must never panic, whatever the rings and frames hold.
//!
//! The first byte picks what the driver accepted: bit 0 MRG_RXBUF, bit 1 GUEST_CSUM, bit 2
//! EVENT_IDX; bits 3-5 a shift of both queues' size (256 >> shift). Then records, each a kind
//! byte, % 16:
//! - 0..3: a transmit chain record (the kind byte is its own);
//! - 4..7: a receive chain record (the kind byte is its own);
//! - 8 LEN32 PIECES8 FILL8 HEAD: a transmit frame of LEN32 % 70001 bytes in 1 + PIECES8 % 4
//!   readable buffers (more when a piece would pass 64 KiB): up to 64 bytes of HEAD, then a
//!   pattern from FILL8;
//! - 9 COUNT8 LEN16: 1 + COUNT8 % 32 receive chains of one LEN16-byte buffer each;
//! - 10, 11 LEN16 DATA: the host writes a frame of DATA (up to LEN16 bytes);
//! - 12 LEN32 FILL8 HEAD: the host writes a frame of LEN32 % 70001 bytes, made as in 8;
//! - 13 FEATURES8: the driver resets the device and sets it up again, on new rings, with what
//!   FEATURES8 picks (as the first byte does; the size stays);
//! - 14, 15: nothing (a spurious wakeup).
//!
//! What is checked besides: a transmit chain of readable buffers only, 26 to 65562 bytes long,
//! reaches the host byte-exact (the vnet header included: a tap takes it); no other transmit
//! chain gives the host more than one frame, and a transmit chain comes back with length 0.
//! Every receive chain comes back once, with no more bytes than its buffers hold; a frame the
//! guest receives is one the host sent, in order (frames may be dropped), its header's
//! `num_buffers` set and its flags cleared without GUEST_CSUM. Those checks stop (until a reset)
//! once the guest could have the device write into its rings or descriptor tables: raw receive
//! descriptors, descriptor slots or ring entries reused while the device may still read them, an
//! indirect table inside a receive buffer.

#![no_main]

mod common;

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::ops::Range;

use common::{guest_memory, offer_chain, Arena, Input, MEM_SIZE};
use libfuzzer_sys::fuzz_target;
use skiff_vmm::virtio::fuzzing::NetHarness;
use skiff_vmm::virtio::net::VNET_HDR_LEN;
use skiff_vmm::virtio::test_driver::{counting_interrupt, Buf, DriverQueue};
use skiff_vmm::virtio::GuestMem;
use vm_memory::{Bytes, GuestAddress};

const F_GUEST_CSUM: u64 = 1 << 1;
const F_MRG_RXBUF: u64 = 1 << 15;
const F_EVENT_IDX: u64 = 1 << 29;
const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
const DESC_F_INDIRECT: u16 = 4;
/// Where each queue's rings start (all below `common::DATA_START`).
const RX_BASE: u64 = 0;
const TX_BASE: u64 = 0x8000;
/// A vnet and an Ethernet header: the shortest frame the device moves.
const MIN_FRAME: usize = VNET_HDR_LEN + 14;
const MAX_FRAME: usize = NetHarness::MAX_FRAME_LEN;
/// Frames made by records 8 and 12 are up to this long.
const BIG_FRAME: u32 = 70_000;
/// Offset of `num_buffers` in the vnet header.
const NUM_BUFFERS_AT: usize = 10;

/// What the first byte (or a reset record) picks.
struct Setup {
    features: u64,
    mrg_rxbuf: bool,
    guest_csum: bool,
}

impl Setup {
    fn from_byte(b: u8) -> Setup {
        let mut features = NetHarness::FEATURES & !(F_MRG_RXBUF | F_GUEST_CSUM | F_EVENT_IDX);
        for (bit, feature) in [(1, F_MRG_RXBUF), (2, F_GUEST_CSUM), (4, F_EVENT_IDX)] {
            if b & bit != 0 {
                features |= feature;
            }
        }
        Setup {
            features,
            mrg_rxbuf: b & 1 != 0,
            guest_csum: b & 2 != 0,
        }
    }
}

/// A chain the driver made available that the device has not used yet.
struct Chain {
    head: u16,
    /// The descriptor table slots it takes.
    slots: Range<u16>,
    /// Its buffers (address, length, writable), unless it was made of raw descriptors.
    bufs: Option<Vec<Buf>>,
    /// Its indirect table, if any, and what the driver wrote there.
    table: Option<(Range<u64>, Vec<u8>)>,
}

impl Chain {
    /// Guest memory the device may write for it, as far as guest memory goes.
    fn writable(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.bufs
            .iter()
            .flatten()
            .filter(|b| b.writable)
            .map(|b| clip(b.addr, u64::from(b.len)))
    }

    fn capacity(&self) -> u64 {
        self.writable().map(|r| r.end - r.start).sum()
    }
}

fn clip(addr: u64, len: u64) -> Range<u64> {
    let end = addr.saturating_add(len).min(MEM_SIZE as u64);
    addr.min(end)..end
}

fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

/// The driver's side of one queue, with what it made available and saw used.
struct Ring<'m> {
    q: DriverQueue<'m>,
    mem: &'m GuestMem,
    base: u64,
    size: u16,
    used_seen: u16,
    pending: Vec<Chain>,
}

impl<'m> Ring<'m> {
    fn new(mem: &'m GuestMem, base: u64, size: u16) -> Ring<'m> {
        Ring {
            q: DriverQueue::new(mem, base, size),
            mem,
            base,
            size,
            used_seen: 0,
            pending: Vec::new(),
        }
    }

    fn avail(&self) -> u64 {
        self.base + 16 * u64::from(self.size)
    }

    fn used(&self) -> u64 {
        (self.avail() + 4 + 2 * u64::from(self.size) + 2).next_multiple_of(4)
    }

    fn u16_at(&self, addr: u64) -> u16 {
        self.mem.read_obj(GuestAddress(addr)).expect("ring field")
    }

    fn u32_at(&self, addr: u64) -> u32 {
        self.mem.read_obj(GuestAddress(addr)).expect("ring field")
    }

    /// Whether a chain taking `slots` descriptor slots can be made available without
    /// overwriting a ring entry or a descriptor the device may still read.
    fn room_for(&mut self, slots: u16) -> bool {
        if slots > self.size || self.pending.len() >= usize::from(self.size) {
            return false;
        }
        let first = self.q.next_index(slots);
        let new = first..first + slots;
        !self
            .pending
            .iter()
            .any(|c| c.slots.start < new.end && new.start < c.slots.end)
    }

    /// The head of the chain made available last.
    fn last_head(&self) -> u16 {
        let idx = self.q.avail_idx().wrapping_sub(1);
        self.u16_at(self.avail() + 4 + 2 * u64::from(idx % self.size))
    }

    /// (address, length, flags, next) of the descriptor at `at`.
    fn desc(&self, at: u64) -> (u64, u32, u16, u16) {
        let read = |off: u64| GuestAddress(at + off);
        (
            self.mem.read_obj(read(0)).expect("descriptor"),
            self.mem.read_obj(read(8)).expect("descriptor"),
            self.mem.read_obj(read(12)).expect("descriptor"),
            self.mem.read_obj(read(14)).expect("descriptor"),
        )
    }

    /// The chain of well-formed buffers just made available (taking `slots` slots), read back
    /// from the rings.
    fn last_offered(&self, slots: u16) -> Chain {
        let head = self.last_head();
        let slot_addr = |i: u16| self.base + 16 * u64::from(i);
        let (mut table_at, mut table) = (self.base, None);
        let mut at = head;
        let (addr, len, flags, _) = self.desc(slot_addr(head));
        if flags & DESC_F_INDIRECT != 0 {
            table_at = addr;
            let mut bytes = vec![0u8; len as usize];
            self.mem
                .read_slice(&mut bytes, GuestAddress(addr))
                .expect("indirect table in guest memory");
            table = Some((addr..addr + u64::from(len), bytes));
            at = 0;
        }
        let mut bufs = Vec::new();
        loop {
            let (addr, len, flags, next) = self.desc(table_at + 16 * u64::from(at));
            bufs.push(Buf {
                addr,
                len,
                writable: flags & DESC_F_WRITE != 0,
            });
            assert!(
                bufs.len() <= 4,
                "common's chain records changed: more than 4 buffers"
            );
            if flags & DESC_F_NEXT == 0 {
                break;
            }
            at = next;
        }
        Chain {
            head,
            slots: head..head + slots,
            bufs: Some(bufs),
            table,
        }
    }

    /// The entries the device put in the used ring since the last call: (id, length).
    fn take_used(&mut self) -> Vec<(u32, u32)> {
        let idx = self.u16_at(self.used() + 2);
        let mut out = Vec::new();
        while self.used_seen != idx {
            let entry = self.used() + 4 + 8 * u64::from(self.used_seen % self.size);
            out.push((self.u32_at(entry), self.u32_at(entry + 4)));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }
}

/// What a transmit record should give the host.
enum Expect {
    /// Nothing: there was no transmit record.
    Nothing,
    /// This frame, or nothing (`None`) when the chain is no frame the device takes.
    Frame(Option<Vec<u8>>),
    /// Raw descriptors: at most one frame, of anything.
    AtMostOne,
}

/// The bytes the device wrote into `chain`'s first `len` bytes, and where they are.
fn written(chain: &Chain, len: usize) -> Vec<Range<u64>> {
    let mut left = len as u64;
    let mut out = Vec::new();
    for w in chain.writable() {
        let n = left.min(w.end - w.start);
        out.push(w.start..w.start + n);
        left -= n;
    }
    out
}

/// A frame as the tap would carry it: `head` (up to 64 bytes), then a pattern from `fill`.
fn made_frame(len: usize, fill: u8, input: &mut Input) -> Vec<u8> {
    let head = input.take(len.min(64));
    let mut f: Vec<u8> = (0..len)
        .map(|i| fill.wrapping_mul(i as u8).wrapping_add((i / 251) as u8))
        .collect();
    f[..head.len()].copy_from_slice(head);
    f
}

/// Bytes of `f` the device can hand over: one read of the tap's size.
fn as_read(f: &[u8]) -> Option<Vec<u8>> {
    (f.len() >= MIN_FRAME).then(|| f[..f.len().min(MAX_FRAME)].to_vec())
}

/// Writes one frame from the host's end (a datagram: whole or not at all).
fn host_write(mut host: &File, f: &[u8]) -> bool {
    host.write(f).is_ok_and(|n| n == f.len())
}

/// Every frame waiting on the host's end.
fn host_read_all(mut host: &File) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut buf = vec![0u8; BIG_FRAME as usize + 1];
    while let Ok(n @ 1..) = host.read(&mut buf) {
        frames.push(buf[..n].to_vec());
    }
    frames
}

/// The test's state besides the device's.
struct Driver<'m> {
    mem: &'m GuestMem,
    rx: Ring<'m>,
    tx: Ring<'m>,
    setup: Setup,
    /// Whether the rings are still as the driver wrote them (see the module's comment).
    trusted: bool,
    /// Frames the host wrote (as the device reads them) not yet seen in the guest.
    host_sent: VecDeque<Vec<u8>>,
}

impl<'m> Driver<'m> {
    fn new(mem: &'m GuestMem, size: u16, setup: Setup) -> Driver<'m> {
        Driver {
            mem,
            rx: Ring::new(mem, RX_BASE, size),
            tx: Ring::new(mem, TX_BASE, size),
            setup,
            trusted: true,
            host_sent: VecDeque::new(),
        }
    }

    /// A receive chain is being made available: `slots` slots.
    fn before_rx(&mut self, slots: u16) {
        if self.trusted && !self.rx.room_for(slots) {
            self.trusted = false;
        }
    }

    /// A receive chain of well-formed buffers was made available.
    fn after_rx(&mut self, slots: u16) {
        if !self.trusted {
            return;
        }
        let chain = self.rx.last_offered(slots);
        let tables: Vec<Range<u64>> = self
            .rx
            .pending
            .iter()
            .chain([&chain])
            .filter_map(|c| c.table.as_ref().map(|(range, _)| range.clone()))
            .collect();
        let clash = self
            .rx
            .pending
            .iter()
            .chain([&chain])
            .flat_map(Chain::writable)
            .any(|w| tables.iter().any(|t| overlaps(&w, t)));
        if clash {
            self.trusted = false;
            return;
        }
        self.rx.pending.push(chain);
    }

    /// Before a turn: whether the driver's writes since the last left the indirect tables of
    /// receive chains as they were.
    fn tables_intact(&self) -> bool {
        self.rx.pending.iter().all(|c| {
            c.table.as_ref().is_none_or(|(range, bytes)| {
                let mut now = vec![0u8; bytes.len()];
                self.mem
                    .read_slice(&mut now, GuestAddress(range.start))
                    .is_ok()
                    && now == *bytes
            })
        })
    }

    /// Checks what the last turn did.
    fn check(&mut self, host: &File, expect: Expect) {
        let sent = host_read_all(host);
        let tx_used = self.tx.take_used();
        let rx_used = self.rx.take_used();
        if !self.trusted {
            return;
        }
        match expect {
            Expect::Nothing => assert!(sent.is_empty(), "a frame the guest did not send"),
            Expect::AtMostOne => assert!(sent.len() <= 1, "one transmit chain, several frames"),
            Expect::Frame(None) => assert!(sent.is_empty(), "a malformed frame was sent"),
            Expect::Frame(Some(f)) => {
                assert_eq!(sent.len(), 1, "the guest's frame did not reach the host");
                assert!(sent[0] == f, "the guest's frame reached the host changed");
            }
        }
        for (id, len) in tx_used {
            assert!(!self.tx.pending.is_empty(), "a transmit chain used twice");
            let chain = self.tx.pending.remove(0);
            assert_eq!(
                id,
                u32::from(chain.head),
                "transmit chains used out of order"
            );
            assert_eq!(len, 0, "the device wrote into a transmit chain");
        }
        assert!(self.tx.pending.is_empty(), "a transmit chain was left");
        let mut used = Vec::new();
        for (id, len) in rx_used {
            let at = self.rx.pending.iter().position(|c| u32::from(c.head) == id);
            let chain = self
                .rx
                .pending
                .remove(at.expect("a receive chain the guest did not give"));
            assert!(
                u64::from(len) <= chain.capacity(),
                "{len} bytes used of a {}-byte receive chain",
                chain.capacity()
            );
            used.push((chain, len as usize));
        }
        self.check_received(&used);
    }

    /// Checks the frames in receive chains used in one turn against what the host sent.
    fn check_received(&mut self, used: &[(Chain, usize)]) {
        let mut ranges: Vec<Range<u64>> =
            used.iter().flat_map(|(c, len)| written(c, *len)).collect();
        ranges.sort_by_key(|r| r.start);
        if ranges.windows(2).any(|w| overlaps(&w[0], &w[1])) {
            // One frame may have overwritten another: only the lengths are known good.
            return;
        }
        let mem = self.mem;
        let read = |chain: &Chain, len: usize| -> Vec<u8> {
            let mut out = Vec::new();
            for r in written(chain, len) {
                let mut part = vec![0u8; (r.end - r.start) as usize];
                mem.read_slice(&mut part, GuestAddress(r.start))
                    .expect("used bytes in guest memory");
                out.extend(part);
            }
            out
        };
        let mut i = 0;
        while i < used.len() {
            let (chain, len) = &used[i];
            if *len == 0 {
                i += 1;
                continue;
            }
            assert!(
                *len >= VNET_HDR_LEN,
                "a frame's first chain holds {len} bytes"
            );
            let mut frame = read(chain, *len);
            let num_buffers =
                u16::from_le_bytes([frame[NUM_BUFFERS_AT], frame[NUM_BUFFERS_AT + 1]]);
            let count = usize::from(num_buffers);
            if !self.setup.mrg_rxbuf {
                assert_eq!(count, 1, "num_buffers without MRG_RXBUF");
            }
            assert!(
                count >= 1 && i + count <= used.len(),
                "num_buffers {count} with {} chains used",
                used.len() - i
            );
            for (chain, len) in &used[i + 1..i + count] {
                assert!(*len > 0, "an empty chain inside a frame");
                frame.extend(read(chain, *len));
            }
            i += count;
            self.expect_received(&frame, num_buffers);
        }
    }

    /// `got` is the next frame the host sent that was not dropped.
    fn expect_received(&mut self, got: &[u8], num_buffers: u16) {
        while let Some(mut f) = self.host_sent.pop_front() {
            f[NUM_BUFFERS_AT..NUM_BUFFERS_AT + 2].copy_from_slice(&num_buffers.to_le_bytes());
            if !self.setup.guest_csum {
                f[0] = 0;
            }
            if f == got {
                return;
            }
        }
        panic!(
            "the guest received a {}-byte frame the host did not send",
            got.len()
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let first = input.u8();
    let size = 256u16 >> ((first >> 3) & 7);
    let mem = guest_memory();
    let irq = counting_interrupt();
    let (mut device, host) = NetHarness::new().expect("net device");
    // The host's end of the stand-in tap: one frame per read(2) and write(2).
    let host = File::from(host);
    let mut d = Driver::new(&mem, size, Setup::from_byte(first));
    let queues = vec![d.rx.q.active(), d.tx.q.active()];
    device
        .activate(mem.clone(), irq.clone(), queues, d.setup.features)
        .expect("activate");
    let mut arena = Arena::default();
    d.check(&host, Expect::Nothing);
    while !input.is_empty() {
        let kind = input.0[0];
        let count_byte = input.0.get(1).copied().unwrap_or(0);
        let mut expect = Expect::Nothing;
        match kind % 16 {
            0..=3 => {
                // Where the chain's buffers are is known once it is offered.
                let slots = match kind % 4 {
                    0 | 1 => 1 + u16::from(count_byte % 4),
                    2 => 1,
                    _ => 1 + u16::from(count_byte % 3),
                };
                if !d.tx.room_for(slots) {
                    d.trusted = false;
                }
                offer_chain(&mut d.tx.q, &mem, &mut input, &mut arena);
                if d.trusted {
                    if kind % 4 == 3 {
                        let head = d.tx.last_head();
                        d.tx.pending.push(Chain {
                            head,
                            slots: head..head + slots,
                            bufs: None,
                            table: None,
                        });
                        expect = Expect::AtMostOne;
                    } else {
                        let chain = d.tx.last_offered(slots);
                        expect = Expect::Frame(gathered(&mem, &chain));
                        d.tx.pending.push(chain);
                    }
                }
            }
            4..=7 => {
                let slots = match kind % 4 {
                    0 | 1 => 1 + u16::from(count_byte % 4),
                    2 => 1,
                    _ => {
                        // Raw descriptors may have the device write anywhere.
                        d.trusted = false;
                        1
                    }
                };
                d.before_rx(slots);
                offer_chain(&mut d.rx.q, &mem, &mut input, &mut arena);
                d.after_rx(slots);
            }
            8 => {
                input.u8();
                let len = (input.u32() % (BIG_FRAME + 1)) as usize;
                let mut pieces = 1 + usize::from(input.u8() % 4);
                pieces = pieces.max(len.div_ceil(64 << 10));
                let fill = input.u8();
                let f = made_frame(len, fill, &mut input);
                let bufs: Vec<Buf> = (0..pieces)
                    .map(|i| {
                        let part = &f[len * i / pieces..len * (i + 1) / pieces];
                        let addr = arena.alloc(part.len() as u32);
                        mem.write_slice(part, GuestAddress(addr))
                            .expect("buffer in guest memory");
                        Buf::readable(addr, part.len() as u32)
                    })
                    .collect();
                if !d.tx.room_for(pieces as u16) {
                    d.trusted = false;
                }
                d.tx.q.offer(&bufs);
                if d.trusted {
                    let chain = d.tx.last_offered(pieces as u16);
                    expect = Expect::Frame(gathered(&mem, &chain));
                    d.tx.pending.push(chain);
                }
            }
            9 => {
                input.u8();
                let count = 1 + input.u8() % 32;
                let len = u32::from(input.u16());
                for _ in 0..count {
                    d.before_rx(1);
                    d.rx.q.offer(&[Buf::writable(arena.alloc(len), len)]);
                    d.after_rx(1);
                }
            }
            10..=12 => {
                input.u8();
                let f = if kind % 16 == 12 {
                    let len = (input.u32() % (BIG_FRAME + 1)) as usize;
                    let fill = input.u8();
                    made_frame(len, fill, &mut input)
                } else {
                    let len = usize::from(input.u16());
                    input.take(len).to_vec()
                };
                // A full socket refuses it, as a tap's queue drops what does not fit.
                if host_write(&host, &f) {
                    d.host_sent.extend(as_read(&f));
                }
            }
            13 => {
                input.u8();
                let setup = Setup::from_byte(input.u8());
                d.rx = Ring::new(&mem, RX_BASE, size);
                d.tx = Ring::new(&mem, TX_BASE, size);
                d.trusted = true;
                d.setup = setup;
                let queues = vec![d.rx.q.active(), d.tx.q.active()];
                device
                    .activate(mem.clone(), irq.clone(), queues, d.setup.features)
                    .expect("re-activate");
                d.check(&host, Expect::Nothing);
                continue;
            }
            _ => {
                input.u8();
            }
        }
        if d.trusted && !d.tables_intact() {
            // A buffer was placed over one.
            d.trusted = false;
        }
        device.turn();
        d.check(&host, expect);
    }
});

/// The frame in a chain of buffers, if the device is to send it: readable buffers only, 26 to
/// 65562 bytes in all.
fn gathered(mem: &GuestMem, chain: &Chain) -> Option<Vec<u8>> {
    let bufs = chain.bufs.as_ref()?;
    let mut f = Vec::new();
    for b in bufs {
        if b.writable {
            return None;
        }
        let mut part = vec![0u8; b.len as usize];
        mem.read_slice(&mut part, GuestAddress(b.addr)).ok()?;
        f.extend(part);
    }
    (MIN_FRAME..=MAX_FRAME).contains(&f.len()).then_some(f)
}
