//! Setting up a vCPU: what CPUID says, the MSRs Linux expects, the FPU, the local APIC's
//! legacy interrupt pins, and (for the boot vCPU) the flat 32-bit protected-mode entry state.

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_fpu, kvm_msr_entry, kvm_segment, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd};
use vm_memory::{Bytes, GuestAddress};

use crate::boot::{BootEntry, BootProtocol};
use crate::layout::BOOT_GDT_ADDR;
use crate::virtio::GuestMem;

#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    #[error("KVM_GET_SUPPORTED_CPUID failed: {0}")]
    SupportedCpuid(#[source] kvm_ioctls::Error),
    #[error("cannot set up vCPU {index}: {what}: {source}")]
    Setup {
        index: u8,
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot write the boot GDT into guest memory")]
    Gdt,
}

/// The CPUID table KVM can virtualise here, made consistent; adjusted per vCPU by [`configure`].
pub fn supported_cpuid(kvm: &Kvm) -> Result<CpuId, CpuError> {
    let mut cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(CpuError::SupportedCpuid)?;
    let tsc_deadline = kvm.check_extension(Cap::TscDeadlineTimer);
    normalize(cpuid.as_mut_slice(), tsc_deadline);
    Ok(cpuid)
}

/// CPUID.1:ECX bit 24: the local APIC timer has TSC-deadline mode. KVM emulates it but leaves
/// the bit for the VMM to set; without it Linux calibrates the APIC timer against the PIT.
const ECX_TSC_DEADLINE: u32 = 1 << 24;

/// Whole-VM CPUID fixes before the per-vCPU ones.
fn normalize(entries: &mut [kvm_cpuid_entry2], tsc_deadline: bool) {
    for e in entries.iter_mut().filter(|e| e.function == LEAF_FEATURES) {
        if tsc_deadline {
            e.ecx |= ECX_TSC_DEADLINE;
        }
    }
}

const LEAF_FEATURES: u32 = 0x1;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
/// CPUID.1:ECX bit 31: "running under a hypervisor" (makes Linux look for kvm-clock).
const ECX_HYPERVISOR: u32 = 1 << 31;
/// CPUID.1:EDX bit 28: more than one logical processor per package.
const EDX_HTT: u32 = 1 << 28;

/// Per-vCPU CPUID: its APIC id, the vCPU count, the hypervisor bit. KVM's own leaves
/// (0x4000_0000 "KVMKVMKVM" and its feature leaf, which announce kvm-clock) come from KVM as is.
fn cpuid_for(base: &CpuId, index: u8, cpus: u8) -> CpuId {
    let mut cpuid = base.clone();
    for e in cpuid.as_mut_slice() {
        match e.function {
            LEAF_FEATURES => {
                e.ebx = (e.ebx & 0x0000_ffff) | (u32::from(index) << 24) | (u32::from(cpus) << 16);
                e.ecx |= ECX_HYPERVISOR;
                if cpus > 1 {
                    e.edx |= EDX_HTT;
                }
            }
            LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => e.edx = u32::from(index),
            _ => {}
        }
    }
    cpuid
}

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRRs enabled, default memory type write-back: all RAM cacheable.
const MTRR_ENABLE_WRITE_BACK: u64 = (1 << 11) | 6;

fn boot_msrs() -> Vec<kvm_msr_entry> {
    let entry = |index, data| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    vec![
        entry(MSR_IA32_SYSENTER_CS, 0),
        entry(MSR_IA32_SYSENTER_ESP, 0),
        entry(MSR_IA32_SYSENTER_EIP, 0),
        entry(MSR_STAR, 0),
        entry(MSR_LSTAR, 0),
        entry(MSR_CSTAR, 0),
        entry(MSR_SYSCALL_MASK, 0),
        entry(MSR_KERNEL_GS_BASE, 0),
        entry(MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        entry(MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WRITE_BACK),
    ]
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// Sets the delivery mode (bits 8..11) of the LVT register at `offset` in the APIC page.
fn set_lvt_mode(regs: &mut [std::os::raw::c_char], offset: usize, mode: u32) {
    let mut bytes = [0u8; 4];
    for (b, r) in bytes.iter_mut().zip(&regs[offset..offset + 4]) {
        *b = *r as u8;
    }
    let value = (u32::from_le_bytes(bytes) & !0x700) | (mode << 8);
    for (r, b) in regs[offset..offset + 4].iter_mut().zip(value.to_le_bytes()) {
        *r = b as std::os::raw::c_char;
    }
}

/// Turns a failed ioctl of `what` on vCPU `index` into a [`CpuError`].
fn setup_error(index: u8, what: &'static str) -> impl Fn(kvm_ioctls::Error) -> CpuError {
    move |source| CpuError::Setup {
        index,
        what,
        source,
    }
}

/// Prepares vCPU `index` of `cpus`. Only the boot vCPU gets `boot`; the others wait for the
/// guest's INIT/SIPI in the in-kernel local APIC.
pub fn configure(
    vcpu: &VcpuFd,
    index: u8,
    cpus: u8,
    base_cpuid: &CpuId,
    mem: &GuestMem,
    boot: Option<BootEntry>,
) -> Result<(), CpuError> {
    let err = |what| setup_error(index, what);
    vcpu.set_cpuid2(&cpuid_for(base_cpuid, index, cpus))
        .map_err(err("CPUID"))?;
    let msrs = Msrs::from_entries(&boot_msrs()).map_err(|_| CpuError::Setup {
        index,
        what: "MSR list",
        source: kvm_ioctls::Error::new(libc::EINVAL),
    })?;
    vcpu.set_msrs(&msrs).map_err(err("MSRs"))?;
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(err("FPU"))?;
    let mut lapic = vcpu.get_lapic().map_err(err("local APIC"))?;
    set_lvt_mode(&mut lapic.regs, APIC_LVT0, APIC_MODE_EXTINT);
    set_lvt_mode(&mut lapic.regs, APIC_LVT1, APIC_MODE_NMI);
    vcpu.set_lapic(&lapic).map_err(err("local APIC"))?;
    if let Some(boot) = boot {
        set_entry_state(vcpu, index, mem, boot)?;
    }
    Ok(())
}

/// GDT selectors the Linux 32-bit boot protocol mandates (__BOOT_CS, __BOOT_DS); PVH takes any.
const CODE_SELECTOR: u16 = 0x10;
const DATA_SELECTOR: u16 = 0x18;
const TSS_SELECTOR: u16 = 0x20;

/// A GDT descriptor from access flags (bits 0..7 type/S/DPL/P, 12..15 AVL/L/D/G), base, limit.
fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let (base, limit, flags) = (u64::from(base), u64::from(limit), u64::from(flags));
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0xffff)
}

fn flat_segment(selector: u16, type_: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        ..Default::default()
    }
}

/// Flat 32-bit protected mode, paging off, interrupts off: the entry state of both protocols.
fn set_entry_state(
    vcpu: &VcpuFd,
    index: u8,
    mem: &GuestMem,
    boot: BootEntry,
) -> Result<(), CpuError> {
    let err = |what| setup_error(index, what);
    let gdt = [
        0,
        0,
        gdt_entry(0xc09b, 0, 0xfffff), // code: 32-bit, execute/read, accessed, 4 GiB
        gdt_entry(0xc093, 0, 0xfffff), // data: read/write, accessed, 4 GiB
        gdt_entry(0x008b, 0, 0x67),    // TSS (busy): KVM wants a usable task register
    ];
    for (i, e) in gdt.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(BOOT_GDT_ADDR + i as u64 * 8))
            .map_err(|_| CpuError::Gdt)?;
    }
    let mut sregs = vcpu.get_sregs().map_err(err("special registers"))?;
    sregs.gdt.base = BOOT_GDT_ADDR;
    sregs.gdt.limit = (gdt.len() * 8 - 1) as u16;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cs = flat_segment(CODE_SELECTOR, 0xb);
    let data = flat_segment(DATA_SELECTOR, 0x3);
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.tr = kvm_segment {
        base: 0,
        limit: 0x67,
        selector: TSS_SELECTOR,
        type_: 0xb,
        present: 1,
        ..Default::default()
    };
    sregs.cr0 = 0x11; // PE + ET
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
    vcpu.set_sregs(&sregs).map_err(err("special registers"))?;

    let mut regs = kvm_bindings::kvm_regs {
        rflags: 0x2,
        rip: boot.entry,
        ..Default::default()
    };
    match boot.protocol {
        BootProtocol::Pvh { start_info } => regs.rbx = start_info,
        BootProtocol::Linux { zero_page } => regs.rsi = zero_page,
    }
    vcpu.set_regs(&regs).map_err(err("registers"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_encode_flat_segments() {
        // The well-known encodings of a flat 32-bit code and data segment.
        assert_eq!(gdt_entry(0xc09b, 0, 0xfffff), 0x00cf_9b00_0000_ffff);
        assert_eq!(gdt_entry(0xc093, 0, 0xfffff), 0x00cf_9300_0000_ffff);
        assert_eq!(gdt_entry(0x008b, 0x1234_5678, 0x67), 0x1200_8b34_5678_0067);
    }

    #[test]
    fn lvt_mode_changes_only_the_delivery_bits() {
        let mut regs = [0 as std::os::raw::c_char; 1024];
        regs[APIC_LVT0] = 0x30; // a vector
        regs[APIC_LVT0 + 2] = 0x01; // the mask bit (16)
        set_lvt_mode(&mut regs, APIC_LVT0, APIC_MODE_EXTINT);
        let v = u32::from_le_bytes([
            regs[0x350] as u8,
            regs[0x351] as u8,
            regs[0x352] as u8,
            regs[0x353] as u8,
        ]);
        assert_eq!(v, 0x1_0730);
    }

    #[test]
    fn tsc_deadline_is_announced_when_kvm_emulates_it() {
        let mut leaf1 = [kvm_cpuid_entry2 {
            function: 1,
            ecx: 1,
            ..Default::default()
        }];
        normalize(&mut leaf1, false);
        assert_eq!(leaf1[0].ecx, 1);
        normalize(&mut leaf1, true);
        assert_eq!(leaf1[0].ecx, 1 | ECX_TSC_DEADLINE);
    }

    #[test]
    fn cpuid_carries_apic_id_count_and_hypervisor_bit() {
        let base = CpuId::from_entries(&[
            kvm_bindings::kvm_cpuid_entry2 {
                function: 1,
                ebx: 0xdead_0800,
                ..Default::default()
            },
            kvm_bindings::kvm_cpuid_entry2 {
                function: 0xb,
                index: 1,
                edx: 0,
                ..Default::default()
            },
        ])
        .unwrap();
        let c = cpuid_for(&base, 3, 4);
        let e = c.as_slice();
        assert_eq!(e[0].ebx, 0x0304_0800);
        assert_ne!(e[0].ecx & ECX_HYPERVISOR, 0);
        assert_ne!(e[0].edx & EDX_HTT, 0);
        assert_eq!(e[1].edx, 3);
    }
}
