//! `skiff-vmm-bench`: boot time and memory of skiff-vmm against QEMU `-M microvm`, same kernel,
//! same initramfs (skiff-test-init as /init), run where real KVM is (the nested test host).
//!
//!   skiff-vmm-bench [--runs N] [--kernel VMLINUX] [--qemu PATH]
//!
//! Per VMM: launch → first user-space output ("user space reached" on the console) and launch →
//! process exit (the guest reboots at once: `reboot(2)`), medians of N runs; then RSS and PSS of
//! the VMM process with the guest idle in user space. Prints a table; asserts nothing.
//!
//! QEMU gets what skiff-vmm gets: the same kernel, the same initramfs bytes (skiff's packing of
//! skiff-test-init, written to a temp file for `-initrd`), 128 MiB, one vCPU, a virtio-rng on
//! virtio-mmio, and skiff's kernel command line with one change: `reboot=t`, since microvm has no
//! i8042 reset line (with `reboot=k` the guest loops instead of resetting) and its triple fault
//! ends QEMU under `-no-reboot`. In the test host: `tests/testhost/run --with-qemu`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use skiff_vmm::boot::cmdline;
use skiff_vmm::boot::initramfs::Initramfs;

struct Sample {
    to_user_space: Duration,
    to_exit: Duration,
}

/// How to start one VMM with the guest doing `action` (skiff-test-init's argument).
trait Launcher {
    fn name(&self) -> &str;
    fn command(&self, action: &str) -> Command;
}

struct Skiff {
    vmm: PathBuf,
    kernel: PathBuf,
    init: PathBuf,
}

impl Launcher for Skiff {
    fn name(&self) -> &str {
        "skiff-vmm"
    }
    fn command(&self, action: &str) -> Command {
        let mut c = Command::new(&self.vmm);
        c.arg("--kernel")
            .arg(&self.kernel)
            .arg("--init")
            .arg(&self.init);
        c.args([
            "--memory",
            "128",
            "--serial",
            "-",
            "--cmdline-extra",
            &format!("-- {action}"),
        ]);
        c
    }
}

/// Where QEMU 7.2's microvm puts its first virtio-mmio device (what its auto-kernel-cmdline says).
const QEMU_RNG_TRANSPORT: &str = "virtio_mmio.device=512@0xfeb00e00:12";

struct Qemu {
    qemu: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
}

impl Launcher for Qemu {
    fn name(&self) -> &str {
        "qemu -M microvm"
    }
    fn command(&self, action: &str) -> Command {
        let mut c = Command::new(&self.qemu);
        // acpi=off: the guest finds virtio-mmio devices through `virtio_mmio.device=`, as with
        // skiff-vmm. QEMU's own (auto-kernel-cmdline) lands after our `--`, where the kernel hands
        // it to init: so it is off, and the transport of the one device is named below.
        c.args([
            "-M",
            "microvm,acpi=off,auto-kernel-cmdline=off,x-option-roms=off,rtc=off,isa-serial=on,\
             pic=off,pit=off",
        ]);
        c.args([
            "-enable-kvm",
            "-cpu",
            "host",
            "-m",
            "128",
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
        ]);
        c.args(["-nographic", "-no-reboot", "-serial", "stdio"]);
        c.args(["-device", "virtio-rng-device", "-kernel"])
            .arg(&self.kernel);
        c.arg("-initrd").arg(&self.initrd);
        let base = cmdline::BASE.replace("reboot=k", "reboot=t");
        c.args([
            "-append",
            &format!("{base} {QEMU_RNG_TRANSPORT} -- {action}"),
        ]);
        c
    }
}

fn spawn(l: &dyn Launcher, action: &str) -> anyhow::Result<Child> {
    l.command(action)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", l.name()))
}

/// Reads the console until `marker`; returns when it appeared (None if the console closed).
fn wait_for(
    child: &mut Child,
    marker: &str,
    start: Instant,
) -> Option<(Duration, BufReader<std::process::ChildStdout>)> {
    let mut out = BufReader::new(child.stdout.take()?);
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line.contains(marker) {
            return Some((start.elapsed(), out));
        }
    }
}

/// Longest a boot may take: a wedged guest or VMM costs one sample, not the whole bench.
const BOOT_LIMIT: Duration = Duration::from_secs(30);

/// SIGKILLs `child` unless the returned sender is dropped within `limit`. The child is reaped
/// only after that drop, so the pid cannot have been reused when the kill fires.
fn watchdog(child: &Child, limit: Duration) -> mpsc::Sender<()> {
    let (disarm, disarmed) = mpsc::channel::<()>();
    let pid = child.id() as libc::pid_t;
    std::thread::spawn(move || {
        if disarmed.recv_timeout(limit) == Err(mpsc::RecvTimeoutError::Timeout) {
            // SAFETY: plain syscall on our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    disarm
}

fn one_boot(l: &dyn Launcher) -> anyhow::Result<Sample> {
    let start = Instant::now();
    let mut child = spawn(l, "reboot")?;
    let dog = watchdog(&child, BOOT_LIMIT);
    let mut reached = wait_for(&mut child, "user space reached", start);
    if let Some((_, rest)) = &mut reached {
        std::io::copy(rest, &mut std::io::sink())?;
    }
    let to_exit = start.elapsed();
    let status = child.wait()?;
    drop(dog);
    match reached {
        None => bail!("{}: the guest never reached user space", l.name()),
        Some(_) if to_exit >= BOOT_LIMIT => {
            bail!("{}: no exit within {BOOT_LIMIT:?} ({status})", l.name())
        }
        Some((to_user_space, _)) => Ok(Sample {
            to_user_space,
            to_exit,
        }),
    }
}

/// RSS and PSS in KiB of the VMM with its guest idle in user space.
fn memory_kib(l: &dyn Launcher) -> anyhow::Result<(u64, u64)> {
    let mut child = spawn(l, "hang")?;
    let dog = watchdog(&child, BOOT_LIMIT);
    let found = wait_for(&mut child, "hanging", Instant::now());
    if found.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        bail!("{}: the guest never reached its idle loop", l.name());
    }
    std::thread::sleep(Duration::from_millis(500));
    let field = |file: &str, name: &str| -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/{file}", child.id())).ok()?;
        let line = text.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    let result = (field("status", "VmRSS:"), field("smaps_rollup", "Pss:"));
    let _ = child.kill();
    let _ = child.wait();
    drop(dog);
    drop(found);
    match result {
        (Some(rss), Some(pss)) => Ok((rss, pss)),
        _ => bail!("{}: cannot read its memory figures", l.name()),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut runs = 10usize;
    let mut kernel =
        PathBuf::from(std::env::var_os("SKIFF_KERNEL").unwrap_or_else(|| "/skiff/vmlinux".into()));
    let mut qemu = PathBuf::from("qemu-system-x86_64");
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--runs" => runs = value()?.parse().context("--runs")?,
            "--kernel" => kernel = value()?.into(),
            "--qemu" => qemu = value()?.into(),
            _ => bail!("usage: skiff-vmm-bench [--runs N] [--kernel VMLINUX] [--qemu PATH]"),
        }
    }
    let bin_dir = std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .context("no exe dir")?;
    let init = bin_dir.join("skiff-test-init");
    let initrd = std::env::temp_dir().join(format!("skiff-bench-{}.cpio", std::process::id()));
    std::fs::write(&initrd, Initramfs::from_init_file(&init)?.finish())?;

    let skiff = Skiff {
        vmm: bin_dir.join("skiff-vmm"),
        kernel: kernel.clone(),
        init,
    };
    let qemu = Qemu {
        qemu,
        kernel,
        initrd: initrd.clone(),
    };
    let launchers: [&dyn Launcher; 2] = [&skiff, &qemu];
    let mut rows = Vec::new();
    // Interleaved, so a slow phase of the machine hits both alike.
    let mut samples: Vec<Vec<Sample>> = launchers.iter().map(|_| Vec::new()).collect();
    // A VMM that failed this often is given up on (a missing binary would fail every run).
    const MAX_FAILURES: usize = 3;
    let mut failures: Vec<Vec<String>> = launchers.iter().map(|_| Vec::new()).collect();
    for run in 0..runs {
        for (i, l) in launchers.iter().enumerate() {
            if failures[i].len() < MAX_FAILURES {
                match one_boot(*l) {
                    Ok(s) => samples[i].push(s),
                    Err(e) => failures[i].push(format!("run {run}: {e:#}")),
                }
            }
        }
    }
    let mut medians = Vec::new();
    for (i, l) in launchers.iter().enumerate() {
        let s = std::mem::take(&mut samples[i]);
        if s.is_empty() {
            rows.push(format!("| {} | 0 | failed | | | |", l.name()));
            continue;
        }
        let user = median(s.iter().map(|s| s.to_user_space).collect());
        let exit = median(s.iter().map(|s| s.to_exit).collect());
        medians.push((user, exit));
        let mem = memory_kib(*l).map_or_else(
            |e| format!("{e:#} |"),
            |(rss, pss)| format!("{:.1} | {:.1}", rss as f64 / 1024.0, pss as f64 / 1024.0),
        );
        rows.push(format!(
            "| {} | {} | {} | {} | {mem} |",
            l.name(),
            s.len(),
            user.as_millis(),
            exit.as_millis()
        ));
    }
    let _ = std::fs::remove_file(&initrd);
    let mut out = std::io::stdout().lock();
    writeln!(out, "| VMM | runs | launch→user space, median ms | launch→exit, median ms | RSS MiB | PSS MiB |")?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    for r in rows {
        writeln!(out, "{r}")?;
    }
    if let [(skiff_user, skiff_exit), (peer_user, peer_exit)] = medians[..] {
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
        writeln!(
            out,
            "\nskiff-vmm / qemu microvm: launch→user space {:.2}, launch→exit {:.2}",
            ratio(skiff_user, peer_user),
            ratio(skiff_exit, peer_exit)
        )?;
    }
    for (l, errors) in launchers.iter().zip(&failures) {
        for e in errors {
            writeln!(out, "{} failed: {e}", l.name())?;
        }
    }
    Ok(())
}
