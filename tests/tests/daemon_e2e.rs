//! skiffd end to end: the real `docker` CLI against skiffd inside the nested KVM test host, with a
//! real image and a microVM behind every container. One test-host boot runs the whole story and
//! prints `NAME=VALUE` lines that the test then checks.

use skiff_tests::testhost::TestHost;
use std::path::Path;
use std::time::Duration;

/// Builds, on the host, a one-layer OCI archive `skiff-test/busybox:1` (busybox, Cmd `sh`).
const BUSYBOX_IMAGE: &str = r#"
set -eu
W=$1
mkdir -p "$W/root/bin" "$W/root/etc" "$W/root/tmp" "$W/share"
cp /bin/busybox "$W/root/bin/busybox"
for a in sh echo cat ls id sleep seq true false; do ln -s busybox "$W/root/bin/$a"; done
printf 'root:x:0:0::/root:/bin/sh\n' >"$W/root/etc/passwd"
tar -C "$W/root" --numeric-owner --owner=0 --group=0 --mtime=2024-01-01 -cf "$W/l.tar" .
umoci init --layout "$W/oci" >/dev/null
umoci new --image "$W/oci:t"
umoci raw add-layer --image "$W/oci:t" "$W/l.tar"
umoci config --image "$W/oci:t" --config.env PATH=/bin --config.cmd sh
skopeo copy -q --insecure-policy "oci:$W/oci:t" "oci-archive:$W/share/image.tar:skiff-test/busybox:1"
"#;

/// The story, in the test host. `d` is the docker CLI (28.x) on skiffd's socket; each command is
/// cut off after 120 s so a hang shows as a result instead of the whole run's timeout.
const STORY: &str = r#"
export SKIFF_ROOT=/run/skiff
mkdir -p $SKIFF_ROOT
/skiff/bin/skiff load /testdata/img/image.tar >/dev/null || echo load_failed=1
I=skiff-test/busybox:1
S=/run/skiffd.sock
d() { timeout 120 /testdata/docker/docker -H unix://$S "$@"; }
daemon() {
    /skiff/bin/skiffd --root $SKIFF_ROOT -H unix://$S >>/tmp/skiffd.log 2>&1 &
    PID=$!
    for i in $(seq 100); do d version >/dev/null 2>&1 && return; sleep 0.2; done
    echo daemon_up=no
}
daemon
echo "api=$(d version --format '{{.Server.APIVersion}}')"

echo "run=$(d run --rm $I echo hello)"
d run --name three $I sh -c 'echo out; echo err >&2; exit 3' >/tmp/three.out 2>/tmp/three.err
echo "run_code=$?"
echo "run_out=$(cat /tmp/three.out)"
echo "run_err=$(cat /tmp/three.err)"
echo "echo_in=$(echo piped | d run -i --rm $I cat)"

d run -d --name bg $I sh -c 'echo start; trap "echo got-term; exit 7" TERM; while :; do sleep 0.1; done' >/dev/null
echo "ps=$(d ps --format '{{.Names}} {{.State}}')"
# It runs from its VMM's start; its first line comes once the guest has booted.
for i in $(seq 300); do [ -n "$(d logs bg)" ] && break; sleep 0.2; done
echo "logs=$(d logs bg)"
d exec bg sh -c 'echo in-exec; exit 4' >/tmp/exec.out
echo "exec_code=$?"
echo "exec_out=$(cat /tmp/exec.out)"

# Errors change nothing: a name in use, removing a running container, an unknown container.
d create --name bg $I true >/dev/null 2>/tmp/conflict.err; echo "conflict_code=$?"
grep -q 'is already in use' /tmp/conflict.err && echo conflict_msg=ok
d rm bg >/dev/null 2>/tmp/rm.err; echo "rm_running_code=$?"
grep -q 'container is running' /tmp/rm.err && echo rm_running_msg=ok
d inspect nosuch >/dev/null 2>/tmp/nosuch.err; echo "nosuch_code=$?"
grep -q 'No such' /tmp/nosuch.err && echo nosuch_msg=ok

# The daemon dies; the containers do not. One of them ends while it is down.
d run -d --name short $I sh -c 'sleep 4; echo bye; exit 9' >/dev/null
kill -9 $PID
sleep 8
daemon
echo "after_restart=$(d ps -a --format '{{.Names}} {{.State}}' | sort | tr '\n' ',')"
echo "short=$(d inspect -f '{{.State.Status}} {{.State.ExitCode}}' short)"
echo "short_logs=$(d logs short)"
echo "bg_logs=$(d logs bg)"

d stop bg >/dev/null
echo "stopped=$(d inspect -f '{{.State.Status}} {{.State.ExitCode}}' bg)"
echo "stopped_logs=$(d logs bg | tr '\n' ',')"
d rm bg short three >/dev/null
echo "left=$(d ps -a -q | wc -l)"
kill $PID
wait $PID
echo "daemon_exit=$?"
"#;

fn docker_cli() -> &'static Path {
    Path::new("/usr/local/bin/docker")
}

#[test]
fn the_docker_cli_drives_containers_that_outlive_the_daemon() {
    let work = tempfile::tempdir().expect("tempdir");
    skiff_tests::host_script(BUSYBOX_IMAGE, work.path());
    let cli_dir = work.path().join("docker");
    std::fs::create_dir(&cli_dir).expect("mkdir");
    std::fs::copy(docker_cli(), cli_dir.join("docker")).expect("the docker CLI (tests/setup)");
    let out = TestHost::new()
        .timeout(Duration::from_secs(900))
        .mem_mib(4096)
        .data(work.path().join("share"), "img")
        .data(&cli_dir, "docker")
        .run(&["sh", "-c", STORY]);
    let r = out.results();
    assert!(!r.contains_key("load_failed"), "{out}");
    assert!(!r.contains_key("daemon_up"), "{out}");
    out.expect_results(&[
        ("api", "1.47"),
        // Foreground runs: output, stderr apart, exit codes, stdin.
        ("run", "hello"),
        ("run_code", "3"),
        ("run_out", "out"),
        ("run_err", "err"),
        ("echo_in", "piped"),
        // Detached, listed, logged, exec'd.
        ("ps", "bg running"),
        ("logs", "start"),
        ("exec_code", "4"),
        ("exec_out", "in-exec"),
        // Docker's errors, and nothing changed by them.
        ("conflict_code", "1"),
        ("conflict_msg", "ok"),
        ("rm_running_code", "1"),
        ("rm_running_msg", "ok"),
        ("nosuch_code", "1"),
        ("nosuch_msg", "ok"),
        // kill -9 skiffd: bg still runs, short ended meanwhile with its real code and output.
        ("after_restart", "bg running,short exited,three exited,"),
        ("short", "exited 9"),
        ("short_logs", "bye"),
        ("bg_logs", "start"),
        // stop: SIGTERM reached the trap, which exited 7.
        ("stopped", "exited 7"),
        ("stopped_logs", "start,got-term,"),
        ("left", "0"),
        ("daemon_exit", "0"),
    ]);
}
