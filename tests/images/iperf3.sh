#!/usr/bin/env bash
# Builds, on the host, a busybox root filesystem with the host's iperf3 (Debian's package `iperf3`,
# installed when missing) and the shared libraries it loads, at the paths ldd gives, for network
# benchmarks: tests/images/iperf3.sh DIR
# Writes the tree to DIR/iperf3-root (for `skiff run --rootfs`, or an initramfs) and a one-layer
# OCI archive of it tagged skiff-test/iperf3:1 (Cmd iperf3 -s, PATH=/bin:/usr/bin) to
# DIR/share/image-iperf3.tar.
set -euo pipefail
W=${1:?usage: tests/images/iperf3.sh DIR}
if ! command -v iperf3 >/dev/null; then
    echo "iperf3.sh: installing iperf3" >&2
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q iperf3 >&2
fi
R="$W/iperf3-root"
rm -rf "$R" "$W/iperf3-oci" "$W/iperf3-layer.tar"
mkdir -p "$R/bin" "$R/usr/bin" "$R/etc" "$R/tmp" "$R/proc" "$R/sys" "$R/dev" "$R/root" "$W/share"
chmod 1777 "$R/tmp"
cp /bin/busybox "$R/bin/busybox"
for a in $(/bin/busybox --list); do [[ -e "$R/bin/$a" ]] || ln -s busybox "$R/bin/$a"; done
iperf3=$(command -v iperf3)
cp -L "$iperf3" "$R/usr/bin/iperf3"
mapfile -t libs < <(ldd "$iperf3" | sed -n 's/^.* => \(\/[^ ]*\) (0x.*$/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (0x.*$/\1/p')
((${#libs[@]})) || { echo "iperf3.sh: ldd $iperf3 lists no libraries" >&2; exit 1; }
for l in "${libs[@]}"; do
    mkdir -p "$R$(dirname "$l")"
    cp -L "$l" "$R$l"
done
printf 'root:x:0:0::/root:/bin/sh\n' >"$R/etc/passwd"
printf 'root:x:0:\n' >"$R/etc/group"
tar -C "$R" --numeric-owner --owner=0 --group=0 --mtime=2024-01-01 -cf "$W/iperf3-layer.tar" .
umoci init --layout "$W/iperf3-oci" >/dev/null
umoci new --image "$W/iperf3-oci:t"
umoci raw add-layer --image "$W/iperf3-oci:t" "$W/iperf3-layer.tar"
umoci config --image "$W/iperf3-oci:t" --config.env PATH=/bin:/usr/bin --config.cmd iperf3 --config.cmd -s \
    --config.exposedports 5201/tcp
skopeo copy -q --insecure-policy "oci:$W/iperf3-oci:t" "oci-archive:$W/share/image-iperf3.tar:skiff-test/iperf3:1"
rm -rf "$W/iperf3-oci" "$W/iperf3-layer.tar"
