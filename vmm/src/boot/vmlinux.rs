//! Loading a `vmlinux` by mapping it: its page-aligned PT_LOAD segments are mapped copy-on-write
//! from the file straight into guest RAM instead of being copied.
//!
//! Every VM on a host boots the same kernel file, so the pages the guest never writes (most of
//! the kernel's text and read-only data) stay shared in the host's page cache: less memory per
//! VM, and no copy of a ~12 MB image at every launch. Kernels whose layout does not allow
//! mapping (segments not page aligned, overlapping pages) are left to the copying loader.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryRegion};

use crate::layout::HIMEM_START;
use crate::virtio::GuestMem;

const PAGE: u64 = 4096;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const PHDR_SIZE: usize = 56;
const MAX_PHDRS: usize = 64;
const MAX_NOTES_BYTES: u64 = 64 * 1024;
/// The ELF note that carries the PVH 32-bit entry point.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// A kernel mapped into guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappedKernel {
    pub pvh_entry: Option<u64>,
    /// First byte after the kernel's memory image.
    pub kernel_end: u64,
}

struct Segment {
    offset: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// Maps `file` into `mem` if it is a 64-bit little-endian ELF whose loadable segments can be
/// mapped; `None` leaves the kernel to the copying loader (which reports malformed files).
pub fn map(mem: &GuestMem, file: &File) -> std::io::Result<Option<MappedKernel>> {
    let file_len = file.metadata()?.len();
    let mut ehdr = [0u8; 64];
    if file.read_exact_at(&mut ehdr, 0).is_err() {
        return Ok(None);
    }
    let elf64_le = ehdr[..4] == *b"\x7fELF" && ehdr[4] == 2 && ehdr[5] == 1;
    let (phoff, phentsize, phnum) = (
        u64_at(&ehdr, 32),
        u16_at(&ehdr, 54),
        usize::from(u16_at(&ehdr, 56)),
    );
    if !elf64_le || usize::from(phentsize) != PHDR_SIZE || phnum == 0 || phnum > MAX_PHDRS {
        return Ok(None);
    }
    let mut phdrs = vec![0u8; phnum * PHDR_SIZE];
    if file.read_exact_at(&mut phdrs, phoff).is_err() {
        return Ok(None);
    }
    let mut loads = Vec::new();
    let mut pvh_entry = None;
    for ph in phdrs.chunks_exact(PHDR_SIZE) {
        let seg = Segment {
            offset: u64_at(ph, 8),
            paddr: u64_at(ph, 24),
            filesz: u64_at(ph, 32),
            memsz: u64_at(ph, 40),
        };
        match u32_at(ph, 0) {
            PT_LOAD => loads.push(seg),
            PT_NOTE => pvh_entry = pvh_entry.or(find_pvh_entry(file, &seg)),
            _ => {}
        }
    }
    loads.sort_by_key(|s| s.paddr);
    if !mappable(mem, &loads, file_len) {
        return Ok(None);
    }
    for seg in &loads {
        map_segment(mem, file, seg)?;
    }
    let kernel_end = loads.iter().map(|s| s.paddr + s.memsz).max().unwrap_or(0);
    Ok(Some(MappedKernel {
        pvh_entry,
        kernel_end,
    }))
}

/// Page-aligned segments in guest RAM above 1 MiB, inside the file, not sharing pages.
fn mappable(mem: &GuestMem, loads: &[Segment], file_len: u64) -> bool {
    let mut prev_end = HIMEM_START;
    for s in loads {
        let Some(mem_end) = s.paddr.checked_add(s.memsz) else {
            return false;
        };
        let Some(file_end) = s.offset.checked_add(s.filesz) else {
            return false;
        };
        let in_ram = mem
            .find_region(GuestAddress(s.paddr))
            .is_some_and(|r| mem_end <= r.start_addr().0 + r.len());
        if s.offset % PAGE != 0
            || s.paddr % PAGE != 0
            || s.filesz > s.memsz
            || file_end > file_len
            || !in_ram
            || s.paddr < prev_end
        {
            return false;
        }
        prev_end = mem_end.next_multiple_of(PAGE);
    }
    !loads.is_empty()
}

fn map_segment(mem: &GuestMem, file: &File, seg: &Segment) -> std::io::Result<()> {
    if seg.filesz == 0 {
        return Ok(());
    }
    let len = seg.filesz.next_multiple_of(PAGE);
    let host = mem
        .get_host_address(GuestAddress(seg.paddr))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    // SAFETY: `host..host+len` lies inside one guest RAM mapping owned by `mem` (checked by
    // `mappable`), which is replaced in place by a private file mapping of the same size; the
    // file range is inside the file, so no access can fault past its end. No vCPU runs yet.
    let ret = unsafe {
        libc::mmap(
            host.cast(),
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_NORESERVE,
            file.as_raw_fd(),
            seg.offset as libc::off_t,
        )
    };
    if ret == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    // The last page holds file bytes past the segment: those must read as zero (bss).
    let tail = (len - seg.filesz) as usize;
    if tail > 0 {
        mem.write_slice(&vec![0u8; tail], GuestAddress(seg.paddr + seg.filesz))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    Ok(())
}

/// The PVH entry from a PT_NOTE segment's "Xen" notes, if there is one.
fn find_pvh_entry(file: &File, seg: &Segment) -> Option<u64> {
    let mut notes = vec![0u8; usize::try_from(seg.filesz.min(MAX_NOTES_BYTES)).ok()?];
    file.read_exact_at(&mut notes, seg.offset).ok()?;
    let mut at = 0usize;
    while at + 12 <= notes.len() {
        let (namesz, descsz, kind) = (
            u32_at(&notes, at) as usize,
            u32_at(&notes, at + 4) as usize,
            u32_at(&notes, at + 8),
        );
        let name_at = at + 12;
        let desc_at = name_at.checked_add(namesz.next_multiple_of(4))?;
        let next = desc_at.checked_add(descsz.next_multiple_of(4))?;
        if next > notes.len() {
            return None;
        }
        if kind == XEN_ELFNOTE_PHYS32_ENTRY && notes[name_at..name_at + namesz] == *b"Xen\0" {
            return match descsz {
                4 => Some(u64::from(u32_at(&notes, desc_at))),
                8 => Some(u64_at(&notes, desc_at)),
                _ => None,
            };
        }
        at = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One PT_LOAD of a test image: file offset, physical address, contents, memory size.
    type Load<'a> = (u64, u64, &'a [u8], u64);

    /// A minimal ELF: header, `loads` and one note segment.
    fn elf(loads: &[Load], pvh_entry: Option<u64>) -> Vec<u8> {
        let mut note = Vec::new();
        if let Some(entry) = pvh_entry {
            note.extend_from_slice(&4u32.to_le_bytes());
            note.extend_from_slice(&8u32.to_le_bytes());
            note.extend_from_slice(&XEN_ELFNOTE_PHYS32_ENTRY.to_le_bytes());
            note.extend_from_slice(b"Xen\0");
            note.extend_from_slice(&entry.to_le_bytes());
        }
        let note_off = 0x800u64;
        let mut f = vec![0u8; 0x1000];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[54..56].copy_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
        f[56..58].copy_from_slice(&(loads.len() as u16 + 1).to_le_bytes());
        let mut ph = |i: usize, kind: u32, off: u64, paddr: u64, filesz: u64, memsz: u64| {
            let b = 64 + i * PHDR_SIZE;
            f[b..b + 4].copy_from_slice(&kind.to_le_bytes());
            f[b + 8..b + 16].copy_from_slice(&off.to_le_bytes());
            f[b + 24..b + 32].copy_from_slice(&paddr.to_le_bytes());
            f[b + 32..b + 40].copy_from_slice(&filesz.to_le_bytes());
            f[b + 40..b + 48].copy_from_slice(&memsz.to_le_bytes());
        };
        for (i, (off, paddr, data, memsz)) in loads.iter().enumerate() {
            ph(i, PT_LOAD, *off, *paddr, data.len() as u64, *memsz);
        }
        ph(
            loads.len(),
            PT_NOTE,
            note_off,
            0,
            note.len() as u64,
            note.len() as u64,
        );
        f[note_off as usize..note_off as usize + note.len()].copy_from_slice(&note);
        for (off, _, data, _) in loads {
            let end = *off as usize + data.len();
            if f.len() < end {
                f.resize(end.next_multiple_of(PAGE as usize) + 100, 0xee);
            }
            f[*off as usize..end].copy_from_slice(data);
        }
        f
    }

    fn file_with(bytes: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vmlinux");
        std::fs::write(&p, bytes).unwrap();
        let f = File::open(&p).unwrap();
        (dir, f)
    }

    #[test]
    fn segments_are_mapped_with_zeroed_tails_and_copy_on_write() {
        let mem = crate::memory::create(32).unwrap();
        // Junk where the second segment's bss will be: it must come out zero.
        mem.write_slice(&[0x55u8; 64], GuestAddress(0x120_0000 + 10))
            .unwrap();
        let text = vec![0xabu8; 5000];
        let image = elf(
            &[
                (0x1000, 0x100_0000, &text, 5000),
                (0x3000, 0x120_0000, b"data!", 0x2000),
            ],
            Some(0x100_0123),
        );
        let (_dir, file) = file_with(&image);
        let mapped = map(&mem, &file).unwrap().expect("mappable");
        assert_eq!(
            mapped,
            MappedKernel {
                pvh_entry: Some(0x100_0123),
                kernel_end: 0x120_2000
            }
        );
        let mut back = vec![0u8; 5000];
        mem.read_slice(&mut back, GuestAddress(0x100_0000)).unwrap();
        assert_eq!(back, text);
        let mut tail = [1u8; 100];
        mem.read_slice(&mut tail, GuestAddress(0x100_0000 + 5000))
            .unwrap();
        assert_eq!(
            tail, [0u8; 100],
            "bytes after filesz in the last page are zero"
        );
        let mut data = [0u8; 80];
        mem.read_slice(&mut data, GuestAddress(0x120_0000)).unwrap();
        assert_eq!(&data[..5], b"data!");
        assert!(data[5..].iter().all(|b| *b == 0));
        // The guest writing its kernel must not write the file.
        mem.write_slice(b"patched", GuestAddress(0x100_0000))
            .unwrap();
        let mut on_disk = [0u8; 7];
        file.read_exact_at(&mut on_disk, 0x1000).unwrap();
        assert_eq!(on_disk, [0xab; 7]);
    }

    #[test]
    fn unmappable_layouts_are_left_to_the_copying_loader() {
        let mem = crate::memory::create(32).unwrap();
        let cases: [&[Load]; 5] = [
            &[(0x1100, 0x100_0000, b"x", 1)],         // offset not page aligned
            &[(0x1000, 0x100_0100, b"x", 1)],         // paddr not page aligned
            &[(0x1000, 0x10_0000 - 0x1000, b"x", 1)], // below 1 MiB
            &[(0x1000, 0x3000_0000, b"x", 1)],        // outside RAM
            &[
                (0x1000, 0x100_0000, b"x", 0x2000),
                (0x2000, 0x100_1000, b"y", 1),
            ], // shared page
        ];
        for (i, loads) in cases.iter().enumerate() {
            let (_dir, file) = file_with(&elf(loads, None));
            assert_eq!(map(&mem, &file).unwrap(), None, "case {i}");
        }
        let (_dir, file) = file_with(b"#!/bin/sh\n");
        assert_eq!(map(&mem, &file).unwrap(), None);
        // A segment claiming bytes past the end of the file.
        let mut image = elf(&[(0x1000, 0x100_0000, b"x", 1)], None);
        image[64 + 32..64 + 40].copy_from_slice(&0x10_0000u64.to_le_bytes());
        image[64 + 40..64 + 48].copy_from_slice(&0x10_0000u64.to_le_bytes());
        let (_dir, file) = file_with(&image);
        assert_eq!(map(&mem, &file).unwrap(), None);
    }

    #[test]
    fn malformed_notes_give_no_entry_instead_of_panicking() {
        let (_dir, file) = file_with(&[0xffu8; 64]);
        let seg = Segment {
            offset: 0,
            paddr: 0,
            filesz: 64,
            memsz: 64,
        };
        assert_eq!(find_pvh_entry(&file, &seg), None);
        let (_dir, file) = file_with(&[0u8; 8]);
        let seg = Segment {
            offset: 0,
            paddr: 0,
            filesz: 1 << 40,
            memsz: 0,
        };
        assert_eq!(find_pvh_entry(&file, &seg), None);
    }
}
