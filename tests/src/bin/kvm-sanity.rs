//! KVM sanity payload for the test host: proves that /dev/kvm runs 64-bit guest code at CPL0.
//!
//! It builds a VM with 2 MiB of memory, identity-maps it with one 2 MiB page, enters long mode
//! directly (GDT, CR0/CR4/EFER, page tables set through KVM_SET_SREGS) and runs a seven-instruction
//! program that only works as intended in 64-bit mode (a REX.W shift of a 64-bit immediate), writes
//! the result to I/O port 0xE9 and halts (HLT exits only at CPL0). It prints one line per exit and
//! a verdict; exit status 0 means PASS. The integration test `kvm_sanity` checks these lines.

use anyhow::{bail, ensure, Context, Result};
use kvm_bindings::{kvm_segment, kvm_userspace_memory_region};
use kvm_ioctls::VcpuExit;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap};

const MEM_SIZE: usize = 2 << 20;
const GDT_ADDR: u64 = 0x1000;
const PML4_ADDR: u64 = 0x2000;
const PDPT_ADDR: u64 = 0x3000;
const PD_ADDR: u64 = 0x4000;
const CODE_ADDR: u64 = 0x8000;
const STACK_TOP: u64 = 0x10000;
/// The port the program writes to (Bochs/QEMU's debug port by convention).
const PORT: u16 = 0xe9;

/// mov dx, 0xe9; mov rax, 0x0123456789abcdef; shr rax, 32; out dx, eax; mov al, '!'; out dx, al; hlt
/// In 32-bit mode the REX prefixes would decode as `dec eax` and the port would see other bytes.
const PROGRAM: &[u8] = &[
    0x66, 0xba, 0xe9, 0x00, // mov dx, 0xe9
    0x48, 0xb8, 0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01, // mov rax, 0x0123456789abcdef
    0x48, 0xc1, 0xe8, 0x20, // shr rax, 32
    0xef, // out dx, eax
    0xb0, 0x21, // mov al, '!'
    0xee, // out dx, al
    0xf4, // hlt
];

/// The two writes the program must make, in order.
const EXPECTED_OUT: [&[u8]; 2] = [&[0x67, 0x45, 0x23, 0x01], b"!"];
/// RAX at the HLT: the shifted value with its low byte replaced by '!'.
const EXPECTED_RAX: u64 = 0x0123_4521;

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const PTE_PRESENT_RW: u64 = 0b11;
const PDE_2M_PAGE: u64 = 1 << 7;

fn main() {
    match run() {
        Ok(()) => println!("kvm-sanity: PASS"),
        Err(e) => {
            println!("kvm-sanity: FAIL: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run() -> Result<()> {
    let kvm = skiff_vmm::kvm_host::open_kvm()?;
    println!("kvm-sanity: api_version={}", kvm.get_api_version());
    let vm = kvm.create_vm().context("KVM_CREATE_VM")?;

    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)])
        .context("guest memory")?;
    write_guest(&mem)?;
    let host_addr = mem
        .get_host_address(GuestAddress(0))
        .context("host address of guest memory")?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: 0,
        memory_size: MEM_SIZE as u64,
        userspace_addr: host_addr as u64,
        flags: 0,
    };
    // SAFETY: the region is a live mapping of MEM_SIZE bytes owned by `mem`, which outlives `vm`.
    unsafe { vm.set_user_memory_region(region) }.context("KVM_SET_USER_MEMORY_REGION")?;

    let mut vcpu = vm.create_vcpu(0).context("KVM_CREATE_VCPU")?;
    let mut sregs = vcpu.get_sregs().context("KVM_GET_SREGS")?;
    let code = segment(1, 0xb, true);
    let data = segment(2, 0x3, false);
    sregs.cs = code;
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = 3 * 8 - 1;
    sregs.cr3 = PML4_ADDR;
    sregs.cr4 = CR4_PAE;
    sregs.cr0 = CR0_PE | CR0_ET | CR0_NE | CR0_PG;
    sregs.efer = EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs).context("KVM_SET_SREGS")?;
    let mut regs = vcpu.get_regs().context("KVM_GET_REGS")?;
    regs.rip = CODE_ADDR;
    regs.rsp = STACK_TOP;
    regs.rflags = 0x2;
    vcpu.set_regs(&regs).context("KVM_SET_REGS")?;

    let mut outs = Vec::new();
    loop {
        match vcpu.run().context("KVM_RUN")? {
            VcpuExit::IoOut(port, data) => {
                println!("kvm-sanity: io_out port={port:#x} data={}", hex(data));
                ensure!(port == PORT, "write to port {port:#x}, expected {PORT:#x}");
                outs.push(data.to_vec());
                ensure!(
                    outs.len() <= EXPECTED_OUT.len(),
                    "more port writes than the program makes"
                );
            }
            VcpuExit::Hlt => break,
            other => bail!("unexpected exit {other:?}"),
        }
    }
    let regs = vcpu.get_regs().context("KVM_GET_REGS")?;
    let sregs = vcpu.get_sregs().context("KVM_GET_SREGS")?;
    let long_mode = sregs.efer & EFER_LMA != 0;
    println!(
        "kvm-sanity: hlt rax={:#x} rip={:#x} long_mode={long_mode}",
        regs.rax, regs.rip
    );
    ensure!(
        outs == EXPECTED_OUT,
        "port writes {outs:x?}, expected {EXPECTED_OUT:x?}"
    );
    ensure!(
        regs.rax == EXPECTED_RAX,
        "rax {:#x}, expected {EXPECTED_RAX:#x}",
        regs.rax
    );
    ensure!(
        regs.rip == CODE_ADDR + PROGRAM.len() as u64,
        "halted at {:#x}, not after the program",
        regs.rip
    );
    ensure!(long_mode, "EFER.LMA is clear: the vCPU left long mode");
    Ok(())
}

/// Writes the GDT, the page tables (first 2 MiB identity-mapped) and the program.
fn write_guest(mem: &GuestMemoryMmap) -> Result<()> {
    // Null, 64-bit code (L=1), data: access bytes 0x9a/0x92, flags G with L or D/B.
    let gdt: [u64; 3] = [0, 0x00af_9a00_0000_ffff, 0x00cf_9200_0000_ffff];
    for (i, entry) in gdt.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(GDT_ADDR + 8 * i as u64))?;
    }
    mem.write_obj(PDPT_ADDR | PTE_PRESENT_RW, GuestAddress(PML4_ADDR))?;
    mem.write_obj(PD_ADDR | PTE_PRESENT_RW, GuestAddress(PDPT_ADDR))?;
    mem.write_obj(PTE_PRESENT_RW | PDE_2M_PAGE, GuestAddress(PD_ADDR))?;
    mem.write_slice(PROGRAM, GuestAddress(CODE_ADDR))?;
    Ok(())
}

/// A flat ring-0 segment for GDT entry `index` (matching `write_guest`'s descriptors).
fn segment(index: u16, type_: u8, code: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: index * 8,
        type_,
        present: 1,
        dpl: 0,
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
