//! What the chain targets share: reading the input, and turning it into descriptor chains a
//! guest driver makes available.
//!
//! A chain record is a kind byte and its operands. Kind % 4 = 0 or 1: a chain of buffers;
//! 2: the same buffers behind an indirect table; 3: 1 to 3 raw descriptors (ADDR32 LEN32
//! FLAGS16 NEXT16) written as they are. A buffer is a header byte and its length: bit 0 set, a
//! writable buffer of LEN16 bytes (LEN32 with bit 1 too); else a readable one of LEN16 % 4097
//! bytes whose contents follow. The buffer count of a chain is 1 + COUNT8 % 4.

#![allow(dead_code)]

use skiff_vmm::virtio::test_driver::{Buf, DriverQueue};
use skiff_vmm::virtio::GuestMem;
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use vm_memory::{Bytes, GuestAddress};

/// The guest memory of a target: queues in the first 64 KiB, buffers above.
pub const MEM_SIZE: usize = 1 << 20;
pub const DATA_START: u64 = 0x1_0000;

pub fn guest_memory() -> GuestMem {
    GuestMem::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("guest memory")
}

/// A scratch directory, on tmpfs where there is one: removing a directory from a disk mounted
/// with `discard` takes milliseconds, which would cap a target at a few dozen runs a second.
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("tempdir")
}

/// The bytes of the input, read front to back; missing bytes read as zero.
pub struct Input<'a>(pub &'a [u8]);

impl<'a> Input<'a> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }
    pub fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.bytes())
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }
    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
}

/// Places buffers in the data area, from its start again when it is full.
pub struct Arena {
    next: u64,
}

impl Default for Arena {
    fn default() -> Self {
        Arena { next: DATA_START }
    }
}

impl Arena {
    pub fn alloc(&mut self, len: u32) -> u64 {
        let len = u64::from(len).min(64 << 10).next_multiple_of(8);
        if self.next + len > MEM_SIZE as u64 {
            self.next = DATA_START;
        }
        let at = self.next;
        self.next += len;
        at
    }
}

fn buffers(mem: &GuestMem, input: &mut Input, arena: &mut Arena) -> Vec<Buf> {
    let count = 1 + input.u8() % 4;
    (0..count)
        .map(|_| {
            let header = input.u8();
            if header & 1 == 1 {
                let len = if header & 2 == 2 {
                    input.u32()
                } else {
                    u32::from(input.u16())
                };
                Buf::writable(arena.alloc(len), len)
            } else {
                let len = usize::from(input.u16() % 4097);
                let contents = input.take(len);
                let addr = arena.alloc(contents.len() as u32);
                mem.write_slice(contents, GuestAddress(addr))
                    .expect("buffer in guest memory");
                Buf::readable(addr, contents.len() as u32)
            }
        })
        .collect()
}

/// Decodes one chain record from `input` and makes it available on `q`.
pub fn offer_chain(q: &mut DriverQueue, mem: &GuestMem, input: &mut Input, arena: &mut Arena) {
    match input.u8() % 4 {
        0 | 1 => {
            let bufs = buffers(mem, input, arena);
            q.offer(&bufs);
        }
        2 => {
            let bufs = buffers(mem, input, arena);
            let table = arena.alloc(16 * bufs.len() as u32);
            q.offer_indirect(table, &bufs);
        }
        _ => {
            let count = 1 + input.u8() % 3;
            let descs: Vec<SplitDescriptor> = (0..count)
                .map(|_| {
                    SplitDescriptor::new(
                        u64::from(input.u32()),
                        input.u32(),
                        input.u16(),
                        input.u16(),
                    )
                })
                .collect();
            q.offer_raw(&descs);
        }
    }
}
