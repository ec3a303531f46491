//! `testhost-kvm-hold`: keeps one idle KVM VM open (in-kernel irqchip, one vCPU that never runs)
//! until it is killed. The nested test host's init starts it before the command and leaves it
//! running until the machine powers off (`tests/testhost/run --no-kvm-hold` turns it off).
//!
//! Why: KVM enables the `preempt_notifier_key` static key when the first VM is created and
//! disables it when the last one is destroyed (its APIC keys likewise follow the first vCPU with an
//! in-kernel local APIC). Each flip rewrites live kernel text through the INT3 breakpoint protocol
//! (`text_poke_bp`). QEMU's TCG, which runs the test host, can keep executing a stale translated
//! INT3 after the byte was restored: the kernel's INT3 handler finds no breakpoint there and
//! returns to the same instruction forever, holding the run-queue lock while the other CPU spins
//! on it — the test host freezes. Measured 2026-11-25 (40 sequential + 3×8 parallel guest boots a
//! session): 5 of 10 sessions froze without a held VM, 0 of 12 (736 boots) with one. With a VM
//! always open the keys never flip, so no kernel text is patched while tests run.
//!
//! Prints `holding` on stdout once the VM and its vCPU exist (the init waits for that line), then
//! sleeps until a signal ends it. Exits 1 with the reason when KVM refuses.

use anyhow::Context;
use std::io::Write;

fn main() {
    if let Err(e) = hold() {
        eprintln!("testhost-kvm-hold: {e:#}");
        std::process::exit(1);
    }
}

fn hold() -> anyhow::Result<()> {
    let kvm = kvm_ioctls::Kvm::new().context("opening /dev/kvm")?;
    let vm = kvm.create_vm().context("KVM_CREATE_VM")?;
    vm.create_irq_chip().context("KVM_CREATE_IRQCHIP")?;
    let _vcpu = vm.create_vcpu(0).context("KVM_CREATE_VCPU")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "holding").context("writing to stdout")?;
    out.flush().context("writing to stdout")?;
    drop(out);
    loop {
        // SAFETY: pause(2) only blocks the calling thread until a signal arrives.
        unsafe { libc::pause() };
    }
}
