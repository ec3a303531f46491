//! `hostile-guest`: what a hostile container does to its VMM, for the flood tests (run as root in
//! a guest, bound in from the test host).
//!
//!   hostile-guest vsock N PORT    opens N vsock connections to the host's PORT, holding those
//!                                 the host takes; prints how many it took
//!   hostile-guest console SECS    writes to the serial console as fast as it can
//!   hostile-guest ioexit SECS     makes port-I/O VM exits back to back (iopl, out to port 0x80)
//!   hostile-guest files SECS      creates, stats and removes files in its root share, nonstop
//!
//! Each prints `NAME=COUNT` when done.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::Context;

const VMADDR_CID_HOST: u32 = 2;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let secs = |s: &str| -> anyhow::Result<Instant> {
        Ok(Instant::now() + Duration::from_secs(s.parse().context("seconds")?))
    };
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["vsock", n, port] => vsock(n.parse()?, port.parse()?),
        ["console", s] => console(secs(s)?),
        ["ioexit", s] => ioexit(secs(s)?),
        ["files", s] => files(secs(s)?),
        _ => anyhow::bail!("usage: hostile-guest vsock N PORT | console|ioexit|files SECONDS"),
    }
}

/// One vsock stream connection attempt to the host's `port`.
fn connect_vsock(port: u32) -> Option<OwnedFd> {
    // SAFETY: socket takes integers; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the descriptor was just made and nothing else owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero is a valid sockaddr_vm.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = VMADDR_CID_HOST;
    addr.svm_port = port;
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: a valid sockaddr_vm of the length given.
    let rc = unsafe { libc::connect(fd, (&raw const addr).cast(), len) };
    (rc == 0).then_some(owned)
}

fn vsock(n: usize, port: u32) -> anyhow::Result<()> {
    let held: Vec<OwnedFd> = (0..n).filter_map(|_| connect_vsock(port)).collect();
    println!("vsock_attempts={n} vsock_taken={}", held.len());
    Ok(())
}

fn console(until: Instant) -> anyhow::Result<()> {
    let mut tty = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/console")
        .context("/dev/console")?;
    let line = [b'#'; 4095];
    let mut bytes = 0u64;
    while Instant::now() < until {
        tty.write_all(&line)?;
        tty.write_all(b"\n")?;
        bytes += 4096;
    }
    println!("console_bytes={bytes}");
    Ok(())
}

fn ioexit(until: Instant) -> anyhow::Result<()> {
    // SAFETY: iopl only changes this process's I/O privilege level.
    if unsafe { libc::iopl(3) } != 0 {
        anyhow::bail!("iopl: {}", std::io::Error::last_os_error());
    }
    let mut exits = 0u64;
    while Instant::now() < until {
        for _ in 0..1000 {
            // SAFETY: a write to the POST diagnostic port, which no device of the VM claims;
            // it only makes a VM exit.
            unsafe { std::arch::asm!("out 0x80, al", in("al") 0u8) };
        }
        exits += 1000;
    }
    println!("ioexit_count={exits}");
    Ok(())
}

fn files(until: Instant) -> anyhow::Result<()> {
    let dir = std::path::Path::new("/flood");
    std::fs::create_dir_all(dir)?;
    let mut ops = 0u64;
    while Instant::now() < until {
        for i in 0..100 {
            let path = dir.join(format!("f{i}"));
            std::fs::write(&path, b"x")?;
            std::fs::metadata(&path)?;
        }
        for i in 0..100 {
            std::fs::remove_file(dir.join(format!("f{i}")))?;
        }
        ops += 300;
    }
    println!("files_ops={ops}");
    Ok(())
}
