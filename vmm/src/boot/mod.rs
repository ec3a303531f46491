//! Putting the kernel, its initramfs and its boot information into guest memory.
//!
//! Two kernel formats, one entry state: a `vmlinux` ELF is entered at its PVH entry point with
//! `%ebx` pointing at an `hvm_start_info`; a `bzImage` at its 32-bit entry with `%esi` pointing at
//! the zero page. Both protocols start in flat 32-bit protected mode with paging off, so the
//! vCPU setup is shared and no page tables are needed.

pub mod cmdline;
pub mod initramfs;
pub mod mptable;
pub mod vmlinux;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::boot_params;
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use vm_memory::{Bytes, GuestAddress};

use crate::layout::{
    CMDLINE_ADDR, EBDA_START, HIMEM_START, PVH_INFO_ADDR, PVH_MEMMAP_ADDR, PVH_MODLIST_ADDR,
    ZERO_PAGE_ADDR,
};
use crate::memory::low_ram_end;
use crate::virtio::GuestMem;

const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
const BOOT_FLAG_MAGIC: u16 = 0xaa55;
const BZIMAGE_HEADER_MAGIC: u32 = 0x5372_6448; // "HdrS"
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
const PAGE: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot read kernel {path}: {source}")]
    ReadKernel {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is neither an ELF vmlinux nor a bzImage")]
    UnknownFormat(PathBuf),
    #[error("cannot load kernel {path}: {source}")]
    Load {
        path: PathBuf,
        source: linux_loader::loader::Error,
    },
    #[error(
        "{0} has no PVH entry point (build the kernel with CONFIG_PVH=y, or boot its bzImage)"
    )]
    NoPvhEntry(PathBuf),
    #[error("the initramfs ({size} bytes) does not fit in guest memory above the kernel; give the VM more memory")]
    InitrdTooBig { size: usize },
    #[error("cannot write {0} into guest memory")]
    Write(&'static str),
    #[error("cannot write the boot information: {0}")]
    Configure(#[source] linux_loader::configurator::Error),
}

/// Which boot protocol the vCPU enters with, and where its boot information is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootProtocol {
    /// `%ebx` = address of `hvm_start_info`.
    Pvh { start_info: u64 },
    /// `%esi` = address of the zero page.
    Linux { zero_page: u64 },
}

/// Where the boot vCPU starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootEntry {
    pub entry: u64,
    pub protocol: BootProtocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KernelFormat {
    Elf,
    BzImage,
}

fn detect_format(file: &mut File) -> std::io::Result<Option<KernelFormat>> {
    let mut magic = [0u8; 4];
    file.seek(SeekFrom::Start(0))?;
    if file.read(&mut magic)? == 4 && magic == *b"\x7fELF" {
        return Ok(Some(KernelFormat::Elf));
    }
    let mut hdr = [0u8; 4];
    file.seek(SeekFrom::Start(0x202))?;
    let is_bz = file.read(&mut hdr)? == 4 && u32::from_le_bytes(hdr) == BZIMAGE_HEADER_MAGIC;
    file.seek(SeekFrom::Start(0))?;
    Ok(is_bz.then_some(KernelFormat::BzImage))
}

/// The e820 map of guest RAM: base memory, the legacy hole up to 1 MiB, then the rest.
fn memory_map(mem: &GuestMem) -> Vec<(u64, u64, u32)> {
    use vm_memory::{GuestMemory, GuestMemoryRegion};
    let mut map = vec![
        (0, EBDA_START, E820_RAM),
        (EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED),
    ];
    for region in mem.iter() {
        let start = region.start_addr().0.max(HIMEM_START);
        let end = region.start_addr().0 + region.len();
        if end > start {
            map.push((start, end - start, E820_RAM));
        }
    }
    map
}

/// Loads `kernel`, places `initrd` at the top of low RAM, writes `cmdline` and the boot
/// information for the kernel's protocol. Returns where the boot vCPU starts.
pub fn load(
    mem: &GuestMem,
    kernel: &Path,
    cmdline: &str,
    initrd: &[u8],
) -> Result<BootEntry, BootError> {
    let read_err = |source| BootError::ReadKernel {
        path: kernel.to_path_buf(),
        source,
    };
    let mut file = File::open(kernel).map_err(read_err)?;
    let format = detect_format(&mut file)
        .map_err(read_err)?
        .ok_or_else(|| BootError::UnknownFormat(kernel.to_path_buf()))?;
    let load_err = |source| BootError::Load {
        path: kernel.to_path_buf(),
        source,
    };

    let mut cmdline_bytes = Vec::with_capacity(cmdline.len() + 1);
    cmdline_bytes.extend_from_slice(cmdline.as_bytes());
    cmdline_bytes.push(0);
    mem.write_slice(&cmdline_bytes, GuestAddress(CMDLINE_ADDR))
        .map_err(|_| BootError::Write("the command line"))?;

    match format {
        KernelFormat::Elf => {
            let (entry, kernel_end) = match vmlinux::map(mem, &file).map_err(read_err)? {
                Some(mapped) => (mapped.pvh_entry, mapped.kernel_end),
                None => {
                    let loaded = Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START)))
                        .map_err(load_err)?;
                    let entry = match loaded.pvh_boot_cap {
                        PvhBootCapability::PvhEntryPresent(entry) => Some(entry.0),
                        _ => None,
                    };
                    (entry, loaded.kernel_end)
                }
            };
            let entry = entry.ok_or_else(|| BootError::NoPvhEntry(kernel.to_path_buf()))?;
            let initrd_addr = place_initrd(mem, initrd, kernel_end, u64::MAX)?;
            write_pvh_info(mem, initrd_addr, initrd.len())?;
            Ok(BootEntry {
                entry,
                protocol: BootProtocol::Pvh {
                    start_info: PVH_INFO_ADDR,
                },
            })
        }
        KernelFormat::BzImage => {
            let loaded = BzImage::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START)))
                .map_err(load_err)?;
            let hdr = loaded
                .setup_header
                .ok_or(BootError::Write("the bzImage setup header"))?;
            // The decompressor unpacks to pref_address and needs init_size bytes there.
            let decompress_end = hdr.pref_address.saturating_add(u64::from(hdr.init_size));
            let kernel_end = loaded.kernel_end.max(decompress_end);
            let initrd_addr =
                place_initrd(mem, initrd, kernel_end, u64::from(hdr.initrd_addr_max))?;
            let mut params = boot_params {
                hdr,
                ..Default::default()
            };
            params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
            params.hdr.boot_flag = BOOT_FLAG_MAGIC;
            params.hdr.header = BZIMAGE_HEADER_MAGIC;
            params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
            params.hdr.cmdline_size = (cmdline_bytes.len() - 1) as u32;
            if !initrd.is_empty() {
                params.hdr.ramdisk_image = initrd_addr as u32;
                params.hdr.ramdisk_size = initrd.len() as u32;
            }
            let map = memory_map(mem);
            for (slot, (addr, size, type_)) in params.e820_table.iter_mut().zip(&map) {
                slot.addr = *addr;
                slot.size = *size;
                slot.type_ = *type_;
            }
            params.e820_entries = map.len() as u8;
            let bp = BootParams::new::<boot_params>(&params, GuestAddress(ZERO_PAGE_ADDR));
            LinuxBootConfigurator::write_bootparams(&bp, mem).map_err(BootError::Configure)?;
            // The 32-bit entry point is the start of the protected-mode kernel.
            Ok(BootEntry {
                entry: loaded.kernel_load.0,
                protocol: BootProtocol::Linux {
                    zero_page: ZERO_PAGE_ADDR,
                },
            })
        }
    }
}

/// Puts the initramfs at the top of low RAM (page aligned, below `max_addr`), above `kernel_end`.
fn place_initrd(
    mem: &GuestMem,
    initrd: &[u8],
    kernel_end: u64,
    max_addr: u64,
) -> Result<u64, BootError> {
    if initrd.is_empty() {
        return Ok(0);
    }
    let too_big = || BootError::InitrdTooBig { size: initrd.len() };
    let top = low_ram_end(mem).min(max_addr.saturating_add(1));
    let addr = top.checked_sub(initrd.len() as u64).ok_or_else(too_big)? & !(PAGE - 1);
    if addr < kernel_end.next_multiple_of(PAGE) {
        return Err(too_big());
    }
    mem.write_slice(initrd, GuestAddress(addr))
        .map_err(|_| BootError::Write("the initramfs"))?;
    Ok(addr)
}

fn write_pvh_info(mem: &GuestMem, initrd_addr: u64, initrd_len: usize) -> Result<(), BootError> {
    let map: Vec<hvm_memmap_table_entry> = memory_map(mem)
        .into_iter()
        .map(|(addr, size, type_)| hvm_memmap_table_entry {
            addr,
            size,
            type_,
            reserved: 0,
        })
        .collect();
    let with_initrd = initrd_len > 0;
    let info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE_ADDR,
        memmap_paddr: PVH_MEMMAP_ADDR,
        memmap_entries: map.len() as u32,
        nr_modules: u32::from(with_initrd),
        modlist_paddr: if with_initrd { PVH_MODLIST_ADDR } else { 0 },
        ..Default::default()
    };
    let mut params = BootParams::new::<hvm_start_info>(&info, GuestAddress(PVH_INFO_ADDR));
    params.set_sections::<hvm_memmap_table_entry>(&map, GuestAddress(PVH_MEMMAP_ADDR));
    if with_initrd {
        let module = hvm_modlist_entry {
            paddr: initrd_addr,
            size: initrd_len as u64,
            ..Default::default()
        };
        params.set_modules::<hvm_modlist_entry>(&[module], GuestAddress(PVH_MODLIST_ADDR));
    }
    PvhBootConfigurator::write_bootparams(&params, mem).map_err(BootError::Configure)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMem {
        crate::memory::create(64).unwrap()
    }

    #[test]
    fn memory_map_reserves_the_legacy_hole() {
        let map = memory_map(&mem());
        assert_eq!(
            map,
            vec![
                (0, 0x9fc00, E820_RAM),
                (0x9fc00, 0x60400, E820_RESERVED),
                (0x10_0000, (64 << 20) - 0x10_0000, E820_RAM)
            ]
        );
    }

    #[test]
    fn initrd_goes_to_the_top_and_never_over_the_kernel() {
        let m = mem();
        let addr = place_initrd(&m, &[1u8; 5000], 0x200_0000, u64::MAX).unwrap();
        assert_eq!(addr, ((64 << 20) - 5000) & !0xfff);
        let mut back = [0u8; 5000];
        m.read_slice(&mut back, GuestAddress(addr)).unwrap();
        assert_eq!(back, [1u8; 5000]);
        assert!(place_initrd(&m, &[1u8; 5000], (64 << 20) - 4096, u64::MAX).is_err());
        assert!(place_initrd(&m, &vec![0u8; 65 << 20], 0, u64::MAX).is_err());
        let capped = place_initrd(&m, &[1u8; 10], 0, 0x10_0000 - 1).unwrap();
        assert_eq!(capped, 0xff000);
    }

    #[test]
    fn unknown_kernel_formats_are_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("not-a-kernel");
        std::fs::write(&p, b"#!/bin/sh\necho hi\n").unwrap();
        let err = load(&mem(), &p, "console=ttyS0", &[]).unwrap_err();
        assert!(matches!(err, BootError::UnknownFormat(_)), "{err}");
        let missing = load(&mem(), &dir.path().join("missing"), "", &[]).unwrap_err();
        assert!(
            missing.to_string().contains("cannot read kernel"),
            "{missing}"
        );
    }

    #[test]
    fn pvh_info_points_at_memmap_cmdline_and_initrd() {
        let m = mem();
        write_pvh_info(&m, 0x300_0000, 1234).unwrap();
        let info: hvm_start_info = m.read_obj(GuestAddress(PVH_INFO_ADDR)).unwrap();
        assert_eq!(info.magic, XEN_HVM_START_MAGIC);
        assert_eq!(info.cmdline_paddr, CMDLINE_ADDR);
        assert_eq!(info.nr_modules, 1);
        assert_eq!(info.memmap_entries, 3);
        let module: hvm_modlist_entry = m.read_obj(GuestAddress(info.modlist_paddr)).unwrap();
        assert_eq!((module.paddr, module.size), (0x300_0000, 1234));
        let last: hvm_memmap_table_entry =
            m.read_obj(GuestAddress(PVH_MEMMAP_ADDR + 2 * 24)).unwrap();
        assert_eq!(last.addr, HIMEM_START);
    }
}
