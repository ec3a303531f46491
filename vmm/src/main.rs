//! `skiff-vmm`: boots one microVM and exits with how it ended.
//!
//! Exit codes: 0 the guest powered off (shutdown port), 2 the guest reset or crashed (the console
//! tail goes to stderr), 1 a VMM error, 130/143 stopped by SIGINT/SIGTERM.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;
use skiff_vmm::boot::initramfs::Initramfs;
use skiff_vmm::devices::serial::SerialOutput;
use skiff_vmm::rootfs::Rootfs;
use skiff_vmm::virtio::fs::FsDevice;
use skiff_vmm::virtio::rng::RngDevice;
use skiff_vmm::virtio::vsock::VsockDevice;
use skiff_vmm::{ExitNotifier, Vm, VmConfig, VmExit};

/// Boot one KVM microVM running a skiff container.
#[derive(Parser, Debug)]
#[command(name = "skiff-vmm", version)]
struct Args {
    /// Guest kernel: vmlinux (ELF with a PVH entry) or bzImage.
    #[arg(long, value_name = "PATH")]
    kernel: PathBuf,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1, value_name = "N")]
    cpus: u8,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 128, value_name = "MIB")]
    memory: u64,
    /// Static guest-init binary, packed as /init into an in-memory initramfs.
    #[arg(long, value_name = "PATH")]
    init: Option<PathBuf>,
    /// Read-only lower layer of the root filesystem, top-most first (repeatable).
    #[arg(long = "rootfs-layer", value_name = "DIR")]
    rootfs_layers: Vec<PathBuf>,
    /// Copy-on-write upper directory (keeps upper/ and work/ inside).
    #[arg(long, value_name = "DIR")]
    rootfs_upper: Option<PathBuf>,
    /// vsock device (guest CID 3) with its host side on this Unix socket.
    #[arg(long, value_name = "PATH")]
    vsock_uds: Option<PathBuf>,
    /// Console output: a file, or - for stdout. Default: discarded (the tail is kept).
    #[arg(long, value_name = "PATH|-")]
    serial: Option<String>,
    /// Appended to the kernel command line (may start with `-`, e.g. `-- ARGS` for init).
    #[arg(
        long,
        default_value = "",
        value_name = "STR",
        allow_hyphen_values = true
    )]
    cmdline_extra: String,
}

/// The virtio-fs tag guest-init mounts as the container root.
const ROOTFS_TAG: &str = "rootfs";
/// The guest's vsock address (the host is CID 2).
const GUEST_CID: u64 = 3;

/// The exit code for a VM stopped by `signal` (the shell convention).
fn signal_exit_code(signal: i32) -> u8 {
    (128 + signal).clamp(0, 255) as u8
}

fn main() -> ExitCode {
    // Before any thread exists, so every thread inherits the mask and only sigwait sees them.
    let stop_signals = block_stop_signals();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // Usage errors exit 1, not clap's 2: exit code 2 means "the guest reset or crashed".
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(args, stop_signals) {
        Ok((VmExit::PowerOff { status }, _)) => {
            tracing::debug!("guest powered off with status {status}");
            ExitCode::SUCCESS
        }
        Ok((VmExit::Reset { reason }, tail)) => {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "skiff-vmm: {reason}; last console output:");
            let _ = err.write_all(&tail);
            let _ = writeln!(err);
            ExitCode::from(2)
        }
        Ok((VmExit::Signal(sig), _)) => ExitCode::from(signal_exit_code(sig)),
        Err(e) => {
            eprintln!("skiff-vmm: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args, stop_signals: libc::sigset_t) -> anyhow::Result<(VmExit, Vec<u8>)> {
    let mut config = VmConfig::new(&args.kernel);
    config.cpus = args.cpus;
    config.memory_mib = args.memory;
    config.cmdline_extra = args.cmdline_extra;
    config.serial = match args.serial.as_deref() {
        None => SerialOutput::Discard,
        Some("-") => SerialOutput::Stdout,
        Some(path) => SerialOutput::File(path.into()),
    };
    if let Some(init) = &args.init {
        let cpio = Initramfs::from_init_file(init)
            .with_context(|| format!("cannot read --init {}", init.display()))?;
        config.initramfs = Some(cpio.finish());
    }
    if args.rootfs_upper.is_some() && args.rootfs_layers.is_empty() {
        bail!("--rootfs-upper needs at least one --rootfs-layer");
    }

    let mut vm = Vm::new(config)?;
    spawn_signal_waiter(stop_signals, vm.exit_notifier())?;
    // Keeps the merged root mounted for as long as the VM runs.
    let _rootfs = if args.rootfs_layers.is_empty() {
        None
    } else {
        let rootfs = Rootfs::prepare(&args.rootfs_layers, args.rootfs_upper.as_deref())?;
        vm.add_virtio_device(Box::new(FsDevice::new(ROOTFS_TAG, rootfs.dir())?))?;
        Some(rootfs)
    };
    if let Some(uds) = &args.vsock_uds {
        vm.add_virtio_device(Box::new(VsockDevice::new(GUEST_CID, uds)?))?;
    }
    vm.add_virtio_device(Box::new(RngDevice::new()))?;
    let tail = vm.console_tail();
    let exit = vm.run()?;
    let tail = tail.lock().unwrap_or_else(|p| p.into_inner()).contents();
    Ok((exit, tail))
}

/// The error and its causes, leaving out a cause its parent's message already quotes.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-set manipulation on a local, initialised set.
    unsafe {
        // A shell starts background jobs with SIGINT ignored; an ignored signal is discarded
        // even while blocked, and SIGINT must stop the VM however skiff-vmm was started.
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Turns SIGINT/SIGTERM into an orderly stop of the VM.
fn spawn_signal_waiter(set: libc::sigset_t, notifier: ExitNotifier) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .stack_size(64 * 1024)
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` holds blocked signals and `sig` is a valid out pointer.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                notifier.stop(VmExit::Signal(sig));
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chains_do_not_repeat_themselves() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(skiff_vmm::boot::BootError::ReadKernel {
            path: "/k".into(),
            source: io,
        })
        .context("while starting");
        assert_eq!(
            error_chain(&e),
            "while starting: cannot read kernel /k: no such file"
        );
    }

    #[test]
    fn signal_codes_follow_the_shell() {
        assert_eq!(signal_exit_code(libc::SIGINT), 130);
        assert_eq!(signal_exit_code(libc::SIGTERM), 143);
    }

    #[test]
    fn command_line_matches_the_documented_interface() {
        let a = Args::try_parse_from([
            "skiff-vmm",
            "--kernel",
            "/k",
            "--cpus",
            "2",
            "--memory",
            "256",
            "--init",
            "/i",
            "--rootfs-layer",
            "/l1",
            "--rootfs-layer",
            "/l0",
            "--rootfs-upper",
            "/u",
            "--vsock-uds",
            "/v.sock",
            "--serial",
            "-",
            "--cmdline-extra",
            "-- a=b c",
        ])
        .unwrap();
        assert_eq!((a.cpus, a.memory), (2, 256));
        assert_eq!(
            a.rootfs_layers,
            vec![PathBuf::from("/l1"), PathBuf::from("/l0")]
        );
        assert_eq!(a.serial.as_deref(), Some("-"));
        assert_eq!(a.cmdline_extra, "-- a=b c");
        let d = Args::try_parse_from(["skiff-vmm", "--kernel", "/k"]).unwrap();
        assert_eq!((d.cpus, d.memory, d.serial), (1, 128, None));
        assert!(
            Args::try_parse_from(["skiff-vmm"]).is_err(),
            "--kernel is required"
        );
        assert!(Args::try_parse_from(["skiff-vmm", "--kernel", "/k", "--cpus", "x"]).is_err());
    }
}
