//! The Intel MultiProcessor table: how a kernel without ACPI learns of the vCPUs beyond the
//! first, of the I/O APIC and of how ISA interrupts reach it.

use vm_memory::{Bytes, GuestAddress};

use crate::layout::{IOAPIC_ADDR, IOAPIC_PINS, LAPIC_ADDR, MPTABLE_ADDR};
use crate::virtio::GuestMem;

/// APIC ids are 8 bits and the I/O APIC takes the id after the last vCPU.
pub const MAX_CPUS: u8 = 254;

const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BSP: u8 = 2;
/// Family 6 and the FPU + APIC feature bits: what Linux expects from a plausible x86 CPU entry.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = 0x201;
const INT_VECTORED: u8 = 0;
const INT_NMI: u8 = 1;
const INT_EXTINT: u8 = 3;
const ENTRY_CPU: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IOINT: u8 = 3;
const ENTRY_LOCALINT: u8 = 4;
const ISA_BUS: u8 = 0;
const ALL_LAPICS: u8 = 0xff;

#[derive(Debug, thiserror::Error)]
pub enum MptableError {
    #[error("{0} vCPUs do not fit in an MP table (1 to {MAX_CPUS})")]
    CpuCount(u8),
    #[error("cannot write the MP table into guest memory")]
    Write,
}

/// Builds the table for `cpus` vCPUs as it sits at `base` (the floating pointer first).
fn build(cpus: u8, base: u32) -> Result<Vec<u8>, MptableError> {
    if cpus == 0 || cpus > MAX_CPUS {
        return Err(MptableError::CpuCount(cpus));
    }
    let ioapic_id = cpus;
    let mut entries = Vec::new();
    let mut count: u16 = 0;
    for id in 0..cpus {
        let flags = CPU_ENABLED | if id == 0 { CPU_BSP } else { 0 };
        entries.extend_from_slice(&[ENTRY_CPU, id, APIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_BUS, ISA_BUS]);
    entries.extend_from_slice(b"ISA   ");
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    count += 2;
    let mut io_interrupt = |kind: u8, bus_irq: u8, pin: u8| {
        // flags 0: polarity and trigger as the bus defines (ISA: edge, active high).
        entries.extend_from_slice(&[ENTRY_IOINT, kind, 0, 0, ISA_BUS, bus_irq, ioapic_id, pin]);
        count += 1;
    };
    // The 8259 cascade sits on pin 0; KVM routes ISA IRQ 0 (the PIT) to pin 2, as PCs do.
    io_interrupt(INT_EXTINT, 0, 0);
    io_interrupt(INT_VECTORED, 0, 2);
    for irq in 1..IOAPIC_PINS as u8 {
        if irq != 2 {
            io_interrupt(INT_VECTORED, irq, irq);
        }
    }
    for (kind, lint) in [(INT_EXTINT, 0), (INT_NMI, 1)] {
        entries.extend_from_slice(&[ENTRY_LOCALINT, kind, 0, 0, ISA_BUS, 0, ALL_LAPICS, lint]);
        count += 1;
    }

    let config_addr = base + 16;
    let mut config = Vec::with_capacity(44 + entries.len());
    config.extend_from_slice(b"PCMP");
    config.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    config.push(4); // spec revision 1.4
    config.push(0); // checksum, below
    config.extend_from_slice(b"SKIFF   ");
    config.extend_from_slice(b"MICROVM     ");
    config.extend_from_slice(&[0; 6]); // no OEM table
    config.extend_from_slice(&count.to_le_bytes());
    config.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    config.extend_from_slice(&[0; 4]); // no extended table
    config.extend_from_slice(&entries);
    config[7] = checksum(&config);

    let mut table = Vec::with_capacity(16 + config.len());
    table.extend_from_slice(b"_MP_");
    table.extend_from_slice(&config_addr.to_le_bytes());
    table.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]); // 1 paragraph, rev 1.4, checksum, features
    table[10] = checksum(&table);
    table.extend_from_slice(&config);
    Ok(table)
}

/// The byte that makes `bytes` sum to zero.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// Writes the MP table for `cpus` vCPUs at its fixed place in base memory.
pub fn write(mem: &GuestMem, cpus: u8) -> Result<(), MptableError> {
    let table = build(cpus, MPTABLE_ADDR as u32)?;
    mem.write_slice(&table, GuestAddress(MPTABLE_ADDR))
        .map_err(|_| MptableError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    #[test]
    fn table_is_well_formed_and_checksummed() {
        let t = build(4, 0x9fc00).unwrap();
        assert_eq!(&t[..4], b"_MP_");
        assert_eq!(sum(&t[..16]), 0);
        assert_eq!(u32::from_le_bytes(t[4..8].try_into().unwrap()), 0x9fc10);
        let config = &t[16..];
        assert_eq!(&config[..4], b"PCMP");
        let len = u16::from_le_bytes([config[4], config[5]]) as usize;
        assert_eq!(len, config.len());
        assert_eq!(sum(config), 0);
        // Walk the entries: 4 CPUs (first one BSP), then the bus, the I/O APIC (id 4), interrupts.
        let mut at = 44;
        let mut cpus = Vec::new();
        let mut ioapic_ids = Vec::new();
        let mut pins = Vec::new();
        let count = u16::from_le_bytes([config[34], config[35]]);
        for _ in 0..count {
            match config[at] {
                ENTRY_CPU => {
                    cpus.push((config[at + 1], config[at + 3]));
                    at += 20;
                }
                ENTRY_IOAPIC => {
                    ioapic_ids.push(config[at + 1]);
                    at += 8;
                }
                ENTRY_IOINT => {
                    pins.push(config[at + 7]);
                    at += 8;
                }
                ENTRY_BUS | ENTRY_LOCALINT => at += 8,
                other => panic!("unknown entry type {other}"),
            }
        }
        assert_eq!(at, len);
        assert_eq!(cpus, vec![(0, 3), (1, 1), (2, 1), (3, 1)]);
        assert_eq!(ioapic_ids, vec![4]);
        pins.sort_unstable();
        assert_eq!(pins, (0..24).collect::<Vec<u8>>());
    }

    #[test]
    fn cpu_count_is_bounded() {
        assert!(build(0, 0).is_err());
        assert!(build(255, 0).is_err());
        assert!(build(MAX_CPUS, 0x9fc00).is_ok());
    }
}
