//! The test host itself: exit codes, output, data directories, timeouts and cleanup.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use skiff_tests::testhost::{self, TestHost};

/// What every test relies on, in one boot (each boot costs seconds): the command's exit code,
/// its stdout and stderr apart and byte-exact, its arguments verbatim, the promised environment
/// (real KVM on AMD SVM, not this machine's PVM backend) and the data directories.
#[test]
fn a_command_gets_its_arguments_environment_and_data_and_its_code_and_output_come_back() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hello from the host\n").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub").join("deep"), [0u8, 1, 2, 255]).unwrap();
    let script = "printf '[%s]\\n' \"$@\"; \
         echo \"$GREETING\"; id -u; test -c /dev/kvm && echo kvm; \
         test -d /sys/module/kvm_amd && ! test -d /sys/module/kvm_pvm && echo svm; \
         grep -qw overlay /proc/filesystems && echo overlay; test -d /sys/module/fuse && echo fuse; \
         test -d /sys/module/vhost_vsock && echo vhost_vsock; \
         test -x /testdata/busybox/bin/sh && grep -q '^user:x:1000:' /testdata/busybox/etc/passwd && echo rootfs; \
         touch /tmp/w /run/w && echo writable; case :$PATH: in *:/skiff/bin:*) echo path;; esac; \
         pidof testhost-kvm-hold >/dev/null && echo kvm-held; \
         grep -q 'guest_rip == 0xffffffff' /sys/kernel/debug/tracing/events/kvm/kvm_exit/filter && \
         grep -qx 1 /sys/kernel/debug/tracing/events/kvm/kvm_exit/enable && echo emulator-watch; \
         cat /testdata/mydata/hello.txt; od -An -tu1 /testdata/mydata/sub/deep | tr -s ' '; \
         echo err >&2; printf 'a\\r\\nb'; [ -t 1 ] || echo ' not-a-tty'; exit 7";
    let tricky = ["it's", "two words", "$HOME", "`id`", "a\"b", ""];
    let mut cmd = vec!["sh", "-c", script, "sh"];
    cmd.extend(tricky);
    let out = TestHost::new()
        .env("GREETING", "hello 'world'")
        .data(dir.path(), "mydata")
        .run(&cmd);
    let arguments: String = tricky.iter().map(|a| format!("[{a}]\n")).collect();
    let expected = format!(
        "{arguments}hello 'world'\n0\nkvm\nsvm\noverlay\nfuse\nvhost_vsock\nrootfs\nwritable\npath\n\
         kvm-held\nemulator-watch\nhello from the host\n 0 1 2 255\na\r\nb not-a-tty\n"
    );
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (7, expected.as_str()),
        "{out}"
    );
    assert!(out.stderr.lines().any(|l| l == "err"), "{out}");
    assert!(
        !out.stdout.contains("SKIFF-TESTHOST"),
        "marker leaked: {out}"
    );
}

/// The script with its temp dirs in `tmpdir`, so that this run's QEMU can be told apart by its
/// command line (`-initrd TMPDIR/skiff-testhost.*/initrd`) from runs of parallel tests.
fn script_in(tmpdir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(testhost::script());
    cmd.env("TMPDIR", tmpdir).args(args).stdin(Stdio::null());
    cmd
}

/// Whether a QEMU of a run with temp dirs in `tmpdir` is alive.
fn qemu_alive(tmpdir: &Path) -> bool {
    let pattern = format!("qemu-system-x86_64 .*{}", tmpdir.display());
    Command::new("pgrep")
        .args(["-f", &pattern])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Waits up to `limit` for `cond`.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    cond()
}

fn assert_nothing_left(tmpdir: &Path) {
    assert!(
        wait_for(Duration::from_secs(10), || !qemu_alive(tmpdir)),
        "QEMU left behind"
    );
    let left: Vec<_> = std::fs::read_dir(tmpdir).unwrap().collect();
    assert!(left.is_empty(), "temp files left behind: {left:?}");
}

#[test]
fn timeout_kills_the_machine_and_exits_124() {
    let tmpdir = tempfile::tempdir().unwrap();
    let out = script_in(
        tmpdir.path(),
        &[
            "--timeout",
            "15",
            "--",
            "sh",
            "-c",
            "echo started; sleep 600",
        ],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(testhost::TIMED_OUT),
        "stderr: {stderr}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "started\n",
        "stderr: {stderr}"
    );
    assert!(stderr.contains("timed out after 15s"), "stderr: {stderr}");
    assert_nothing_left(tmpdir.path());
}

#[test]
fn a_machine_that_never_starts_the_command_is_booted_once_more_then_reported() {
    // A start limit shorter than any boot makes every machine look frozen before the command.
    let tmpdir = tempfile::tempdir().unwrap();
    let out = script_in(tmpdir.path(), &["--no-build", "--", "echo", "ran"])
        .env("SKIFF_TESTHOST_START_LIMIT", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(testhost::TIMED_OUT),
        "stderr: {stderr}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "stderr: {stderr}");
    let froze = "testhost: EMULATOR-FAULT: the test host froze before the command started (no start after 1s; QEMU killed)";
    // Only the run's own account: packing and waiting for a busy machine come and go.
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("EMULATOR-FAULT") || l.contains("once more"))
        .collect();
    assert_eq!(
        said,
        [
            froze,
            "testhost: booting the test host once more: nothing of CMD ran in the frozen machine",
            froze
        ],
        "stderr: {stderr}"
    );
    assert_nothing_left(tmpdir.path());
}

#[test]
fn a_machine_that_goes_silent_and_idle_is_reported_frozen_and_a_quiet_one_is_not() {
    // A freeze limit of 15 s: a command that prints nothing for 30 s lives on (the init's
    // signs of life keep coming); one that stops the sign-of-life loop (a subshell of the init
    // script, so named `init`) and sleeps leaves a silent, idle machine, taken for frozen.
    let tmpdir = tempfile::tempdir().unwrap();
    let run = |script: &str| {
        script_in(tmpdir.path(), &["--no-build", "--", "sh", "-c", script])
            .env("SKIFF_TESTHOST_FREEZE_LIMIT", "15")
            .output()
            .unwrap()
    };
    let quiet = run("sleep 30; echo done");
    let stderr = String::from_utf8_lossy(&quiet.stderr);
    assert_eq!(quiet.status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(String::from_utf8_lossy(&quiet.stdout), "done\n");
    let frozen = run("for d in /proc/[0-9]*; do \
             [ \"$(cat $d/comm)\" = init ] && grep -q '^PPid:[[:space:]]*1$' $d/status && \
             kill -STOP ${d#/proc/}; \
         done 2>/dev/null; sleep 120; echo late");
    let stderr = String::from_utf8_lossy(&frozen.stderr);
    assert_eq!(
        frozen.status.code(),
        Some(testhost::TIMED_OUT),
        "stderr: {stderr}"
    );
    assert_eq!(
        String::from_utf8_lossy(&frozen.stdout),
        "",
        "stderr: {stderr}"
    );
    assert!(
        stderr.contains(
            "testhost: EMULATOR-FAULT: the test host froze while the command ran (no sign of life \
             for 15s, its CPUs nearly idle; QEMU killed)"
        ),
        "stderr: {stderr}"
    );
    assert_nothing_left(tmpdir.path());
}

/// Starts `sleep 600` in the test host and returns once its first output line arrived.
fn start_sleeper(tmpdir: &Path) -> Child {
    let mut child = script_in(tmpdir, &["--", "sh", "-c", "echo started; sleep 600"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "started\n");
    // The output streams live: it arrived while the command still runs.
    assert!(child.try_wait().unwrap().is_none());
    assert!(qemu_alive(tmpdir));
    child
}

#[test]
fn sigterm_to_the_script_stops_the_machine_and_cleans_up() {
    let tmpdir = tempfile::tempdir().unwrap();
    let mut child = start_sleeper(tmpdir.path());
    // SAFETY: plain kill(2) of our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    assert_nothing_left(tmpdir.path());
}

#[test]
fn sigkill_to_the_script_takes_the_machine_down_too() {
    let tmpdir = tempfile::tempdir().unwrap();
    let mut child = start_sleeper(tmpdir.path());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || !qemu_alive(tmpdir.path())),
        "QEMU left behind"
    );
    // The killed run's temp dir is removed by the next run that starts.
    let out = script_in(tmpdir.path(), &["--no-build", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_nothing_left(tmpdir.path());
}

#[test]
fn processes_left_behind_by_the_command_do_not_keep_the_run_alive() {
    let out = TestHost::new()
        .timeout(Duration::from_secs(120))
        .sh("sleep 1000 & (sleep 1000 >&2 &); echo done");
    assert_eq!((out.code, out.stdout.as_str()), (0, "done\n"), "{out}");
}

#[test]
fn a_test_host_kernel_panic_is_reported_as_host_failure() {
    let out = testhost::sh("echo before; echo c > /proc/sysrq-trigger; echo after");
    assert_eq!(out.code, testhost::HOST_FAILED, "{out}");
    assert_eq!(out.stdout, "before\n", "{out}");
    assert!(out.stderr.contains("Kernel panic"), "{out}");
    assert!(out.stderr.contains("the test host failed"), "{out}");
}

#[test]
fn a_stack_corruption_sign_in_a_long_console_is_reported_as_the_emulator_s() {
    // The sign on the console, then a dump well past a pipe's 64 KiB (a real one repeats
    // itself), then a crash: the script must name the fault, and not as a silent reset.
    let cmd = "{ echo 'BUG: TASK stack guard page was hit at 0 (a stand-in)'; i=0; \
               while [ $i -lt 1000 ]; do \
                 echo \"stand-in dump $i: RAX 0000000000000000 RBX 0000000000000000 RCX 0\"; \
                 i=$((i + 1)); done; } >/dev/console; \
               sleep 2; echo c >/proc/sysrq-trigger";
    let tmp = tempfile::tempdir().unwrap();
    let out = script_in(tmp.path(), &["--", "sh", "-c", cmd])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(testhost::HOST_FAILED), "{stderr}");
    assert!(stderr.contains("stand-in dump 999"), "{stderr}");
    assert!(
        stderr.contains("EMULATOR-FAULT: the test host's kernel found its own stack corrupted"),
        "{stderr}"
    );
    assert!(!stderr.contains("reset itself without a word"), "{stderr}");
}

#[test]
fn concurrent_runs_build_one_cold_cache_without_leftovers() {
    let cache = tempfile::tempdir().unwrap();
    let start = || {
        Command::new(testhost::script())
            .env("SKIFF_TESTHOST_CACHE", cache.path())
            .args(["--no-build", "--", "echo", "ok"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let runs = [start(), start()];
    for run in runs {
        let out = run.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "ok\n",
            "stderr: {stderr}"
        );
    }
    let mut names: Vec<String> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .map(|n| n.split('-').next().unwrap().to_string())
        .collect();
    names.sort();
    // One of each archive, the unpacked kernel package and its record; no temp dirs or parts.
    assert_eq!(
        names,
        ["base", "disk", "kernel", "linux", "net", "skiff"],
        "{names:?}"
    );
}

#[test]
fn with_qemu_packs_a_working_qemu() {
    let out = Command::new(testhost::script())
        .args(["--with-qemu", "--timeout", "120", "--"])
        .args(["qemu-system-x86_64", "--version"])
        .stdin(Stdio::null())
        .output()
        .expect("run tests/testhost/run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.starts_with("QEMU emulator version"),
        "{stdout}\n{stderr}"
    );
}

#[test]
fn forward_reaches_a_server_in_the_test_host_and_no_kvm_hold_holds_no_vm() {
    use std::io::Read;
    let port = skiff_tests::free_port();
    // The host side: connect until the server inside answers (QEMU accepts at once and closes
    // the connection while nothing listens inside yet), until the machine ends: it may first
    // wait for another test's.
    let client = |machine: &testhost::Machine| {
        while !machine.ended() {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                let mut got = String::new();
                let _ = stream.read_to_string(&mut got);
                if !got.is_empty() {
                    return got;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        String::new()
    };
    let (out, got) = TestHost::new()
        .timeout(Duration::from_secs(120))
        .forward(port, 8080)
        .no_kvm_hold()
        .sh_beside(
            "pidof testhost-kvm-hold || echo no-vm-held; \
             echo hello-through-forward | nc -l -p 8080 && echo served",
            client,
        );
    assert_eq!(got, "hello-through-forward\n", "{out}");
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "no-vm-held\nserved\n"),
        "{out}"
    );
}

#[test]
fn a_recorded_guest_exit_at_the_vmrun_return_is_reported_as_an_emulator_fault() {
    // The init's filtered trace event records only such exits; a trace marker line stands in for
    // one here. The harness retries the run (announced) as often as it retries a fault that no
    // guest can cause, with what ran beside it on this host, and returns the last output.
    // Every guest triple fault is reported too (see the
    // header of tests/testhost/run).
    let beside_runs = std::sync::atomic::AtomicU32::new(0);
    let (out, ()) = TestHost::new().sh_beside(
        "M=/sys/kernel/debug/tracing/trace_marker; \
         echo 'kvm_exit: vcpu 0 reason npf rip 0x0 (stand-in)' >$M; \
         echo 'kvm_exit: vcpu 0 reason shutdown rip 0x1000 (stand-in)' >$M; \
         echo 'kvm_exit: vcpu 0 reason shutdown rip 0xffffffffc0401234 (stand-in)' >$M",
        |_| {
            beside_runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        },
    );
    assert_eq!(
        beside_runs.into_inner() as usize,
        1 + testhost::MAX_RETRIES,
        "{out}"
    );
    let fault = out.emulator_fault().unwrap_or_default();
    assert!(
        fault.starts_with("EMULATOR-FAULT: 1 guest exits at 0xffffffff"),
        "{out}"
    );
    assert!(
        out.stderr.contains(
            "testhost| EMULATOR-FAULT: 2 guest triple faults (at 0x1000 0xffffffffc0401234)"
        ),
        "{out}"
    );
    assert_eq!(out.code, 0, "{out}");
}
