//! Where things live in the guest's physical address space and in its interrupt numbering.
//!
//! Everything the VMM writes for the boot (GDT, boot info, command line, MP table) sits in the
//! first megabyte, below the kernel; the initramfs goes to the top of low RAM; device windows
//! sit in the 32-bit hole under 4 GiB, which RAM skips.

/// The flat boot GDT both boot protocols enter with.
pub const BOOT_GDT_ADDR: u64 = 0x500;
/// PVH: `hvm_start_info`, followed by its module list.
pub const PVH_INFO_ADDR: u64 = 0x6000;
pub const PVH_MODLIST_ADDR: u64 = 0x6040;
/// PVH: the memory map the start info points at.
pub const PVH_MEMMAP_ADDR: u64 = 0x7000;
/// bzImage: the "zero page" (`boot_params`).
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// The kernel command line (NUL-terminated).
pub const CMDLINE_ADDR: u64 = 0x20000;
/// x86 Linux reads at most this many bytes of command line (COMMAND_LINE_SIZE), NUL included.
pub const CMDLINE_MAX: usize = 2048;
/// The MP table lives in the last KiB of base memory, one of the places Linux scans for it.
pub const MPTABLE_ADDR: u64 = 0x9fc00;
/// End of conventional memory; 640 KiB..1 MiB is reserved (legacy BIOS/VGA area).
pub const EBDA_START: u64 = 0x9fc00;
/// Kernels load at or above 1 MiB.
pub const HIMEM_START: u64 = 0x10_0000;

/// The 32-bit hole: RAM below it, device windows and the APICs inside it.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
pub const FOUR_GIB: u64 = 0x1_0000_0000;
/// Guest-physical address of the I/O APIC and of each local APIC (the architectural defaults).
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
pub const LAPIC_ADDR: u32 = 0xfee0_0000;

/// virtio-mmio windows: one 4 KiB page per device, from here up.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// virtio-mmio interrupts: GSI 5 for the first device, then up. The I/O APIC has 24 pins.
pub const VIRTIO_FIRST_IRQ: u32 = 5;
pub const IOAPIC_PINS: u32 = 24;
/// How many virtio devices a VM can have: one interrupt line each, GSI 5 to 23.
pub const MAX_VIRTIO_DEVICES: usize = (IOAPIC_PINS - VIRTIO_FIRST_IRQ) as usize;
/// 8250 console at the COM1 port with its legacy interrupt.
pub const SERIAL_PORT: u16 = 0x3f8;
pub const SERIAL_IRQ: u32 = 4;
/// i8042 controller (only its reset line matters).
pub const I8042_DATA_PORT: u16 = 0x60;
pub const I8042_CMD_PORT: u16 = 0x64;
/// guest-init's power-off port (see the BRIEF): any 1-byte write powers the VM off.
pub const SHUTDOWN_PORT: u16 = 0x510;

/// The guest RAM ranges for `mem_bytes` of memory: below the 32-bit hole, and the rest above 4 GiB.
pub fn ram_ranges(mem_bytes: u64) -> Vec<(u64, u64)> {
    let low = mem_bytes.min(MMIO_HOLE_START);
    let mut ranges = vec![(0, low)];
    if mem_bytes > low {
        ranges.push((FOUR_GIB, mem_bytes - low));
    }
    ranges
}

/// The virtio-mmio window and interrupt of the `index`th device; `None` past the last I/O APIC pin.
pub fn virtio_slot(index: usize) -> Option<(u64, u32)> {
    let irq = VIRTIO_FIRST_IRQ.checked_add(u32::try_from(index).ok()?)?;
    (irq < IOAPIC_PINS).then(|| (VIRTIO_MMIO_BASE + index as u64 * VIRTIO_MMIO_SIZE, irq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_memory_is_one_low_range() {
        assert_eq!(ram_ranges(128 << 20), vec![(0, 128 << 20)]);
    }

    #[test]
    fn large_memory_skips_the_hole() {
        let r = ram_ranges(4 << 30);
        assert_eq!(
            r,
            vec![
                (0, MMIO_HOLE_START),
                (FOUR_GIB, (4 << 30) - MMIO_HOLE_START)
            ]
        );
    }

    #[test]
    fn virtio_slots_stop_at_the_last_ioapic_pin() {
        assert_eq!(virtio_slot(0), Some((0xd000_0000, 5)));
        assert_eq!(virtio_slot(2), Some((0xd000_2000, 7)));
        assert_eq!(virtio_slot(18), Some((0xd001_2000, 23)));
        assert_eq!(virtio_slot(19), None);
        assert!(virtio_slot(MAX_VIRTIO_DEVICES - 1).is_some());
        assert_eq!(virtio_slot(MAX_VIRTIO_DEVICES), None);
    }
}
