//! Guest RAM: anonymous private mappings, populated lazily by the host kernel on first touch.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{GuestAddress, GuestMemory, GuestMemoryRegion, GuestRegionMmap, MmapRegion};

use crate::layout;
use crate::virtio::GuestMem;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("guest memory of {0} MiB is too small (at least 32 MiB)")]
    TooSmall(u64),
    #[error("guest memory of {0} MiB is too large for this VMM")]
    TooLarge(u64),
    #[error("cannot map guest memory: {0}")]
    Map(#[source] vm_memory::mmap::MmapRegionError),
    #[error("guest memory regions overlap or overflow")]
    Layout,
    #[error("cannot register guest memory with KVM: {0}")]
    Register(#[source] kvm_ioctls::Error),
}

/// The smallest memory a kernel plus initramfs reasonably boots in.
const MIN_MIB: u64 = 32;
/// Well past any container's needs; keeps address arithmetic far from overflow.
const MAX_MIB: u64 = 1 << 20;

/// Whether this VMM runs a guest with `mib` MiB of RAM.
pub fn check_size(mib: u64) -> Result<(), MemoryError> {
    if mib < MIN_MIB {
        return Err(MemoryError::TooSmall(mib));
    }
    if mib > MAX_MIB {
        return Err(MemoryError::TooLarge(mib));
    }
    Ok(())
}

/// Maps `mib` MiB of guest RAM. Pages are reserved neither in RAM nor in swap up front
/// (`MAP_NORESERVE`): the VMM's footprint grows only with what the guest touches.
pub fn create(mib: u64) -> Result<GuestMem, MemoryError> {
    check_size(mib)?;
    let mut regions = Vec::new();
    for (start, len) in layout::ram_ranges(mib << 20) {
        let len = usize::try_from(len).map_err(|_| MemoryError::TooLarge(mib))?;
        let mapping = MmapRegion::build(
            None,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_ANONYMOUS | libc::MAP_PRIVATE | libc::MAP_NORESERVE,
        )
        .map_err(MemoryError::Map)?;
        regions
            .push(GuestRegionMmap::new(mapping, GuestAddress(start)).ok_or(MemoryError::Layout)?);
    }
    GuestMem::from_regions(regions).map_err(|_| MemoryError::Layout)
}

/// Hands every RAM region to KVM as a memory slot.
pub fn register(vm: &VmFd, mem: &GuestMem) -> Result<(), MemoryError> {
    for (slot, region) in mem.iter().enumerate() {
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(|_| MemoryError::Layout)?;
        let desc = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the mapping behind `host` lives in `mem`, which the VM keeps alive for as long
        // as the VM fd exists, and the slots do not overlap (they come from disjoint regions).
        unsafe { vm.set_user_memory_region(desc) }.map_err(MemoryError::Register)?;
    }
    Ok(())
}

/// The end of RAM below the 32-bit hole (where the initramfs goes).
pub fn low_ram_end(mem: &GuestMem) -> u64 {
    mem.iter()
        .filter(|r| r.start_addr().0 < layout::MMIO_HOLE_START)
        .map(|r| r.start_addr().0 + r.len())
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_mapped_in_the_expected_ranges() {
        let mem = create(64).expect("map");
        assert_eq!(mem.num_regions(), 1);
        assert_eq!(low_ram_end(&mem), 64 << 20);
        assert!(matches!(create(8), Err(MemoryError::TooSmall(8))));
    }
}
