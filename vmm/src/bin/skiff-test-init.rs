//! `skiff-test-init`: a minimal /init for testing and benchmarking the VMM without guest-init.
//!
//! Packed with `skiff-vmm --init`, it reports what the guest sees on the console (user space
//! reached, vCPU count, that virtio-rng delivers bytes) and then ends the VM the way its
//! arguments say (kernel command line words after `--`):
//!   poweroff [STATUS]  write STATUS (default 0) to the shutdown port: skiff-vmm exits 0
//!   reboot             reboot(2): the kernel resets through the i8042, skiff-vmm exits 2
//!   exit               return from /init: the kernel panics, skiff-vmm exits 2
//!   hang               keep running until the VMM is stopped from outside
//!   (nothing)          like `poweroff 0`

use std::io::Read;

const SHUTDOWN_PORT: u16 = 0x510;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("skiff-test-init: user space reached");
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("skiff-test-init: cpus={cpus}");
    println!("skiff-test-init: mem_mib={}", total_memory_mib());
    report_hwrng();
    match args.first().map(String::as_str) {
        Some("reboot") => {
            println!("skiff-test-init: rebooting");
            // SAFETY: plain syscall; as PID 1 with CAP_SYS_BOOT it does not return.
            unsafe { libc::reboot(libc::RB_AUTOBOOT) };
        }
        Some("exit") => println!("skiff-test-init: exiting /init"),
        Some("hang") => {
            println!("skiff-test-init: hanging");
            idle();
        }
        Some("poweroff") | None => {
            let status = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(0u8);
            println!("skiff-test-init: powering off with status {status}");
            power_off(status);
        }
        Some(other) => println!("skiff-test-init: unknown action {other:?}; exiting /init"),
    }
}

/// RAM the guest kernel manages (a little less than the VM's memory).
fn total_memory_mib() -> u64 {
    // SAFETY: an all-zero sysinfo is a valid value of this plain C struct.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: sysinfo writes into the struct we own.
    if unsafe { libc::sysinfo(&mut info) } != 0 {
        return 0;
    }
    (info.totalram as u64 * u64::from(info.mem_unit)) >> 20
}

/// Reads from the virtio-rng device through the kernel's hwrng interface.
fn report_hwrng() {
    let (src, dst, fstype) = (c"devtmpfs", c"/dev", c"devtmpfs");
    // SAFETY: valid NUL-terminated strings; mounting devtmpfs on the initramfs' /dev.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        println!(
            "skiff-test-init: cannot mount devtmpfs: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    let mut buf = [0u8; 32];
    match std::fs::File::open("/dev/hwrng").and_then(|mut f| f.read(&mut buf)) {
        Ok(n) => println!(
            "skiff-test-init: hwrng read {n} bytes, nonzero={}",
            buf[..n].iter().any(|b| *b != 0)
        ),
        Err(e) => println!("skiff-test-init: hwrng unavailable: {e}"),
    }
}

fn power_off(status: u8) {
    // The console is written asynchronously: let it drain before the machine goes away.
    // SAFETY: tcdrain on our stdout descriptor.
    unsafe { libc::tcdrain(1) };
    // SAFETY: grants this process access to one I/O port; PID 1 runs as root.
    if unsafe { libc::ioperm(SHUTDOWN_PORT.into(), 1, 1) } != 0 {
        // Without the port (kernel without CONFIG_X86_IOPL_IOPERM) end by panicking the kernel
        // rather than hanging: the VMM reports that as a crash.
        println!(
            "skiff-test-init: ioperm failed: {}",
            std::io::Error::last_os_error()
        );
        std::process::exit(1);
    } else {
        // SAFETY: a 1-byte write to the VMM's shutdown port, which ioperm just allowed.
        unsafe { std::arch::asm!("out dx, al", in("dx") SHUTDOWN_PORT, in("al") status) };
    }
    // The VMM stops the vCPUs; until then, wait without burning the CPU.
    idle();
}

fn idle() -> ! {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
