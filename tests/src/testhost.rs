//! Runs commands inside the nested KVM test host (`tests/testhost/run`).
//!
//! The test host is a QEMU TCG machine with emulated AMD SVM: inside it `/dev/kvm` is real KVM
//! (kvm-amd), so skiff can boot guests there. Every run boots a fresh machine (3.5–6 s once
//! cached) and runs one command as root. Inside:
//!
//! - `/skiff/bin` (on `PATH`): every workspace release binary (`skiff`, `skiffd`, `skiff-vmm`,
//!   `skiff-init`, the `kvm-sanity` payload, ...). The script runs
//!   `cargo build --release --workspace` first when any source changed.
//! - `/skiff/vmlinux`, `/skiff/bzImage`: the guest kernel (`SKIFF_KERNEL=/skiff/vmlinux`).
//! - `/testdata/busybox`: a busybox root filesystem (root and user 1000).
//! - `/testdata/NAME`: directories handed in with [`TestHost::data`].
//! - `/tmp`, `/run`: tmpfs; modules `overlay`, `fuse`, `vhost_vsock` loaded.
//!
//! ```no_run
//! use skiff_tests::testhost::{self, TestHost};
//! use std::time::Duration;
//!
//! // One-liner: the command's stdout, stderr and exit code.
//! let out = testhost::sh("skiff run --rootfs /testdata/busybox -- sh -c 'echo hi'");
//! out.assert_success();
//! assert_eq!(out.stdout, "hi\n");
//!
//! // With options: a timeout, a host directory at /testdata/images, an environment variable.
//! let out = TestHost::new()
//!     .timeout(Duration::from_secs(120))
//!     .data("/tmp/my-images", "images")
//!     .env("RUST_LOG", "debug")
//!     .run(&["ls", "/testdata/images"]);
//! assert_eq!(out.code, 0, "{out}");
//! ```
//!
//! Runs from parallel tests are safe; their machines run one after another (see the script), so
//! keep timeouts tight: a hung run holds the machine, and every other test's run, for its whole
//! timeout.
//! The command's stdout and stderr come back separately (two serial ports) but their relative
//! order is lost; inside the test host both are pipes, not terminals, and stdin is empty.
//! Exit code 124 means the timeout hit, 125 that the test host itself failed (the script's
//! diagnostics are in `stderr`).
//!
//! The emulator under the test host has two known faults (see the header of `tests/testhost/run`
//! and `tests/testhost/stress`, which measures them): it froze when KVM patched kernel text (the
//! test host now holds one idle VM open, so that never happens during a run), and now and then
//! it runs a guest on the test host's own state. The test host recognises the latter by positive
//! signs and reports `EMULATOR-FAULT: …`; [`TestHost::run`] retries such a run, announced on
//! stderr ([`TestHost::run_beside`] together with its host-side clients): up to
//! [`MAX_RETRIES`] times for faults no program can cause, and a guest's triple fault only while
//! it lands on new instructions (see `worth_another_try`). Nothing else is retried: a hang or
//! crash without a sign fails the test.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Exit code of a run that hit its timeout (the machine was killed).
pub const TIMED_OUT: i32 = 124;
/// Exit code of a run in which the test host itself failed before the command's status came back.
pub const HOST_FAILED: i32 = 125;
/// How the test host's console line reporting an emulator fault starts.
const EMULATOR_FAULT: &str = "EMULATOR-FAULT:";
/// The script's announcement of a second boot after a machine froze before the command started.
const BOOTED_AGAIN: &str = "testhost: booting the test host once more";

/// What a command printed inside the test host, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestHostOutput {
    /// The command's standard output, byte for byte (lossily decoded as UTF-8).
    pub stdout: String,
    /// The command's standard error, followed by the test host's own messages (lines starting
    /// with `testhost: ` or `testhost| ` for the kernel console).
    pub stderr: String,
    /// The command's exit code (128+N when killed by signal N), or [`TIMED_OUT`], [`HOST_FAILED`].
    pub code: i32,
}

impl TestHostOutput {
    /// The `NAME=VALUE` lines of stdout (the last of a name wins): what end-to-end scripts
    /// report for their test to check.
    pub fn results(&self) -> HashMap<String, String> {
        self.stdout
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Asserts that each `(NAME, VALUE)` was reported, showing the whole run when one differs.
    #[track_caller]
    pub fn expect_results(&self, expected: &[(&str, &str)]) {
        let results = self.results();
        for (key, value) in expected {
            let got = results.get(*key).map(String::as_str);
            // The mismatch comes first: CI logs keep a failure's first lines.
            assert!(
                got == Some(*value),
                "{key}: expected {value:?}, got {got:?}\n{self}"
            );
        }
    }

    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// Whether the run was cut off by its timeout.
    pub fn timed_out(&self) -> bool {
        self.code == TIMED_OUT
    }

    /// The test host's report of an emulator fault (an `EMULATOR-FAULT:` line from its init on
    /// the console, or from the script; see "Emulator faults" in `tests/testhost/run`), if any.
    ///
    /// The signs are narrow: a guest vCPU exited at the test host's return address from VMRUN
    /// (an address in the test host's kernel that no guest reaches, whatever its VMM does: QEMU's
    /// nested SVM ran the guest on the test host's state, and it hangs in nested page faults), a
    /// guest triple fault (seen only with guests booting in parallel, at instructions that
    /// cannot fault; a skiff bug that causes one shows again on the retry), the test host's own
    /// CPU resetting without a kernel message before the command's status came back, its kernel
    /// finding its own stack corrupted (it was seen running on a guest's GS base), or the test
    /// host freezing before the command even started. Measured with `tests/testhost/stress`:
    /// about 1 boot in 100 in parallel rounds, none sequentially. Hangs and crashes without a
    /// sign are failures like any other.
    ///
    /// A machine that froze before the command started is booted once more by the script
    /// itself; only what follows that second boot counts.
    pub fn emulator_fault(&self) -> Option<&str> {
        let last_boot = self
            .stderr
            .rfind(BOOTED_AGAIN)
            .map_or(&self.stderr[..], |at| &self.stderr[at..]);
        last_boot
            .lines()
            .filter_map(|l| {
                l.strip_prefix("testhost| ")
                    .or_else(|| l.strip_prefix("testhost: "))
            })
            .find(|l| l.starts_with(EMULATOR_FAULT))
    }

    /// Panics with the whole output unless the command exited with status 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(self.success(), "command failed in the test host\n{self}");
        self
    }

    /// The stdout lines that start with `prefix`, with the prefix removed.
    pub fn lines_with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.stdout
            .lines()
            .filter_map(move |l| l.strip_prefix(prefix))
    }
}

impl fmt::Display for TestHostOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "exit code: {}", self.code)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr ---\n{}", self.stderr.trim_end())
    }
}

/// A test host run's options; [`TestHost::run`] boots the machine.
#[derive(Debug, Clone, Default)]
pub struct TestHost {
    timeout: Option<Duration>,
    mem_mib: Option<u32>,
    data: Vec<(PathBuf, String)>,
    env: Vec<(String, String)>,
    forwards: Vec<(u16, u16)>,
    no_build: bool,
    no_kvm_hold: bool,
}

impl TestHost {
    pub fn new() -> Self {
        Self::default()
    }

    /// Kill the machine after this long (whole seconds, at least 1; the script's default is
    /// 600 s). The run then ends with code [`TIMED_OUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The test host's memory in MiB (default 3072). The initramfs, binaries included, lives in it.
    pub fn mem_mib(mut self, mib: u32) -> Self {
        self.mem_mib = Some(mib);
        self
    }

    /// Copies the host directory `dir` into the test host as `/testdata/NAME`.
    /// `name` is made of `[A-Za-z0-9._-]` and is not `busybox`.
    pub fn data(mut self, dir: impl AsRef<Path>, name: &str) -> Self {
        self.data
            .push((dir.as_ref().to_path_buf(), name.to_string()));
        self
    }

    /// Exports `name=value` to the command.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Forwards TCP `host_port` on the host's 127.0.0.1 to `guest_port` in the test host, so a
    /// client on the host can reach a server inside (poll: the server starts after the machine).
    pub fn forward(mut self, host_port: u16, guest_port: u16) -> Self {
        self.forwards.push((host_port, guest_port));
        self
    }

    /// Runs without the idle KVM VM the test host holds open (experiments only: without it the
    /// test host can freeze; see `tests/src/bin/testhost-kvm-hold.rs`).
    pub fn no_kvm_hold(mut self) -> Self {
        self.no_kvm_hold = true;
        self
    }

    /// Skips the `cargo build --release --workspace` step: the release binaries are packed as
    /// they are.
    pub fn no_build(mut self) -> Self {
        self.no_build = true;
        self
    }

    /// Boots the test host, runs `cmd` (program and arguments) as root and returns its output.
    /// Panics only if the script cannot be started at all.
    pub fn run<S: AsRef<OsStr>>(&self, cmd: &[S]) -> TestHostOutput {
        self.run_beside(cmd, |_| ()).0
    }

    /// Like [`TestHost::run`], while `beside` runs on this host at the same time (the clients of
    /// a [`TestHost::forward`]ed port) and returns what it saw. An emulator fault voids both
    /// sides, so the retry runs both again: retrying the machine alone would leave its script
    /// waiting for clients that have already finished.
    pub fn run_beside<S, T, F>(&self, cmd: &[S], beside: F) -> (TestHostOutput, T)
    where
        S: AsRef<OsStr>,
        F: Fn(&Machine) -> T,
    {
        let mut command = self.command(cmd);
        let shown = cmd.iter().map(|s| s.as_ref()).collect::<Vec<_>>();
        // The retry warning names the test (libtest names its thread after it), not the script,
        // which can be pages long.
        let label = thread::current().name().map_or_else(
            || format!("{shown:?}").chars().take(80).collect(),
            str::to_string,
        );
        let mut attempt = || {
            let machine = Machine::default();
            thread::scope(|scope| {
                let run = scope.spawn(|| {
                    let output = run_script(&mut command);
                    machine.ended.store(true, Ordering::SeqCst);
                    output
                });
                let seen = beside(&machine);
                match run.join() {
                    Ok(output) => (output, seen),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            })
        };
        let (mut output, mut seen) = attempt();
        // Captured by the test harness: shown when the test fails.
        println!("[testhost] {shown:?}\n{output}");
        let mut faults: Vec<String> = Vec::new();
        while let Some(fault) = output.emulator_fault() {
            // See `emulator_fault`: the emulator's, not skiff's; whatever the run showed is void.
            if !worth_another_try(&faults, fault) {
                break;
            }
            announce(&format!(
                "{label}: the test host hit an emulator fault (exit {}: {fault}); trying once more",
                output.code
            ));
            faults.push(fault.to_string());
            (output, seen) = attempt();
            println!("[testhost] retry {} {shown:?}\n{output}", faults.len());
        }
        (output, seen)
    }

    /// Runs `script` with the test host's `sh -c`.
    pub fn sh(&self, script: &str) -> TestHostOutput {
        self.run(&["sh", "-c", script])
    }

    /// Runs `script` with the test host's `sh -c` beside `beside` (see [`TestHost::run_beside`]).
    pub fn sh_beside<T>(
        &self,
        script: &str,
        beside: impl Fn(&Machine) -> T,
    ) -> (TestHostOutput, T) {
        self.run_beside(&["sh", "-c", script], beside)
    }

    /// The script's command line for `cmd`.
    fn command<S: AsRef<OsStr>>(&self, cmd: &[S]) -> Command {
        let mut command = Command::new(script());
        if let Some(t) = self.timeout {
            command.arg("--timeout").arg(t.as_secs().max(1).to_string());
        }
        if let Some(m) = self.mem_mib {
            command.arg("--mem").arg(m.to_string());
        }
        for (dir, name) in &self.data {
            let mut spec = dir.clone().into_os_string();
            spec.push(":");
            spec.push(name);
            command.arg("--data").arg(spec);
        }
        for (name, value) in &self.env {
            command.arg("--env").arg(format!("{name}={value}"));
        }
        for (host, guest) in &self.forwards {
            command.arg("--forward").arg(format!("{host}:{guest}"));
        }
        if self.no_build {
            command.arg("--no-build");
        }
        if self.no_kvm_hold {
            command.arg("--no-kvm-hold");
        }
        command.arg("--").args(cmd);
        command
    }
}

/// How many times one run is tried again after emulator faults, whatever they were.
pub const MAX_RETRIES: usize = 4;
/// How many of those retries may follow guest triple faults.
const MAX_GUEST_FAULT_RETRIES: usize = 2;

/// Whether a run that ended in `fault` is tried again, after `earlier` (the faults that ended
/// this run's earlier attempts). The emulator's faults come in bursts (a CI simulation on
/// 2026-11-27 had faults in 6 of 7 boots; the hour before, 5 had none), so one retry is not
/// enough; but a retry must never hide a skiff bug:
/// - a fault that only the emulator can cause ([`the_emulators_alone`]) is retried up to
///   [`MAX_RETRIES`] times;
/// - a guest triple fault could be skiff's (a VMM that sets up a guest wrongly), but such a bug
///   faults at the same instruction each time, while the emulator's land anywhere (seen:
///   `xa_destroy`, `lapic_next_deadline`, `inet_add_protocol`): it is retried only while its
///   instructions are new to this run, and at most [`MAX_GUEST_FAULT_RETRIES`] times.
fn worth_another_try(earlier: &[String], fault: &str) -> bool {
    if earlier.len() >= MAX_RETRIES {
        return false;
    }
    if the_emulators_alone(fault) {
        return true;
    }
    let guest_faults = earlier.iter().filter(|f| !the_emulators_alone(f)).count();
    let rips = triple_fault_rips(fault);
    guest_faults < MAX_GUEST_FAULT_RETRIES
        && !rips.is_empty()
        && earlier
            .iter()
            .all(|f| triple_fault_rips(f).iter().all(|rip| !rips.contains(rip)))
}

/// Whether `fault` (an [`TestHostOutput::emulator_fault`] line) is one that no program in the
/// test host can cause, whatever it does: the test host's own CPU reset, its kernel's stack
/// corrupted, a freeze (silent and idle, before or while the command ran), or a guest that
/// exited at the test host's own VMRUN return address (QEMU ran the guest on the test host's
/// state: no guest can get there).
fn the_emulators_alone(fault: &str) -> bool {
    fault.starts_with("EMULATOR-FAULT: the test host") || fault.contains("own VMRUN return address")
}

/// The instructions of a guest triple fault line (`... guest triple faults (at 0xA 0xB)`).
fn triple_fault_rips(fault: &str) -> Vec<&str> {
    fault
        .split_once("guest triple faults (at")
        .map(|(_, rest)| {
            rest.split(|c: char| c.is_whitespace() || c == ')')
                .filter(|word| word.starts_with("0x"))
                .collect()
        })
        .unwrap_or_default()
}

/// What [`TestHost::run_beside`]'s host-side clients know of the machine they talk to.
#[derive(Debug)]
pub struct Machine {
    ended: AtomicBool,
    /// How long a client may go on after the machine ended: a story's last client request ends
    /// the machine's script, and the client then finishes at once.
    grace: Duration,
}

impl Default for Machine {
    fn default() -> Self {
        Self {
            ended: AtomicBool::new(false),
            grace: Duration::from_secs(60),
        }
    }
}

impl Machine {
    /// Whether the machine has ended (its script returned).
    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// Runs `command` to its end, with its stdout and stderr captured, or kills it once the
    /// machine has been gone for a minute: a client waiting for a server that died
    /// (an emulator fault, a crash) must not hold the test for its own long deadline.
    pub fn output(&self, command: &mut Command) -> std::process::Output {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let stdout = child.stdout.take().map(read_all_in_background);
        let stderr = child.stderr.take().map(read_all_in_background);
        let mut ended_at = None;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(e) => panic!("waiting for {command:?}: {e}"),
            }
            if self.ended() {
                let since = *ended_at.get_or_insert_with(Instant::now);
                if since.elapsed() > self.grace {
                    announce(&format!("{command:?} outlived the test host; killed"));
                    let _ = child.kill();
                }
            }
            thread::sleep(Duration::from_millis(200));
        };
        std::process::Output {
            status,
            stdout: drained(stdout),
            stderr: drained(stderr),
        }
    }
}

/// Prints a retry warning on the process's real stderr: libtest captures `eprintln!` in tests
/// and shows it only for a test that finally fails, and a retry must never be silent.
fn announce(what: &str) {
    let _ = writeln!(std::io::stderr(), "[testhost] WARNING: {what}");
}

/// Runs `cmd` (program and arguments) in the test host with default options.
pub fn run<S: AsRef<OsStr>>(cmd: &[S]) -> TestHostOutput {
    TestHost::new().run(cmd)
}

/// Runs `script` with `sh -c` in the test host with default options.
pub fn sh(script: &str) -> TestHostOutput {
    TestHost::new().sh(script)
}

/// The `tests/testhost/run` script.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testhost")
        .join("run")
}

fn run_script(command: &mut Command) -> TestHostOutput {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // If the test process dies (a harness timeout, ^C), the script must not outlive it: it would
    // keep a QEMU running. The script cleans up after itself on SIGTERM.
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => panic!("cannot start {}: {e}", script().display()),
    };
    let stdout = child.stdout.take().map(read_all_in_background);
    let stderr = child.stderr.take().map(read_all_in_background);
    let status = match child.wait() {
        Ok(s) => s,
        Err(e) => panic!("waiting for {}: {e}", script().display()),
    };
    let text = |pipe| String::from_utf8_lossy(&drained(pipe)).into_owned();
    TestHostOutput {
        stdout: text(stdout),
        stderr: text(stderr),
        // No code means the script itself was killed by a signal.
        code: status.code().unwrap_or(HOST_FAILED),
    }
}

/// What [`read_all_in_background`] read (a read error leaves what was read so far).
fn drained(reader: Option<thread::JoinHandle<Vec<u8>>>) -> Vec<u8> {
    reader.and_then(|h| h.join().ok()).unwrap_or_default()
}

/// Drains a pipe on its own thread so that neither of the script's two pipes can fill up and block it.
fn read_all_in_background(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        // A read error leaves what was read so far; the exit code tells the rest.
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(code: i32, stderr: &str) -> TestHostOutput {
        TestHostOutput {
            stdout: String::new(),
            stderr: stderr.into(),
            code,
        }
    }

    #[test]
    fn a_client_outliving_the_machine_is_killed_and_one_that_ends_is_not() {
        let ended = Machine {
            ended: AtomicBool::new(true),
            grace: Duration::ZERO,
        };
        let out = ended.output(Command::new("sleep").arg("1000"));
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&out.status),
            Some(libc::SIGKILL)
        );
        let out = Machine::default()
            .output(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]));
        assert_eq!(
            (out.status.code(), &out.stdout[..], &out.stderr[..]),
            (Some(3), &b"out\n"[..], &b"err\n"[..])
        );
    }

    #[test]
    fn faults_only_the_emulator_can_cause_are_told_from_a_guests() {
        for own in [
            "EMULATOR-FAULT: the test host reset itself without a word (its own CPU triple-faulted)",
            "EMULATOR-FAULT: the test host's kernel found its own stack corrupted",
            "EMULATOR-FAULT: the test host froze before the command started",
            "EMULATOR-FAULT: the test host froze while the command ran (no sign of life for 120s, \
             its CPUs nearly idle; QEMU killed)",
            "EMULATOR-FAULT: 12 guest exits at 0xffffffffc0659dcc, the test host's own VMRUN \
             return address",
        ] {
            assert!(the_emulators_alone(own), "{own}");
        }
        let guest = "EMULATOR-FAULT: 2 guest triple faults (at 0xffffffff811dec8e 0x40f573)";
        assert!(!the_emulators_alone(guest));
        assert_eq!(triple_fault_rips(guest), ["0xffffffff811dec8e", "0x40f573"]);
    }

    #[test]
    fn retries_are_bounded_and_a_guest_fault_at_the_same_place_is_not_retried() {
        let host = "EMULATOR-FAULT: the test host's kernel found its own stack corrupted";
        let at = |rip: &str| format!("EMULATOR-FAULT: 1 guest triple faults (at {rip})");
        let past = |faults: &[&str]| faults.iter().map(|f| f.to_string()).collect::<Vec<_>>();
        // The emulator's own: up to MAX_RETRIES.
        assert!(worth_another_try(&past(&[host, host, host]), host));
        assert!(!worth_another_try(&past(&[host; MAX_RETRIES]), host));
        // Guest faults at new places: up to MAX_GUEST_FAULT_RETRIES, among the others.
        let (a, b, c) = (at("0x1"), at("0x2"), at("0x3"));
        assert!(worth_another_try(&[], &a));
        assert!(worth_another_try(&past(&[host, &a, host]), &b));
        assert!(!worth_another_try(&past(&[&a, &b]), &c));
        // The same instruction again: a skiff bug would do that.
        assert!(!worth_another_try(&past(&[&a]), &a));
        assert!(!worth_another_try(&past(&[host, &a]), &at("0x9 0x1")));
        // A triple fault line without an instruction is not retried.
        assert!(!worth_another_try(
            &[],
            "EMULATOR-FAULT: 1 guest triple faults (at)"
        ));
    }

    #[test]
    fn only_the_test_hosts_emulator_fault_line_counts() {
        let line =
            "EMULATOR-FAULT: 12 guest exits at 0xffffffffc0659dcc, the test host's own VMRUN \
                    return address (QEMU's nested SVM ran a guest on the test host's state)";
        let reported = format!("testhost| [   51.1] kvm: something\ntesthost| {line}\n");
        assert_eq!(output(0, &reported).emulator_fault(), Some(line));
        assert_eq!(output(TIMED_OUT, &reported).emulator_fault(), Some(line));
        // A hang, a test-host panic, or the command printing the words itself are not it.
        assert_eq!(output(TIMED_OUT, "").emulator_fault(), None);
        let panic = "testhost| [   51.1] Kernel panic - not syncing: corrupted stack end\n";
        assert_eq!(output(HOST_FAILED, panic).emulator_fault(), None);
        assert_eq!(output(1, &format!("{line}\n")).emulator_fault(), None);
        let later = format!("testhost| note {line}\n");
        assert_eq!(output(1, &later).emulator_fault(), None);
        let reset = "EMULATOR-FAULT: the test host reset itself without a word (its own CPU triple-faulted)";
        let said =
            format!("testhost: the test host failed (QEMU exit status 0) ...\ntesthost: {reset}\n");
        assert_eq!(output(HOST_FAILED, &said).emulator_fault(), Some(reset));
        let stack = "EMULATOR-FAULT: the test host's kernel found its own stack corrupted";
        let said = format!("testhost| [  212.4] Kernel panic - not syncing: corrupted stack end detected inside scheduler\ntesthost: {stack}\n");
        assert_eq!(output(HOST_FAILED, &said).emulator_fault(), Some(stack));
        let froze = "EMULATOR-FAULT: the test host froze before the command started";
        let said = format!("testhost: timed out after 600s; QEMU killed\ntesthost: {froze}\n");
        assert_eq!(output(TIMED_OUT, &said).emulator_fault(), Some(froze));
        // The script booted a frozen machine once more: only the second boot's signs count.
        let again = format!(
            "testhost: {froze} (no start after 120s; QEMU killed)\n{BOOTED_AGAIN}: nothing of CMD ran\n"
        );
        assert_eq!(output(0, &again).emulator_fault(), None);
        let twice = format!("{again}testhost: {froze} (no start after 120s; QEMU killed)\n");
        assert_eq!(
            output(TIMED_OUT, &twice).emulator_fault(),
            Some(format!("{froze} (no start after 120s; QEMU killed)").as_str())
        );
    }
}
