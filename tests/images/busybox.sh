#!/usr/bin/env bash
# Builds, on the host, a one-layer OCI archive of busybox tagged skiff-test/busybox:1 (Cmd sh,
# PATH=/bin) at DIR/share/image.tar, for tests and benchmarks: tests/images/busybox.sh DIR
# Also DIR/share/image-vol.tar, skiff-test/busybox:vol: the same plus a layer with /seed/file
# (owner 7:8, mode 0640) and the config's VOLUME /seed.
set -eu
W=$1
mkdir -p "$W/root/bin" "$W/root/etc" "$W/root/tmp" "$W/share"
cp /bin/busybox "$W/root/bin/busybox"
for a in sh echo cat ls id sleep seq true false mkdir grep cut head tail hostname ip nc httpd nslookup ping; do ln -s busybox "$W/root/bin/$a"; done
printf 'root:x:0:0::/root:/bin/sh\n' >"$W/root/etc/passwd"
tar -C "$W/root" --numeric-owner --owner=0 --group=0 --mtime=2024-01-01 -cf "$W/l.tar" .
umoci init --layout "$W/oci" >/dev/null
umoci new --image "$W/oci:t"
umoci raw add-layer --image "$W/oci:t" "$W/l.tar"
umoci config --image "$W/oci:t" --config.env PATH=/bin --config.cmd sh --config.exposedports 80/tcp
skopeo copy -q --insecure-policy "oci:$W/oci:t" "oci-archive:$W/share/image.tar:skiff-test/busybox:1"
mkdir -p "$W/vol/seed"
echo seeded >"$W/vol/seed/file" && chmod 0640 "$W/vol/seed/file"
tar -C "$W/vol" --numeric-owner --owner=7 --group=8 --mtime=2024-01-01 -cf "$W/v.tar" .
umoci raw add-layer --image "$W/oci:t" --tag v "$W/v.tar"
umoci config --image "$W/oci:v" --config.volume /seed
skopeo copy -q --insecure-policy "oci:$W/oci:v" "oci-archive:$W/share/image-vol.tar:skiff-test/busybox:vol"
