#!/usr/bin/env bash
# Builds the lab images with debootstrap and imports them into podman:
#   full   localhost/guardrail-lab:debian12  packages.txt, a real Docker daemon
#          and a busybox task image tarball (/usr/local/share/lab/busybox.tar,
#          for `docker import`; no registry is needed)
#   stock  localhost/guardrail-lab:stock     minbase + python3, systemd and
#          iptables: nothing else a role needs, no directory pre-created
# Each image is tagged with a hash of its recipe, so an unchanged recipe is
# never rebuilt; the moving tags point at the hashed ones.
# Usage: build-image.sh [full|stock ...]   (default: both)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}
# GUARDRAIL_LAB_MIRROR picks a Debian mirror; unset, debootstrap uses its own default.
mirror=${GUARDRAIL_LAB_MIRROR:-}
# The build directory of the image being built, removed on return and on exit
# (an interrupted build leaves nothing behind, and mounts debootstrap left are
# unmounted first so that rm never crosses into them).
lab_work=""

cleanup() {
    [ -n "$lab_work" ] || return 0
    local m
    for m in proc sys dev; do
        if mountpoint -q "$lab_work/root/$m" 2>/dev/null; then
            umount -R "$lab_work/root/$m" || echo "build-image: cannot unmount $lab_work/root/$m" >&2
        fi
    done
    rm -rf --one-file-system "$lab_work" || echo "build-image: cannot remove $lab_work" >&2
    lab_work=""
}
trap cleanup EXIT

recipe_hash() {
    (echo "$1"; cat "$here/build-image.sh" "$here/packages.txt" "$here/lab-init") | sha256sum | cut -c1-12
}

build() {
    local flavour=$1 packages alias_tag image start work
    case $flavour in
        full) alias_tag=localhost/guardrail-lab:debian12
              packages=$(grep -v '^#' "$here/packages.txt" | grep . | paste -sd, -) ;;
        stock) alias_tag=localhost/guardrail-lab:stock
               packages=python3,systemd,systemd-sysv,iptables ;;
        *) echo "build-image: unknown image '$flavour' (full or stock)" >&2; return 2 ;;
    esac
    image=localhost/guardrail-lab:$flavour-$(recipe_hash "$flavour")
    if podman image exists "$image"; then
        podman tag "$image" "$alias_tag"
        echo "lab image $image is cached (recipe unchanged)"
        return 0
    fi
    start=$(date +%s)
    lab_work=$(mktemp -d /var/tmp/guardrail-lab.XXXXXX)
    work=$lab_work
    local mirror_arg=()
    [ -z "$mirror" ] || mirror_arg=("$mirror")
    echo "building $image with debootstrap${mirror:+ from $mirror}"
    DEBIAN_FRONTEND=noninteractive debootstrap --variant=minbase --include="$packages" \
        bookworm "$work/root" "${mirror_arg[@]}" > "$work/debootstrap.log" 2>&1 || {
        tail -n 30 "$work/debootstrap.log" >&2; return 1; }
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
    if [ "$flavour" = full ]; then
        # Docker in a privileged podman container: it picks vfs by itself; its
        # containers need a cgroup namespace of their own.
        mkdir -p "$work/root/etc/docker" "$work/root/usr/local/share/lab"
        printf '{\n  "default-cgroupns-mode": "private"\n}\n' > "$work/root/etc/docker/daemon.json"
        # The task image: busybox-static and its applet links, as a tarball.
        mkdir -p "$work/busybox/bin"
        cp "$work/root/bin/busybox" "$work/busybox/bin/busybox"
        for applet in $(chroot "$work/root" /bin/busybox --list); do
            [ "$applet" = busybox ] || ln -s busybox "$work/busybox/bin/$applet"
        done
        tar -C "$work/busybox" -cf "$work/root/usr/local/share/lab/busybox.tar" .
        ln -sf /lib/systemd/system/docker.service \
            "$work/root/etc/systemd/system/multi-user.target.wants/docker.service"
    fi
    echo guardrail-lab > "$work/root/etc/hostname"
    rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*
    tar -C "$work/root" -c . | podman import \
        --change 'CMD ["/usr/local/sbin/lab-init"]' \
        --change 'STOPSIGNAL SIGRTMIN+3' \
        --change 'ENV container=podman' \
        - "$image" >/dev/null
    podman tag "$image" "$alias_tag"
    echo "built $image ($alias_tag) in $(( $(date +%s) - start ))s"
    cleanup
}

for tool in debootstrap podman; do
    command -v "$tool" >/dev/null || { echo "build-image: $tool is missing; run 'make bootstrap' as root" >&2; exit 1; }
done
flavours=("$@")
[ ${#flavours[@]} -gt 0 ] || flavours=(full stock)
for flavour in "${flavours[@]}"; do
    case $flavour in full|stock) ;; *) echo "build-image: unknown image '$flavour' (full or stock)" >&2; exit 2 ;; esac
done
need_root=0
for flavour in "${flavours[@]}"; do
    podman image exists "localhost/guardrail-lab:$flavour-$(recipe_hash "$flavour")" || need_root=1
done
[ "$need_root" -eq 0 ] || [ "$(id -u)" -eq 0 ] || { echo "build-image: debootstrap needs root" >&2; exit 1; }
for flavour in "${flavours[@]}"; do
    build "$flavour"
done
