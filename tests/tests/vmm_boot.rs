//! skiff-vmm end to end: the real guest kernel boots in real KVM (inside the nested test host)
//! with `skiff-test-init` as /init, and the VMM's exit code and output say how the guest ended.

use skiff_tests::testhost::{self, TestHostOutput};

/// Boots `kernel` with skiff-test-init doing `action`, console on stdout, stderr to `stderr`;
/// prints `rc=N` after the VMM's output.
fn boot_to(kernel: &str, cpus: u32, action: &str, stderr: &str) -> String {
    format!(
        "skiff-vmm --kernel {kernel} --cpus {cpus} --memory 128 --init /skiff/bin/skiff-test-init \
         --serial - --cmdline-extra '-- {action}' 2>{stderr}; echo rc=$?"
    )
}

fn boot(kernel: &str, cpus: u32, action: &str) -> String {
    boot_to(kernel, cpus, action, "&2")
}

fn assert_reached_user_space(out: &TestHostOutput, cpus: u32) {
    for line in [
        "skiff-test-init: user space reached".to_owned(),
        format!("skiff-test-init: cpus={cpus}"),
        "skiff-test-init: hwrng read 32 bytes, nonzero=true".to_owned(),
    ] {
        assert!(
            out.stdout.lines().any(|l| l == line),
            "missing {line:?}: {out}"
        );
    }
}

#[test]
fn vmlinux_boots_to_user_space_and_powers_off_with_exit_0() {
    // 4 GiB: RAM continues above the 32-bit device hole.
    let script = boot("/skiff/vmlinux", 2, "poweroff 7").replace("--memory 128", "--memory 4096");
    let out = testhost::sh(&script);
    let mem: u64 = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("skiff-test-init: mem_mib="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!((3800..=4096).contains(&mem), "guest sees {mem} MiB: {out}");
    assert_reached_user_space(&out, 2);
    assert!(out.stdout.contains("powering off with status 7"), "{out}");
    assert!(out.stdout.ends_with("rc=0\n"), "{out}");
}

#[test]
fn bzimage_boots_to_user_space_and_powers_off_with_exit_0() {
    let out = testhost::sh(&boot("/skiff/bzImage", 1, "poweroff"));
    assert_reached_user_space(&out, 1);
    assert!(out.stdout.ends_with("rc=0\n"), "{out}");
}

#[test]
fn kernel_panic_and_reboot_exit_2_with_the_console_tail_on_stderr() {
    // The panic runs with the console discarded (the default): only the kept tail shows it.
    let script = format!(
        "skiff-vmm --kernel /skiff/vmlinux --init /skiff/bin/skiff-test-init \
           --cmdline-extra '-- exit'; echo rc=$?; {}; \
         grep -c 'skiff-test-init: rebooting' /tmp/reboot.err",
        boot_to("/skiff/vmlinux", 1, "reboot", "/tmp/reboot.err"),
    );
    let out = testhost::sh(&script);
    let rcs: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("rc="))
        .collect();
    assert_eq!(rcs, ["rc=2", "rc=2"], "{out}");
    assert!(
        !out.stdout.contains("Kernel panic"),
        "console discarded: {out}"
    );
    assert!(
        out.stderr
            .contains("Kernel panic - not syncing: Attempted to kill init!"),
        "{out}"
    );
    assert!(out.stderr.contains("the guest reset the machine"), "{out}");
    assert!(
        out.stdout.ends_with("1\n"),
        "reboot's console tail on stderr, though --serial - printed it too: {out}"
    );
}

#[test]
fn sigterm_and_sigint_stop_a_running_guest_with_143_and_130() {
    let script = "for sig in TERM INT; do \
           skiff-vmm --kernel /skiff/vmlinux --init /skiff/bin/skiff-test-init --serial /tmp/c.log \
             --cmdline-extra '-- hang' & pid=$!; \
           until grep -q hanging /tmp/c.log 2>/dev/null; do sleep 0.2; done; \
           kill -$sig $pid; wait $pid; echo $sig=$?; rm -f /tmp/c.log; \
         done";
    let out = testhost::sh(script);
    assert_eq!(out.stdout, "TERM=143\nINT=130\n", "{out}");
}

#[test]
fn bad_input_exits_1_with_a_clear_message() {
    let out = testhost::sh(
        "skiff-vmm --kernel /nonexistent; echo rc=$?; \
         echo junk >/tmp/junk; skiff-vmm --kernel /tmp/junk; echo rc=$?; \
         skiff-vmm --kernel /skiff/bin/skiff-init; echo rc=$?; \
         skiff-vmm --kernel /skiff/vmlinux --cpus 0; echo rc=$?; \
         skiff-vmm --kernel /skiff/vmlinux --memory 4; echo rc=$?; \
         skiff-vmm --kernel /skiff/vmlinux --bogus; echo rc=$?",
    );
    assert_eq!(out.stdout, "rc=1\n".repeat(6), "{out}");
    for msg in [
        "cannot read kernel /nonexistent",
        "/skiff/bin/skiff-init",
        "is neither an ELF vmlinux nor a bzImage",
        "0 vCPUs requested",
        "guest memory of 4 MiB is too small",
        "unexpected argument '--bogus'",
    ] {
        assert!(out.stderr.contains(msg), "missing {msg:?}: {out}");
    }
}
