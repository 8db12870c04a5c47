#!/usr/bin/env bash
# Builds the Debian 12 systemd lab image with debootstrap and imports it into
# podman. The image is tagged with a hash of this recipe, so an unchanged
# recipe is never rebuilt; the moving tag guardrail-lab:debian12 points at it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
mirror=${GUARDRAIL_LAB_MIRROR:-http://deb.debian.org/debian}
recipe_hash=$(cat "$here/build-image.sh" "$here/packages.txt" "$here/lab-init" | sha256sum | cut -c1-12)
image=localhost/guardrail-lab:$recipe_hash
alias_tag=localhost/guardrail-lab:debian12

if podman image exists "$image"; then
    podman tag "$image" "$alias_tag"
    echo "lab image $image is cached (recipe unchanged)"
    exit 0
fi
for tool in debootstrap podman; do
    command -v "$tool" >/dev/null || { echo "build-image: $tool is missing; run 'make bootstrap' as root" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "build-image: debootstrap needs root" >&2; exit 1; }

start=$(date +%s)
work=$(mktemp -d /var/tmp/guardrail-lab.XXXXXX)
trap 'umount -R "$work/root/proc" "$work/root/sys" "$work/root/dev" 2>/dev/null || true; rm -rf "$work"' EXIT
packages=$(grep -v '^#' "$here/packages.txt" | grep . | paste -sd, -)
echo "building $image with debootstrap from $mirror"
DEBIAN_FRONTEND=noninteractive debootstrap --variant=minbase --include="$packages" \
    bookworm "$work/root" "$mirror" > "$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
install -m 0755 "$here/lab-init" "$work/root/usr/local/sbin/lab-init"
# Lab hosts have no console and no hardware: keep units that expect them quiet.
# binfmt_misc is shared with the machine on older kernels, and the kernel here
# has no NFS client for rpc_pipefs.
for unit in getty@tty1.service serial-getty@.service systemd-udevd.service \
            systemd-udev-trigger.service systemd-modules-load.service \
            proc-sys-fs-binfmt_misc.automount proc-sys-fs-binfmt_misc.mount \
            systemd-binfmt.service run-rpc_pipefs.mount rpc_pipefs.target; do
    ln -sf /dev/null "$work/root/etc/systemd/system/$unit"
done
echo guardrail-lab > "$work/root/etc/hostname"
rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*
tar -C "$work/root" -c . | podman import \
    --change 'CMD ["/usr/local/sbin/lab-init"]' \
    --change 'STOPSIGNAL SIGRTMIN+3' \
    --change 'ENV container=podman' \
    - "$image" >/dev/null
podman tag "$image" "$alias_tag"
echo "built $image in $(( $(date +%s) - start ))s"
