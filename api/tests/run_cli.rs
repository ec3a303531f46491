//! The real `skiff run` / `skiff exec` binaries on this host, with the VM replaced: `$SKIFF_VMM`
//! points at a script that re-runs this test binary as a fake skiff-vmm. The fake reads the VM spec
//! (`--spec FILE`), connects to `<vsock.uds>_1024` like guest-init does and serves the session with
//! guest-init's real process runner (as an ordinary process); it serves `CONNECT 1025` exec
//! connections on `<vsock-uds>` too. Real guests are covered in tests/tests/run_e2e.rs.

// Only the output helpers of `common` serve here.
#[allow(dead_code)]
mod common;

use common::{check, text};
use skiff_guest_init::exec_sessions::ExecSessions;
use skiff_guest_init::reaper::Reaper;
use skiff_guest_init::session;
use skiff_protocol::CONTROL_PORT;
use skiff_vmm::VmSpec;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FAKE_ARGS: &str = "SKIFF_FAKE_VMM_ARGS";
/// The fake's open exec sessions.
static EXECS: ExecSessions = ExecSessions::new();
const FAKE_MODE: &str = "SKIFF_FAKE_VMM_MODE";

/// The fake skiff-vmm; a no-op unless this binary was started as one.
#[test]
fn fake_vmm() {
    let Ok(args) = std::env::var(FAKE_ARGS) else {
        return;
    };
    let args: Vec<&str> = args.split('\u{1}').collect();
    let (mut file, mut jail_uid, mut lock_fd) = (None, None, None);
    let mut flags = args.iter();
    while let Some(flag) = flags.next() {
        let value = flags.next().copied();
        match *flag {
            "--spec" => file = value,
            "--jail-uid" => jail_uid = value.map(|v| v.parse::<u32>().unwrap()),
            "--jail-keep-fd" => lock_fd = value.map(|v| v.parse::<i32>().unwrap()),
            "--jail-gid" | "--jail-dir" => {}
            _ => panic!("fake skiff-vmm: unexpected arguments {args:?}"),
        }
    }
    let file = file.expect("--spec FILE");
    let spec = VmSpec::from_json(&std::fs::read(file).unwrap()).unwrap();
    // Run as root, skiff jails its VMM (the fake does not jail itself): the VMM inherits its
    // uid's lock and the run directory is that uid's.
    if let Some(uid) = jail_uid {
        let fd = lock_fd.expect("--jail-keep-fd with --jail-uid");
        // SAFETY: F_GETFD only queries the descriptor table.
        assert!(
            unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0,
            "lock fd {fd}"
        );
        let run_dir = spec
            .vsock
            .as_ref()
            .expect("vsock")
            .uds
            .parent()
            .unwrap()
            .to_owned();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(run_dir).unwrap().uid(), uid);
    }
    spec.validate().unwrap();
    assert!(spec.init.is_some());
    let rootfs = spec.rootfs.expect("a root file system");
    assert_eq!(rootfs.layers.len(), 1);
    assert!(rootfs.upper.expect("an upper directory").is_dir());
    let uds = spec.vsock.expect("a vsock device").uds;
    let mode = std::env::var(FAKE_MODE).unwrap_or_default();
    // Like skiff-vmm, which stops its VM on SIGTERM and exits 143, unless told to be wedged:
    // then SIGTERM does nothing (the fake is PID 1 of its namespace when jailed, as skiff-vmm is).
    if mode != "wedged" {
        extern "C" fn on_term(_: libc::c_int) {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(143) };
        }
        // SAFETY: installs an async-signal-safe handler.
        unsafe { libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t) };
    } else {
        // SAFETY: only sets a signal's disposition.
        unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    }
    if mode == "crash" {
        eprintln!("skiff-vmm: guest reset; last console output:\nKernel panic - not syncing: fake");
        std::process::exit(2);
    }
    let exec_listener = UnixListener::bind(&uds).unwrap();
    std::thread::spawn(move || {
        for stream in exec_listener.incoming() {
            let mut stream = stream.unwrap();
            std::thread::spawn(move || {
                let mut line = String::new();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                reader.read_line(&mut line).unwrap();
                assert_eq!(line, "CONNECT 1025\n");
                stream.write_all(b"OK 1073741824\n").unwrap();
                let spec = session::accept_spec(&mut stream).unwrap();
                // As guest-init: an exec open when the main process ends still reports.
                let Some(_open) = EXECS.admit() else { return };
                let _ = session::run(&mut stream, &spec, Reaper::global());
                let _ = stream.shutdown(std::net::Shutdown::Write);
                let _ = std::io::Read::read(&mut stream, &mut [0u8; 1]);
            });
        }
    });
    let control = PathBuf::from(format!("{}_{CONTROL_PORT}", uds.display()));
    let mut stream = UnixStream::connect(&control).unwrap();
    let spec = session::accept_spec(&mut stream).unwrap();
    let code = session::run(&mut stream, &spec, Reaper::global()).unwrap();
    EXECS.close();
    EXECS.wait_all_ended(Duration::from_secs(5));
    // Like guest-init: wait for the host to close, then "power off".
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = std::io::Read::read(&mut stream, &mut [0u8; 1]);
    std::process::exit(if code >= 0 { 0 } else { 1 });
}

/// A scratch directory with a fake VMM script and a skiff root.
struct Sandbox {
    dir: PathBuf,
}

impl Sandbox {
    fn new(name: &str) -> Sandbox {
        let dir = std::env::temp_dir().join(format!("skiff-run-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("rootfs")).unwrap();
        let me = std::env::current_exe().unwrap();
        let script = format!(
            "#!/bin/sh\nIFS=$(printf '\\001')\n{FAKE_ARGS}=\"$*\" exec {} --exact fake_vmm --nocapture --test-threads=1\n",
            me.display()
        );
        let vmm = dir.join("fake-vmm");
        std::fs::write(&vmm, script).unwrap();
        std::fs::set_permissions(&vmm, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("vmlinux"), b"not a kernel").unwrap();
        Sandbox { dir }
    }

    fn skiff(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff"));
        cmd.args(args)
            .env("SKIFF_ROOT", self.dir.join("root"))
            .env("SKIFF_VMM", self.dir.join("fake-vmm"))
            .env("SKIFF_INIT", "/bin/true")
            .env("SKIFF_KERNEL", self.dir.join("vmlinux"))
            .env_remove(FAKE_ARGS)
            .env_remove(FAKE_MODE)
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, command: &[&str]) -> Command {
        let rootfs = self.dir.join("rootfs");
        let mut args = vec!["run", "--rootfs", rootfs.to_str().unwrap(), "--"];
        args.extend(command);
        self.skiff(&args)
    }

    fn run_dirs(&self) -> usize {
        std::fs::read_dir(self.dir.join("root/run")).map_or(0, |d| d.count())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn exit_code_output_env_and_cleanup() {
    let sb = Sandbox::new("basic");
    let out = sb
        .run(&[
            "sh",
            "-c",
            "echo out; echo err >&2; echo \"$FOO|$0\"; exit 7",
        ])
        .args(["-e", "FOO=bar"])
        .output()
        .unwrap();
    // `-e` after the command belongs to the command (here: sh's $0).
    check(&out, 7, "out\n|-e\n");
    assert_eq!(text(&out.stderr), "err\n");
    let out = sb
        .skiff(&[
            "run",
            "--rootfs",
            sb.dir.join("rootfs").to_str().unwrap(),
            "-e",
            "FOO=bar",
            "--hostname",
            "h1",
            "--",
            "sh",
            "-c",
            "echo \"$FOO|$HOSTNAME\"",
        ])
        .output()
        .unwrap();
    check(&out, 0, "bar|h1\n");
    assert_eq!(sb.run_dirs(), 0, "run directories must be removed");
}

#[test]
fn piped_stdin_is_forwarded() {
    let sb = Sandbox::new("stdin");
    let mut child = sb
        .run(&["cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"abc\n").unwrap();
    check(&child.wait_with_output().unwrap(), 0, "abc\n");
}

#[test]
fn signal_and_not_found_codes() {
    let sb = Sandbox::new("codes");
    check(
        &sb.run(&["sh", "-c", "kill -KILL $$"]).output().unwrap(),
        137,
        "",
    );
    let out = sb.run(&["no-such-program-xyz"]).output().unwrap();
    check(&out, 127, "");
    assert_eq!(
        text(&out.stderr),
        "skiff: exec: \"no-such-program-xyz\": executable file not found in $PATH\n"
    );
}

#[test]
fn crashed_vm_is_reported_with_the_vmm_stderr() {
    let sb = Sandbox::new("crash");
    let out = sb.run(&["true"]).env(FAKE_MODE, "crash").output().unwrap();
    check(&out, 125, "");
    let err = text(&out.stderr);
    assert!(
        err.contains("the VM crashed or reset before the container reported an exit status"),
        "{err}"
    );
    assert!(err.contains("Kernel panic - not syncing: fake"), "{err}");
    assert_eq!(sb.run_dirs(), 0);
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_is_forwarded_and_a_stubborn_container_is_stopped() {
    let sb = Sandbox::new("term");
    let flag = sb.dir.join("started");
    let script = format!("touch {}; exec sleep 30", flag.display());
    let mut child = sb.run(&["sh", "-c", &script]).spawn().unwrap();
    wait_for(&flag);
    // SAFETY: kill(2) of our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(143));

    // A container that ignores the signal: its VM is stopped 10 s later; and a VMM that does not
    // stop then either (wedged) is killed 10 s after that.
    for (mode, least) in [("", 9), ("wedged", 19)] {
        let flag = sb.dir.join(format!("stubborn{mode}"));
        // Without a real VM nothing kills it when its "VM" stops: it ends with the sandbox.
        let script = format!(
            "trap '' TERM; touch {}; while [ -d {} ]; do sleep 0.2; done",
            flag.display(),
            sb.dir.display()
        );
        let child = sb
            .run(&["sh", "-c", &script])
            .env(FAKE_MODE, mode)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for(&flag);
        let started = Instant::now();
        // SAFETY: kill(2) of our child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(137),
            "{mode}: {}",
            text(&out.stderr)
        );
        assert!(started.elapsed() >= Duration::from_secs(least), "{mode}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.ends_with(
                "skiff: the container did not exit within 10s of the signal; its VM was stopped\n"
            ),
            "{mode}: {stderr}"
        );
        assert_eq!(
            stderr.contains("skiff-vmm did not stop within 10s; killing it"),
            mode == "wedged",
            "{mode}: {stderr}"
        );
        assert_eq!(sb.run_dirs(), 0, "{mode}");
    }
}

#[test]
fn exec_runs_in_a_running_vm() {
    let sb = Sandbox::new("exec");
    let stop = sb.dir.join("stop");
    let script = format!(
        "while [ ! -e {} ]; do sleep 0.05; done; echo main-done",
        stop.display()
    );
    let main = sb
        .run(&["sh", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let socket = loop {
        let found = std::fs::read_dir(sb.dir.join("root/run"))
            .ok()
            .and_then(|mut d| d.next())
            .map(|e| e.unwrap().path().join("vsock.sock"))
            .filter(|p| p.exists());
        if let Some(p) = found {
            break p;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    };
    let vsock = socket.to_str().unwrap();
    let out = sb
        .skiff(&[
            "exec",
            "--vsock",
            vsock,
            "-e",
            "X=1",
            "--",
            "sh",
            "-c",
            "echo exec-$X; exit 4",
        ])
        .output()
        .unwrap();
    check(&out, 4, "exec-1\n");
    let out = sb
        .skiff(&[
            "exec",
            "--vsock",
            vsock,
            "--",
            "touch",
            stop.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    check(&out, 0, "");
    check(&main.wait_with_output().unwrap(), 0, "main-done\n");
    let out = sb
        .skiff(&["exec", "--vsock", vsock, "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("cannot connect to the VM's vsock socket"),
        "{}",
        text(&out.stderr)
    );
}
