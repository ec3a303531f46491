//! `skiff-vmm`: boots one microVM and exits with how it ended.
//!
//! The VM comes as a JSON [`VmSpec`] (`--spec FILE`, what hosts use) or as flags for use by hand,
//! which become the same spec.
//!
//! Exit codes: 0 the guest powered off (shutdown port), 2 the guest reset or crashed (the console
//! tail goes to stderr), 1 a VMM error, 130/143 stopped by SIGINT/SIGTERM, 159 a thread made a
//! system call outside its seccomp filter (stderr names the call and the thread).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::builder::BoolishValueParser;
use clap::Parser;
use skiff_vmm::builder::{attach_devices, served_dirs, Devices};
use skiff_vmm::container::ContainerSession;
use skiff_vmm::devices::serial::SerialOutput;
use skiff_vmm::jail::{Bind, Jail, JailError};
use skiff_vmm::seccomp::{self, ThreadKind};
use skiff_vmm::spec::{RootfsSpec, VsockSpec, DEFAULT_CPUS, DEFAULT_GUEST_CID, DEFAULT_MEMORY_MIB};
use skiff_vmm::{ExitNotifier, Vm, VmExit, VmSpec};

/// How long a container session gets to write its exit file once the VM has stopped (the report
/// came before the power-off; this is only its last write).
const SESSION_FINISH: std::time::Duration = std::time::Duration::from_secs(2);

/// Boot one KVM microVM running a skiff container.
#[derive(Parser, Debug)]
#[command(name = "skiff-vmm", version)]
struct Args {
    /// The whole VM as a JSON VmSpec (the form hosts use): a file, or - for stdin. Takes the
    /// place of every other flag.
    #[arg(long, value_name = "FILE|-", conflicts_with = "Flags")]
    spec: Option<PathBuf>,
    /// Run without the per-thread seccomp filters (for debugging, and to measure what they
    /// cost).
    #[arg(long, env = "SKIFF_VMM_NO_SECCOMP", value_parser = BoolishValueParser::new())]
    no_seccomp: bool,
    /// Test hook: once the guest runs, the main thread makes a system call no filter allows, so
    /// the filter must end the VMM with its report (exit 159).
    #[arg(
        long,
        hide = true,
        env = "SKIFF_VMM_SECCOMP_SELF_TEST",
        value_parser = BoolishValueParser::new()
    )]
    seccomp_self_test: bool,
    #[command(flatten)]
    jail: JailArgs,
    #[command(flatten)]
    flags: Flags,
}

/// Jail the VMM (needs root): once the VM is set up, it runs as `--jail-uid`/`--jail-gid` with
/// no capabilities, in new mount, IPC, UTS and network namespaces, with `--jail-dir` as its `/`
/// holding only what the VM still uses; every descriptor but stdio, the spec's taps and
/// `--jail-keep-fd` is closed. It must start as PID 1 of a PID namespace of its own (skiff starts
/// it so; by hand: `unshare --pid --fork --kill-child skiff-vmm ...`). Its virtio-fs workers keep
/// the few capabilities that writing the guest's files takes: in a user namespace mapping the
/// guest's ids 0-65535 onto the host's UID..UID+65535 and GID..GID+65535 (so give it 65536 ids of
/// its own), with every served directory idmapped so that files on disk keep the guest's owners;
/// where a served directory's file system cannot be idmapped (tmpfs before Linux 6.3), as the
/// host's root instead, with a warning.
#[derive(clap::Args, Debug)]
struct JailArgs {
    /// The jail's uid (not 0), the first of 65536.
    #[arg(long, value_name = "UID", requires_all = ["jail_gid", "jail_dir"])]
    jail_uid: Option<u32>,
    /// The jail's gid (not 0), the first of 65536.
    #[arg(long, value_name = "GID", requires = "jail_uid")]
    jail_gid: Option<u32>,
    /// An empty directory (made if missing) to become the VMM's `/`; nothing of it shows
    /// outside the VMM.
    #[arg(long, value_name = "DIR", requires = "jail_uid")]
    jail_dir: Option<PathBuf>,
    /// An inherited descriptor the jailed VMM keeps open (repeatable), e.g. a lock on its uid.
    #[arg(long = "jail-keep-fd", value_name = "FD", requires = "jail_uid")]
    jail_keep_fds: Vec<i32>,
}

impl JailArgs {
    fn jail(&self) -> Option<Jail> {
        Some(Jail {
            uid: self.jail_uid?,
            gid: self.jail_gid?,
            dir: self.jail_dir.clone()?,
            keep_fds: self.jail_keep_fds.clone(),
        })
    }
}

/// The VM described flag by flag, for use by hand; turned into the same [`VmSpec`].
#[derive(clap::Args, Debug)]
struct Flags {
    /// Guest kernel: vmlinux (ELF with a PVH entry) or bzImage.
    #[arg(long, value_name = "PATH", required_unless_present = "spec")]
    kernel: Option<PathBuf>,
    /// Number of vCPUs.
    #[arg(long, default_value_t = DEFAULT_CPUS, value_name = "N")]
    cpus: u8,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = DEFAULT_MEMORY_MIB, value_name = "MIB")]
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
    /// ext4 image mounted on the upper directory (through a loop device) to hold it: its size
    /// caps what the guest writes.
    #[arg(long, value_name = "FILE", requires = "rootfs_upper")]
    rootfs_upper_disk: Option<PathBuf>,
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

impl Args {
    /// The VM asked for, from `--spec` or from the flags.
    fn into_spec(self) -> anyhow::Result<VmSpec> {
        let Some(source) = self.spec else {
            return self.flags.into_spec();
        };
        let json = if source.as_os_str() == "-" {
            let mut json = Vec::new();
            std::io::stdin()
                .read_to_end(&mut json)
                .context("cannot read the spec from stdin")?;
            json
        } else {
            std::fs::read(&source)
                .with_context(|| format!("cannot read --spec {}", source.display()))?
        };
        Ok(VmSpec::from_json(&json)?)
    }
}

impl Flags {
    /// The spec these flags describe; relative paths are taken from the current directory.
    fn into_spec(self) -> anyhow::Result<VmSpec> {
        let absolute = |path: PathBuf| {
            std::path::absolute(&path).with_context(|| format!("resolving {}", path.display()))
        };
        let kernel = self.kernel.context("--kernel or --spec is required")?;
        let rootfs = if self.rootfs_layers.is_empty() && self.rootfs_upper.is_none() {
            None
        } else {
            Some(RootfsSpec {
                layers: self
                    .rootfs_layers
                    .into_iter()
                    .map(absolute)
                    .collect::<anyhow::Result<_>>()?,
                upper: self.rootfs_upper.map(absolute).transpose()?,
                upper_disk: self.rootfs_upper_disk.map(absolute).transpose()?,
            })
        };
        let vsock = match self.vsock_uds {
            Some(uds) => Some(VsockSpec {
                guest_cid: DEFAULT_GUEST_CID,
                uds: absolute(uds)?,
            }),
            None => None,
        };
        Ok(VmSpec {
            cpus: self.cpus,
            memory_mib: self.memory,
            init: self.init.map(absolute).transpose()?,
            cmdline_extra: self.cmdline_extra,
            serial: match self.serial.as_deref() {
                None => SerialOutput::Discard,
                Some("-") => SerialOutput::Stdout,
                Some(path) => SerialOutput::File(absolute(path.into())?),
            },
            rootfs,
            vsock,
            ..VmSpec::new(absolute(kernel)?)
        })
    }
}

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
    // Still one thread: the kernel gives a user namespace only to a single-threaded process.
    if args.jail.jail_uid.is_none() {
        match skiff_vmm::userns::enter_unless_root() {
            Ok(true) => {
                tracing::debug!("running unprivileged, as root of a user namespace of our own")
            }
            Ok(false) => {}
            Err(e) => {
                eprintln!("skiff-vmm: {}", error_chain(&e.into()));
                return ExitCode::FAILURE;
            }
        }
    }
    if args.no_seccomp {
        tracing::warn!("running without seccomp filters (--no-seccomp)");
    } else if let Err(e) = seccomp::enable(args.seccomp_self_test) {
        eprintln!("skiff-vmm: {}", error_chain(&e.into()));
        return ExitCode::FAILURE;
    }
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
    let jail = args.jail.jail();
    let spec = args.into_spec()?;
    // Before any thread: namespaces and credentials are per thread, and a user namespace
    // takes a single-threaded process (the jail's steps, see `jail`).
    let mut userns = None;
    if let Some(jail) = &jail {
        let taps = jailed_taps(&spec)?;
        jail.unshare(&taps)?;
        userns = jail.user_namespace(&served_dirs(&spec));
    }
    let mut vm = Vm::new(&spec)?;
    // Keeps the merged root mounted while the VM runs.
    let mut devices = attach_devices(&mut vm, &spec, userns.as_ref())?;
    if let Some(jail) = &jail {
        let (binds, own) = jail_contents(&spec, &devices);
        jail.pivot(&binds, &own)?;
        jail.confine(userns.as_ref())?;
    }
    spawn_signal_waiter(stop_signals, vm.exit_notifier())?;
    let session = devices.session.take().map(|s| s.start()).transpose()?;
    let tail = vm.console_tail();
    let exit = vm.run()?;
    if let Some(session) = session {
        session.finish(SESSION_FINISH);
    }
    let tail = tail.lock().unwrap_or_else(|p| p.into_inner()).contents();
    Ok((exit, tail))
}

/// The tap descriptors a jailed VMM keeps; a tap by name cannot be opened from its network
/// namespace.
fn jailed_taps(spec: &VmSpec) -> Result<Vec<i32>, JailError> {
    let mut taps = Vec::new();
    for (index, net) in spec.net.iter().enumerate() {
        match net.fd {
            Some(fd) => taps.push(fd),
            None if net.tap.is_some() => return Err(JailError::NamedTap(index)),
            None => {}
        }
    }
    Ok(taps)
}

/// What the running VM still opens by path, bound into the jail: the kernel (loaded at boot),
/// the served directories (the guest's FUSE INIT opens them), the vsock socket's directory (a
/// guest's connection goes to `<uds>_<port>`) and the container session's directories (log
/// rotation, the exit file); and the sockets the session bound as root, which the jail's uid
/// must be able to connect to.
fn jail_contents(spec: &VmSpec, devices: &Devices) -> (Vec<Bind>, Vec<PathBuf>) {
    let mut binds = vec![Bind {
        path: spec.kernel.clone(),
        read_only: true,
    }];
    let rw = |path: &std::path::Path| Bind {
        path: path.to_path_buf(),
        read_only: false,
    };
    if let Some(rootfs) = &devices.rootfs {
        binds.push(rw(rootfs.dir()));
    }
    binds.extend(spec.shares.iter().map(|s| Bind {
        path: s.source.clone(),
        read_only: s.read_only,
    }));
    let mut own = Vec::new();
    if let Some(vsock) = &spec.vsock {
        binds.extend(vsock.uds.parent().map(rw));
        if let Some(container) = &spec.container {
            for file in [&container.log, &container.exit_file] {
                binds.extend(file.parent().map(rw));
            }
            own.push(ContainerSession::control_socket(&vsock.uds));
            own.push(container.attach.clone());
        }
    }
    // A directory before what lies in it, else its bind would hide theirs.
    binds.sort_by(|a, b| a.path.cmp(&b.path));
    binds.dedup_by(|a, b| a.path == b.path);
    (binds, own)
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
    let builder = std::thread::Builder::new()
        .name("signals".into())
        .stack_size(64 * 1024);
    seccomp::spawn(builder, ThreadKind::Signals, move || loop {
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

    fn spec_of(args: &[&str]) -> anyhow::Result<VmSpec> {
        Args::try_parse_from(std::iter::once("skiff-vmm").chain(args.iter().copied()))?.into_spec()
    }

    #[test]
    fn flags_make_the_same_spec_as_json() {
        let flags = spec_of(&[
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
            "--rootfs-upper-disk",
            "/u.img",
            "--vsock-uds",
            "/v.sock",
            "--serial",
            "-",
            "--cmdline-extra",
            "-- a=b c",
        ])
        .unwrap();
        let json = r#"{"kernel": "/k", "cpus": 2, "memory_mib": 256, "init": "/i",
            "cmdline_extra": "-- a=b c", "serial": "stdout",
            "rootfs": {"layers": ["/l1", "/l0"], "upper": "/u", "upper_disk": "/u.img"},
            "vsock": {"guest_cid": 3, "uds": "/v.sock"}}"#;
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), json).unwrap();
        let from_file = spec_of(&["--spec", file.path().to_str().unwrap()]).unwrap();
        assert_eq!(flags, from_file);
        assert!(flags.validate().is_ok());
    }

    #[test]
    fn flag_defaults_and_relative_paths() {
        let d = spec_of(&["--kernel", "/k"]).unwrap();
        assert_eq!(d, VmSpec::new("/k"));
        let cwd = std::env::current_dir().unwrap();
        let r = spec_of(&[
            "--kernel",
            "vmlinux",
            "--serial",
            "c.log",
            "--rootfs-layer",
            "l",
        ])
        .unwrap();
        assert_eq!(r.kernel, cwd.join("vmlinux"));
        assert_eq!(r.serial, SerialOutput::File(cwd.join("c.log")));
        let root = r.rootfs.unwrap();
        assert_eq!((root.layers, root.upper), (vec![cwd.join("l")], None));
        // An upper without layers becomes a spec the validation refuses, naming the field.
        let err = spec_of(&["--kernel", "/k", "--rootfs-upper", "/u"])
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.to_string().starts_with("rootfs.layers"), "{err}");
    }

    #[test]
    fn usage_errors() {
        let parse = |args: &[&str]| {
            Args::try_parse_from(std::iter::once("skiff-vmm").chain(args.iter().copied()))
        };
        assert!(parse(&[]).is_err(), "--kernel or --spec is required");
        assert!(parse(&["--kernel", "/k", "--cpus", "x"]).is_err());
        assert!(parse(&["--kernel", "/k", "--cpus", "300"]).is_err());
        assert!(parse(&["--spec", "-", "--kernel", "/k"]).is_err());
        assert!(parse(&["--spec", "-", "--cpus", "2"]).is_err());
        assert!(parse(&["--spec", "-"]).is_ok());
        // The seccomp switches go with a spec too (hosts pass them with --spec).
        let switched = parse(&["--spec", "-", "--no-seccomp", "--seccomp-self-test"]).unwrap();
        assert!(switched.no_seccomp && switched.seccomp_self_test);
        assert!(parse(&["--kernel", "/k", "--rootfs-upper-disk", "/u.img"]).is_err());
        let err = spec_of(&["--spec", "/nonexistent/vm.json"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot read --spec /nonexistent/vm.json"),
            "{err}"
        );
    }
}
