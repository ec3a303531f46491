//! `skiff run` / `skiff exec` end to end: real microVMs (skiff-vmm + the shared kernel +
//! skiff-init) inside the nested KVM test host. Each test boots the test host once and runs a
//! script of several skiff commands, printing `NAME=VALUE` result lines the test then checks.

use skiff_tests::testhost::{TestHost, TestHostOutput};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// What every script starts with: the image directory, skiff's state, and `cut_off SECS CMD…`,
/// which runs CMD under `timeout` and marks the run as hung when CMD ran out its SECS. (By time,
/// not exit code: the test host's busybox `timeout` exits 143, which skiff itself can return.)
const PRELUDE: &str = r#"
R=/testdata/busybox
export SKIFF_ROOT=/run/skiff
cut_off() {
    limit=$1 start=$(date +%s)
    timeout "$@"
    rc=$?
    [ $(($(date +%s) - start)) -lt $limit ] || touch /tmp/hung
    return $rc
}
skiff() { cut_off 120 /skiff/bin/skiff "$@"; }
"#;

/// What every script ends with: a run in which a command was cut off exits 124 (hung), whatever
/// its other results say.
const EPILOGUE: &str = "[ ! -e /tmp/hung ] || exit 124\n";

/// Runs `script`, between [`PRELUDE`] and [`EPILOGUE`], with `sh -c` in the test host.
fn script(script: &str, timeout: Duration) -> TestHostOutput {
    TestHost::new().timeout(timeout).mem_mib(4096).run(&[
        "sh",
        "-c",
        &format!("{PRELUDE}{script}{EPILOGUE}"),
    ])
}

/// The `NAME=VALUE` lines of the output (the last one wins).
fn results(out: &TestHostOutput) -> HashMap<String, String> {
    out.results()
}

#[track_caller]
fn expect(results: &HashMap<String, String>, key: &str, value: &str, out: &TestHostOutput) {
    assert_eq!(
        results.get(key).map(String::as_str),
        Some(value),
        "{key}\n{out}"
    );
}

/// The release of the guest kernel the test host packs (from its "Linux version X " banner).
fn guest_kernel_release() -> String {
    let path = std::env::var_os("SKIFF_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/skiff/kernel/vmlinux")
        });
    let image = std::fs::read(&path).expect("guest kernel (kernel-config/build-kernel)");
    let marker = b"Linux version ";
    let at = image
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("no version banner in the kernel image")
        + marker.len();
    let end = image[at..].iter().position(|&b| b == b' ').unwrap();
    String::from_utf8_lossy(&image[at..at + end]).into_owned()
}

const BASICS: &str = r#"
skiff run --rootfs $R -- sh -c 'echo hello-from-vm; echo "release=$(uname -r)"; exit 7'
echo "code_basic=$?"
skiff run --rootfs $R -e FOO=bar -e 'SP=a b' -w /tmp -u 1000:1000 --hostname boxy -- \
    sh -c 'echo "applied=$FOO|$SP|$(pwd)|$(id -u):$(id -g)|$(hostname)"'
echo "code_applied=$?"
echo abc | skiff run --rootfs $R -- cat > /tmp/cat.out
echo "code_cat=$? cat=$(cat /tmp/cat.out)" | tr ' ' '\n'
skiff run --rootfs $R -- sh -c 'kill -KILL $$'
echo "code_killed=$?"
skiff run --rootfs $R -- no-such-program 2> /tmp/notfound.err
echo "code_notfound=$?"
echo "notfound_msg=$(cat /tmp/notfound.err)"
skiff run --rootfs $R -- sh -c 'echo x > /etc/written-in-vm && rm /bin/ls && mkdir /newdir && echo wrote'
echo "code_write=$?"
[ ! -e $R/etc/written-in-vm ] && [ -e $R/bin/ls ] && [ ! -e $R/newdir ] && echo "rootfs_untouched=yes"
skiff run --rootfs $R -- sh -c 'cat /proc/1/comm; ls -d /proc/self /sys/kernel /dev/pts /dev/null; echo mounts-ok' | tr '\n' ' ' | sed 's/^/pseudo=/'
echo
skiff run --rootfs $R -- sh -c 'yes | head -c 3000000 | wc -c; head -c 2000000 /dev/zero | tr "\0" e >&2' 2> /tmp/big.err | sed 's/^ */bigout=/'
echo "bigerr=$(wc -c < /tmp/big.err)"
# The VMM of a daemonless run sits in a cgroup of its own while it runs, removed after.
skiff run --rootfs $R -- sh -c 'sleep 1; echo slept=yes' & SLEEPER=$!
V=
for i in $(seq 100); do
    for c in /proc/[0-9]*/comm; do [ "$(cat $c 2>/dev/null)" = skiff-vmm ] && V=${c%/comm}; done
    [ -n "$V" ] && break; sleep 0.1
done
grep -q '^0::/skiff/[0-9a-f]\{12\}$' $V/cgroup && echo "run_cgroup=joined $(cat /sys/fs/cgroup/skiff/*/memory.max)"
# ... and jails itself once the VM is set up: a uid of the jail range, no capabilities, PID 1
# of a PID namespace of its own.
for i in $(seq 100); do [ "$(awk '/^CapEff:/ {print $2}' $V/status)" = 0000000000000000 ] && break; sleep 0.1; done
echo "run_jail=$(awk '/^Uid:/ {print ($2 >= 1000000000) ? "uid-ok" : "uid-" $2}' $V/status) $(awk '/^(CapEff|NoNewPrivs):/ {print $2} /^NSpid:/ {print "pid-in-ns-" $NF}' $V/status | tr '\n' ' ')"
wait $SLEEPER
echo "run_cgroups_left=$(ls /sys/fs/cgroup/skiff | grep -c '^[0-9a-f]\{12\}$')"
skiff run --rootfs $R -t -- sh -c 'echo "tty=$(tty)"; echo "term=$TERM"' | tr -d '\r'
# skiff-vmm's test hook: once the guest runs, its main thread makes a call outside its filter.
SKIFF_VMM_SECCOMP_SELF_TEST=1 skiff run --rootfs $R -- true 2> /tmp/seccomp.err
echo "code_seccomp=$?"
echo "seccomp_what=$(grep -c '^skiff: skiff-vmm was killed by its seccomp filter' /tmp/seccomp.err)"
echo "seccomp_report=$(grep -o 'syscall [0-9]* in thread .*' /tmp/seccomp.err)"
echo "leftover_run_dirs=$(ls /run/skiff/run | wc -l)"
"#;

/// Rootless, after the stories above (it changes /dev/kvm's group): an unprivileged user runs a
/// container with passt as its network, serving a published port and reaching the test host.
const ROOTLESS: &str = r#"
# An unprivileged user (uid 4321) whose group may open /dev/kvm, and a root of its own.
echo 'rl:x:4321:4321::/tmp:/bin/sh' >> /etc/passwd
echo 'rl:x:4321:' >> /etc/group
chown root:4321 /dev/kvm && chmod 660 /dev/kvm
mkdir -p /tmp/rl && cp -a $R /tmp/rl/root && mkdir /tmp/rl/root/www
echo rootless-page > /tmp/rl/root/www/index.html
chown -R 4321:4321 /tmp/rl
# passt needs a host interface with a default route to model the guest's network on.
modprobe dummy && ip link add rl0 type dummy && ip addr add 192.168.77.1/24 dev rl0 &&
    ip link set rl0 up && ip route add default via 192.168.77.254 dev rl0
# A server on the test host for the guest to reach.
echo outbound-reply | timeout 60 nc -l -p 9000 > /tmp/rl-server.in &
# passt sandboxes itself with pivot_root, which the test host's initramfs root refuses (a real
# system's root is a mount): the user's run gets a mount namespace whose root is a bind mount of
# it moved over / (as switch_root does; a plain chroot would cost the user its user namespaces).
mkdir /tmp/broot
# The container lives until the test host connects to its second published port (a fixed
# lifetime raced a slow boot), at most the 240 s of the timeout.
unshare -m sh -c 'mount --rbind / /tmp/broot && cd /tmp/broot && mount --move . / && exec chroot . "$@"' sh su rl -c 'SKIFF_ROOT=/tmp/rl/skiff timeout 240 /skiff/bin/skiff run --rootfs /tmp/rl/root --network passt -p 8080:80 -p 8081:81 -- sh -c "httpd -p 80 -h /www; echo outbound=\$(echo hello | nc -w 2 192.168.77.1 9000); echo uid=\$(id -u); echo bye | nc -l -p 81 >/dev/null"' > /tmp/rl.out 2> /tmp/rl.err &
run=$!
for i in $(seq 600); do
    page=$(printf 'GET / HTTP/1.0\r\n\r\n' | timeout 5 nc 127.0.0.1 8080 2>/dev/null | tail -n1)
    [ -n "$page" ] && break
    sleep 0.2
done
echo "rootless_published=$page"
# passt accepts on 8081 before the guest listens on 81: only the guest's "bye" says it heard.
for i in $(seq 300); do [ "$(echo stop | timeout 5 nc 127.0.0.1 8081 2>/dev/null)" = bye ] && break; sleep 0.2; done
wait $run
echo "rootless_code=$?"
cat /tmp/rl.out
echo "rootless_server_got=$(cat /tmp/rl-server.in)"
echo "rootless_err=$(tr '\n' ' ' < /tmp/rl.err)"
n=0; for c in /proc/[0-9]*/comm; do [ "$(cat $c 2>/dev/null)" = passt ] && n=$((n+1)); done
echo "rootless_passt_left=$n"
echo "rootless_leftover=$(ls /tmp/rl/skiff/run | wc -l)"
"#;

#[test]
fn run_prints_exits_applies_spec_and_keeps_the_image_read_only() {
    let out = script(&format!("{BASICS}{ROOTLESS}"), Duration::from_secs(500));
    let r = results(&out);
    assert!(out.stdout.lines().any(|l| l == "hello-from-vm"), "{out}");
    expect(&r, "release", &guest_kernel_release(), &out);
    expect(&r, "code_basic", "7", &out);
    expect(&r, "applied", "bar|a b|/tmp|1000:1000|boxy", &out);
    expect(&r, "code_applied", "0", &out);
    expect(&r, "cat", "abc", &out);
    expect(&r, "code_cat", "0", &out);
    expect(&r, "code_killed", "137", &out);
    expect(&r, "code_notfound", "127", &out);
    expect(
        &r,
        "notfound_msg",
        "skiff: exec: \"no-such-program\": executable file not found in $PATH",
        &out,
    );
    expect(&r, "code_write", "0", &out);
    expect(&r, "rootfs_untouched", "yes", &out);
    expect(
        &r,
        "pseudo",
        "init /dev/null /dev/pts /proc/self /sys/kernel mounts-ok ",
        &out,
    );
    expect(&r, "bigout", "3000000", &out);
    expect(&r, "bigerr", "2000000", &out);
    expect(&r, "slept", "yes", &out);
    // 128 MiB of guest + 64 MiB for the VMM.
    expect(&r, "run_cgroup", "joined 201326592", &out);
    expect(
        &r,
        "run_jail",
        "uid-ok pid-in-ns-1 0000000000000000 1 ",
        &out,
    );
    expect(&r, "run_cgroups_left", "0", &out);
    expect(&r, "tty", "/dev/pts/0", &out);
    expect(&r, "term", "xterm", &out);
    expect(&r, "code_seccomp", "125", &out);
    expect(&r, "seccomp_what", "1", &out);
    // getppid (110) from the main thread, which runs under the main filter.
    expect(
        &r,
        "seccomp_report",
        "syscall 110 in thread main (main filter)",
        &out,
    );
    expect(&r, "leftover_run_dirs", "0", &out);
    expect(&r, "rootless_published", "rootless-page", &out);
    expect(&r, "rootless_code", "0", &out);
    expect(&r, "outbound", "outbound-reply", &out);
    expect(&r, "rootless_server_got", "hello", &out);
    expect(&r, "uid", "0", &out);
    expect(&r, "rootless_err", "", &out);
    expect(&r, "rootless_passt_left", "0", &out);
    expect(&r, "rootless_leftover", "0", &out);
}

const STOP_AND_EXEC: &str = r#"
vmms() { n=0; for c in /proc/[0-9]*/comm; do [ "$(cat $c 2>/dev/null)" = skiff-vmm ] && n=$((n+1)); done; echo $n; }

# A flood of output, stopped by SIGTERM to skiff: forwarded, `yes` dies of it.
/skiff/bin/skiff run --rootfs $R -- yes flood > /dev/null &
pid=$!
sleep 8
kill -TERM $pid
wait $pid
echo "code_flood=$?"
echo "vmms_after_flood=$(vmms)"

# A process that ignores SIGTERM and spins: skiff stops the VM after its grace period.
/skiff/bin/skiff run --rootfs $R -- sh -c 'trap "" TERM; echo spinning; while :; do :; done' > /tmp/spin.out 2> /tmp/spin.err &
pid=$!
for i in $(seq 100); do grep -q spinning /tmp/spin.out && break; sleep 0.2; done
kill -TERM $pid
wait $pid
echo "code_spin=$?"
echo "spin_msg=$(cat /tmp/spin.err)"
echo "vmms_after_spin=$(vmms)"

# exec into a running VM.
skiff run --rootfs $R -- sh -c 'mkfifo /tmp/ctl; echo main > /tmp/main-was-here; read x < /tmp/ctl; echo "main-done-$x"' > /tmp/main.out &
pid=$!
for i in $(seq 200); do S=$(ls /run/skiff/run/*/vsock.sock 2>/dev/null) && [ -n "$S" ] && break; sleep 0.1; done
for i in $(seq 100); do skiff exec --vsock "$S" -- test -e /tmp/main-was-here 2>/dev/null && break; sleep 0.2; done
skiff exec --vsock "$S" -e X=42 -w /tmp -- sh -c 'echo "exec_out=$X $(pwd) $(cat /tmp/main-was-here)"; exit 3'
echo "code_exec=$?"
skiff exec --vsock "$S" -- no-such-program 2>/dev/null
echo "code_exec_notfound=$?"
skiff exec --vsock "$S" -- sh -c 'echo go > /tmp/ctl'
wait $pid
echo "code_main=$?"
echo "main_out=$(cat /tmp/main.out)"

# An exec still running when the container's main process ends dies with the container and
# still reports its status (137), before the VM powers off.
skiff run --rootfs $R -- sh -c 'mkfifo /tmp/ctl; read x < /tmp/ctl; exit 4' &
pid=$!
for i in $(seq 200); do S=$(ls /run/skiff/run/*/vsock.sock 2>/dev/null) && [ -n "$S" ] && break; sleep 0.1; done
for i in $(seq 100); do skiff exec --vsock "$S" -- test -p /tmp/ctl 2>/dev/null && break; sleep 0.2; done
skiff exec --vsock "$S" -- sh -c 'echo started; exec sleep 100' > /tmp/long.out 2> /tmp/long.err &
epid=$!
for i in $(seq 100); do grep -q started /tmp/long.out && break; sleep 0.2; done
skiff exec --vsock "$S" -- sh -c 'echo go > /tmp/ctl'
wait $epid
echo "code_exec_killed=$?"
echo "exec_killed_err=$(cat /tmp/long.err)"
wait $pid
echo "code_main_ended=$?"
echo "vmms_at_end=$(vmms)"
echo "leftover_run_dirs=$(ls /run/skiff/run | wc -l)"
"#;

#[test]
fn run_can_be_stopped_and_exec_reaches_a_running_vm() {
    let out = script(STOP_AND_EXEC, Duration::from_secs(500));
    let r = results(&out);
    expect(&r, "code_flood", "143", &out);
    expect(&r, "vmms_after_flood", "0", &out);
    expect(&r, "code_spin", "137", &out);
    expect(
        &r,
        "spin_msg",
        "skiff: the container did not exit within 10s of the signal; its VM was stopped",
        &out,
    );
    expect(&r, "vmms_after_spin", "0", &out);
    expect(&r, "exec_out", "42 /tmp main", &out);
    expect(&r, "code_exec", "3", &out);
    expect(&r, "code_exec_notfound", "127", &out);
    expect(&r, "code_main", "0", &out);
    expect(&r, "main_out", "main-done-go", &out);
    expect(&r, "code_exec_killed", "137", &out);
    expect(&r, "exec_killed_err", "", &out);
    expect(&r, "code_main_ended", "4", &out);
    expect(&r, "vmms_at_end", "0", &out);
    expect(&r, "leftover_run_dirs", "0", &out);
}

const PARALLEL: &str = r#"
# N VMs; each writes its marker, says ready, then waits on its stdin until all N are ready: they
# all run at the same time when they list the markers they can see.
round() {
    rm -f /tmp/go /tmp/par-*.out
    for i in $(seq $1); do
        (while [ ! -e /tmp/go ]; do sleep 0.1; done; echo go) |
            cut_off 240 /skiff/bin/skiff run --rootfs $R -- sh -c "echo $i > /marker-$i; echo ready; read x; echo \"seen$1-$i=\$(cat /marker-* | tr -d '\n')\"" > /tmp/par-$i.out 2>&1 &
    done
    # A VM that crashed never says ready: stop waiting for it, so the run ends in time for the
    # test host to report an emulator's triple fault (a retry) instead of timing out silently.
    for t in $(seq 1200); do
        n=$(cat /tmp/par-*.out 2>/dev/null | grep -c ready)
        crashed=$(cat /tmp/par-*.out 2>/dev/null | grep -c 'crashed or reset')
        [ $((n + crashed)) -ge $1 ] && break
        sleep 0.2
    done
    echo "ready$1=$n"
    touch /tmp/go
    wait
    cat /tmp/par-*.out
}
round 4
round 10
ls $R | grep -c marker | sed 's/^/markers_in_image=/'
"#;

#[test]
fn ten_parallel_vms_each_see_only_their_own_root() {
    let out = script(PARALLEL, Duration::from_secs(500));
    let r = results(&out);
    for n in [4, 10] {
        expect(&r, &format!("ready{n}"), &n.to_string(), &out);
        for i in 1..=n {
            expect(&r, &format!("seen{n}-{i}"), &i.to_string(), &out);
        }
    }
    expect(&r, "markers_in_image", "0", &out);
}

/// Builds, on the host, a two-layer OCI archive `skiff-test/layered:1`: busybox, an /etc/passwd
/// naming user `app` (1234:4321), /data/{old,kept}.txt, then a layer adding /data/new.txt and
/// whiting out old.txt; Entrypoint `sh -c`, a Cmd that reports env, ids, cwd and /data, User
/// `app`, WorkingDir /data.
const LAYERED_IMAGE: &str = r#"
set -eu
W=$1
mkdir -p "$W/l1/bin" "$W/l1/etc" "$W/l1/data" "$W/l2/data" "$W/share"
cp /bin/busybox "$W/l1/bin/busybox"
for a in sh echo cat ls id pwd tr; do ln -s busybox "$W/l1/bin/$a"; done
printf 'root:x:0:0::/root:/bin/sh\napp:x:1234:4321::/data:/bin/sh\n' >"$W/l1/etc/passwd"
echo old >"$W/l1/data/old.txt"
echo kept >"$W/l1/data/kept.txt"
echo new >"$W/l2/data/new.txt"
: >"$W/l2/data/.wh.old.txt"
chmod 0777 "$W/l1/data"
for l in l1 l2; do
    tar -C "$W/$l" --numeric-owner --owner=0 --group=0 --mtime=2024-01-01 -cf "$W/$l.tar" .
done
umoci init --layout "$W/oci" >/dev/null
umoci new --image "$W/oci:t"
umoci raw add-layer --image "$W/oci:t" "$W/l1.tar"
umoci raw add-layer --image "$W/oci:t" "$W/l2.tar"
umoci config --image "$W/oci:t" --config.env GREETING=from-image --config.env PATH=/bin \
    --config.workingdir /data --config.user app --config.entrypoint sh --config.entrypoint -c \
    --config.cmd 'echo "$GREETING $(id -u):$(id -g) $(pwd) $(ls /data | tr "\n" " ")"'
skopeo copy -q --insecure-policy "oci:$W/oci:t" "oci-archive:$W/share/image.tar:skiff-test/layered:1"
"#;

const RUN_IMAGE: &str = r#"
skiff load /testdata/img/image.tar >/dev/null || echo load_failed=1
I=skiff-test/layered:1
echo "default=$(skiff run $I)"
echo "override=$(skiff run -e GREETING=from-user -u 0 -w / $I 'echo "$GREETING $(id -u) $(pwd)"')"
echo "entrypoint=$(skiff run --entrypoint /bin/cat $I /data/kept.txt)"
skiff run -u 0 $I 'echo scribble >/data/kept.txt && rm /data/new.txt && exit 5'; echo "code=$?"
echo "after=$(skiff run $I 'echo $(cat /data/kept.txt) $(ls /data)')"
"#;

#[test]
fn run_image_uses_its_layers_whiteouts_and_config() {
    let work = tempfile::tempdir().expect("tempdir");
    skiff_tests::host_script(LAYERED_IMAGE, work.path());
    let out = TestHost::new()
        .timeout(Duration::from_secs(300))
        .mem_mib(2048)
        .data(work.path().join("share"), "img")
        .run(&["sh", "-c", RUN_IMAGE]);
    let r = results(&out);
    assert!(!r.contains_key("load_failed"), "{out}");
    // Cmd through Entrypoint, the image's env, its User resolved by name, its WorkingDir, and
    // the upper layer's whiteout hiding old.txt.
    expect(
        &r,
        "default",
        "from-image 1234:4321 /data kept.txt new.txt ",
        &out,
    );
    // The user's -e, -u, -w and arguments win; the entrypoint stays.
    expect(&r, "override", "from-user 0 /", &out);
    expect(&r, "entrypoint", "kept", &out);
    expect(&r, "code", "5", &out);
    // Each run gets its own copy-on-write upper: the previous run's writes are gone.
    expect(&r, "after", "kept kept.txt new.txt", &out);
}
