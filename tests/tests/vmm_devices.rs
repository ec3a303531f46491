//! The VMM's devices under a real guest kernel, in the nested test host: the kernel mounts the
//! in-process virtio-fs share of a copy-on-write overlay root (two read-only layers and an upper)
//! and runs a shell script from it as init.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use skiff_tests::testhost::TestHost;

/// Runs as PID 1 from the virtio-fs root and reports what it sees on the console.
const GUEST_INIT: &str = r#"#!/bin/sh
mount -t proc proc /proc
mount -t devtmpfs dev /dev
echo "guest: root $(grep ' / ' /proc/mounts)"
echo "guest: layer file $(cat /layer-file)"
echo "guest: busybox layer $(test -x /bin/busybox && echo present)"
echo "written by the guest" > /guest-file
rm /delete-me
mkdir /guest-dir && echo nested > /guest-dir/inner
for i in 1 2 3; do
    dd if=/dev/zero of=/guest-big bs=64k count=32 2>/dev/null
done
echo "guest: big $(wc -c < /guest-big)"
echo "guest: busybox read $(cat /bin/busybox | wc -c | grep -q '^[1-9]' && echo ok)"
echo "guest: entries $(find / -xdev | wc -l | grep -q '^[1-9][0-9][0-9]' && echo many)"
echo "guest: reread $(cat /guest-file)"
sync
echo "guest: done"
"#;

/// Runs in the test host: boots the guest, then inspects the upper and lower layers.
const HOST_SCRIPT: &str = r#"
before=$(cd /testdata/devlayer && md5sum layer-file delete-me init.sh)
mkdir -p /tmp/container
start=$(date +%s)
timeout 200 skiff-vmm --kernel "$SKIFF_KERNEL" --memory 256 \
    --rootfs-layer /testdata/devlayer --rootfs-layer /testdata/busybox \
    --rootfs-upper /tmp/container --serial - \
    --cmdline-extra "rootfstype=virtiofs root=rootfs rw init=/init.sh"
rc=$?
echo "host: vmm exit $rc"
echo "host: upper file $(cat /tmp/container/upper/guest-file)"
echo "host: upper nested $(cat /tmp/container/upper/guest-dir/inner)"
echo "host: upper big $(wc -c < /tmp/container/upper/guest-big)"
echo "host: whiteout $(stat -c '%F %t:%T' /tmp/container/upper/delete-me)"
after=$(cd /testdata/devlayer && md5sum layer-file delete-me init.sh)
[ "$before" = "$after" ] && echo "host: lower layer unchanged"
# A boot that ran out its 200 s hung: a fault of the nested machine, which the harness tries once
# more when the run exits 124. (By time: the test host's busybox `timeout` exits 143.)
[ $(($(date +%s) - start)) -lt 200 ] || exit 124
"#;

fn write_layer(dir: &Path) {
    let init = dir.join("init.sh");
    std::fs::write(&init, GUEST_INIT).expect("write init");
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(dir.join("layer-file"), "from the top layer\n").expect("write");
    std::fs::write(dir.join("delete-me"), "doomed\n").expect("write");
}

#[test]
fn the_guest_kernel_runs_from_a_virtio_fs_overlay_root_and_writes_land_in_the_upper() {
    let layer = tempfile::tempdir().expect("tempdir");
    write_layer(layer.path());
    let out = TestHost::new()
        .timeout(Duration::from_secs(400))
        .data(layer.path(), "devlayer")
        .sh(HOST_SCRIPT);
    out.assert_success();
    let guest: Vec<&str> = out.lines_with_prefix("guest: ").collect();
    let host: Vec<&str> = out.lines_with_prefix("host: ").collect();
    assert!(
        guest
            .first()
            .is_some_and(|l| l.starts_with("root rootfs / virtiofs rw")),
        "{out}"
    );
    assert_eq!(
        guest.get(1..),
        Some(
            &[
                "layer file from the top layer",
                "busybox layer present",
                "big 2097152",
                "busybox read ok",
                "entries many",
                "reread written by the guest",
                "done",
            ][..]
        ),
        "{out}"
    );
    assert_eq!(
        host,
        [
            // init returning panics the kernel, which resets: skiff-vmm's "guest reset" status.
            "vmm exit 2",
            "upper file written by the guest",
            "upper nested nested",
            "upper big 2097152",
            "whiteout character special file 0:0",
            "lower layer unchanged",
        ],
        "{out}"
    );
}
