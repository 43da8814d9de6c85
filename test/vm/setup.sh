#!/usr/bin/env bash
# test/vm/setup.sh — prepare the test VM: Debian's 6.1 kernel (which has
# WireGuard) plus a busybox initramfs that mounts the host root over 9p.
#
# Idempotent. Installs nothing on the system: everything goes to a cache
# folder, by default <repo>/.cache/vm (override with PRESERVE_DSCP_VM_CACHE).
#
# Host packages it needs (Debian 12):
#   apt-get install -y --no-install-recommends \
#       qemu-system-x86 busybox-static kmod cpio wireguard-tools
#   (also used, normally present: apt, dpkg, gzip, coreutils, util-linux;
#    the smoke test also needs iproute2, iputils-ping and tcpdump)
#
# Environment:
#   PRESERVE_DSCP_VM_CACHE    cache folder (default <repo>/.cache/vm)
#   PRESERVE_DSCP_VM_KERNEL   kernel ABI to use, e.g. 6.1.0-56-amd64
#                             (default: the one linux-image-amd64 depends on,
#                             resolved once and then kept in the cache)
#   PRESERVE_DSCP_VM_REFRESH=1  re-resolve the kernel version with apt
#   PRESERVE_DSCP_VM_MODULES  extra modules (space separated) to put in the
#                             initramfs and load at boot
#
# Usage: setup.sh            build what is missing, one line per step
#        setup.sh --check    exit 0 if everything is ready, 1 if not (silent)
#        setup.sh --print-env  print the paths run-in-vm.sh uses
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${PRESERVE_DSCP_VM_CACHE:-$REPO/.cache/vm}
MODE=${1:-build}
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"     # depmod, modprobe

# Modules the VM cannot work without (9p root, output ports, the tests' core).
CORE_MODULES="virtio_pci 9pnet_virtio 9p virtio_console wireguard veth sch_ingress cls_bpf"
# Nice to have; skipped with a note when the kernel does not ship them.
OPTIONAL_MODULES="udp_tunnel ip6_udp_tunnel ipv6 vxlan tun sch_tbf sch_netem 8021q dummy ifb \
act_mirred act_gact cls_u32 cls_matchall cls_flower sch_prio sch_htb sch_fq_codel bridge"
EXTRA_MODULES=${PRESERVE_DSCP_VM_MODULES:-}

say() { [ "$MODE" = build ] && echo "vm-setup: $*"; return 0; }
die() { echo "vm-setup: error: $*" >&2; exit 1; }

need() { # need <command> <apt package>
    command -v "$1" >/dev/null 2>&1 ||
        die "'$1' not found; install it with: apt-get install -y $2"
}

find_busybox() {
    local b
    for b in /bin/busybox /usr/bin/busybox "$(command -v busybox 2>/dev/null || true)"; do
        [ -n "$b" ] && [ -x "$b" ] || continue
        # ldd exits non-zero for a static binary
        if ! ldd "$b" >/dev/null 2>&1; then echo "$b"; return 0; fi
    done
    return 1
}

check_tools() {
    need apt-get apt
    need apt-cache apt
    need dpkg-deb dpkg
    need depmod kmod
    need modprobe kmod
    need cpio cpio
    need gzip gzip
    need xz xz-utils
    need flock util-linux
    need sha256sum coreutils
    need qemu-system-x86_64 qemu-system-x86
    find_busybox >/dev/null || die "no static busybox found; install it with: apt-get install -y busybox-static"
}

# --- kernel version -----------------------------------------------------------
resolve_kver() {
    if [ -n "${PRESERVE_DSCP_VM_KERNEL:-}" ]; then echo "$PRESERVE_DSCP_VM_KERNEL"; return; fi
    if [ "${PRESERVE_DSCP_VM_REFRESH:-0}" != 1 ] && [ -s "$CACHE/kernel-version" ]; then
        cat "$CACHE/kernel-version"; return
    fi
    local v
    v=$(apt-cache depends linux-image-amd64 2>/dev/null |
        sed -n 's/^ *Depends: linux-image-\(6\.1\.[0-9]*-[0-9]*-amd64\)$/\1/p' | head -n1)
    if [ -z "$v" ]; then
        v=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' 2>/dev/null |
            sed -n 's/^linux-image-\(6\.1\.0-[0-9]*-amd64\) .*/\1/p' | sort -t- -k2,2n | tail -n1)
    fi
    [ -n "$v" ] || die "cannot find a linux-image-6.1.0-*-amd64 package (run 'apt-get update' first?)"
    echo "$v"
}

modules_wanted() { echo "$CORE_MODULES $OPTIONAL_MODULES $EXTRA_MODULES"; }

stamp_of() { # what the initramfs depends on
    {
        echo "$KVER"
        modules_wanted
        cat "$HERE/setup.sh" "$HERE/initramfs-init.sh"
        sha256sum "$BUSYBOX" | cut -d' ' -f1
    } | sha256sum | cut -d' ' -f1
}

set_paths() {
    KROOT=$CACHE/kernel/$KVER           # dpkg-deb -x of the kernel package
    VMLINUZ=$KROOT/boot/vmlinuz-$KVER
    VMLINUX=$KROOT/boot/vmlinux-$KVER  # uncompressed: qemu boots it via PVH
    INITRD=$CACHE/initramfs-$KVER.cpio.gz
    STAMP=$CACHE/initramfs-$KVER.stamp
}

is_ready() {
    [ -s "$VMLINUZ" ] && [ -s "$INITRD" ] && [ -f "$VMLINUX" ] && [ -f "$KROOT/lib/modules/$KVER/modules.dep" ] &&
        [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_of)" ]
}

print_env() {
    echo "KVER=$KVER"
    echo "KROOT=$KROOT"
    # the uncompressed ELF boots ~3 s faster under TCG (no decompression)
    if [ -s "$VMLINUX" ]; then echo "VMLINUZ=$VMLINUX"; else echo "VMLINUZ=$VMLINUZ"; fi
    echo "INITRD=$INITRD"
}

build_kernel() {
    local debdir=$CACHE/debs pkg=linux-image-$KVER deb
    mkdir -p "$debdir"
    deb=$(ls "$debdir"/"${pkg}"_*.deb 2>/dev/null | head -n1 || true)
    if [ -z "$deb" ]; then
        say "downloading $pkg (apt-get download)"
        (cd "$debdir" && apt-get download -q "$pkg" >/dev/null 2>"$debdir/download.log") ||
            die "apt-get download $pkg failed (see $debdir/download.log; try 'apt-get update')"
        deb=$(ls "$debdir"/"${pkg}"_*.deb | head -n1)
    else
        say "kernel package: cached $(basename "$deb")"
    fi
    if [ ! -s "$VMLINUZ" ] || [ ! -d "$KROOT/lib/modules/$KVER" ]; then
        say "unpacking $(basename "$deb")"
        rm -rf "$KROOT.tmp"
        mkdir -p "$KROOT.tmp"
        dpkg-deb -x "$deb" "$KROOT.tmp" || die "dpkg-deb -x $deb failed"
        rm -rf "$KROOT.tmp/usr/share"            # docs only
        rm -rf "$KROOT"
        mv "$KROOT.tmp" "$KROOT"
    else
        say "kernel: unpacked in $KROOT"
    fi
    [ -s "$VMLINUZ" ] || die "no $VMLINUZ in $deb"
    if [ ! -f "$VMLINUX" ]; then
        # Under TCG, decompressing the bzImage takes ~3 s of every boot; qemu
        # can boot the plain ELF through its PVH entry point instead.
        local off=""
        if grep -q '^CONFIG_PVH=y' "$KROOT/boot/config-$KVER" 2>/dev/null; then
            off=$(LC_ALL=C grep -m1 -obUaP '\xfd7zXZ\x00' "$VMLINUZ" | cut -d: -f1 | head -n1) || off=""
        fi
        # (xz stops after the first stream: no pipe, or tail's SIGPIPE fails it)
        if [ -n "$off" ] && xz -dc --single-stream < <(tail -c +$((off + 1)) "$VMLINUZ") > "$VMLINUX.tmp" 2>/dev/null &&
            [ "$(head -c 4 "$VMLINUX.tmp" | od -An -c | tr -d ' ')" = '177ELF' ]; then
            mv "$VMLINUX.tmp" "$VMLINUX"
            say "extracted vmlinux (PVH boot, skips decompression)"
        else
            rm -f "$VMLINUX.tmp"
            : > "$VMLINUX"            # empty marker: boot the bzImage
            say "no PVH vmlinux could be extracted; booting the bzImage"
        fi
    fi
    if [ ! -f "$KROOT/lib/modules/$KVER/modules.dep" ]; then
        say "depmod $KVER"
        depmod -b "$KROOT" "$KVER" || die "depmod -b $KROOT $KVER failed"
    fi
}

build_initramfs() {
    local work=$CACHE/initramfs-$KVER.d m line ko rel list missing=""
    say "building initramfs ($(basename "$INITRD"))"
    rm -rf "$work"
    mkdir -p "$work"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,newroot,lib/modules}
    cp "$BUSYBOX" "$work/bin/busybox"
    cp "$HERE/initramfs-init.sh" "$work/init"
    chmod 0755 "$work/init" "$work/bin/busybox"
    echo "$KVER" > "$work/kernel-version"

    list=$work/modules.load
    : > "$list"
    for m in $(modules_wanted); do
        if ! line=$(modprobe -d "$KROOT" -S "$KVER" --show-depends "$m" 2>/dev/null); then
            case " $CORE_MODULES " in
            *" $m "*) die "kernel $KVER has no module '$m', which the VM needs" ;;
            esac
            missing="$missing $m"
            continue
        fi
        while read -r kind ko _; do
            [ "$kind" = insmod ] || continue          # "builtin X" needs nothing
            rel=${ko#"$KROOT"/lib/modules/"$KVER"/}
            grep -qxF "$rel" "$list" && continue
            mkdir -p "$work/lib/modules/$(dirname "$rel")"
            cp "$ko" "$work/lib/modules/$rel"
            echo "$rel" >> "$list"
        done <<< "$line"
    done
    say "initramfs: $(wc -l < "$list") modules${missing:+ (not in this kernel:$missing)}"

    # /dev/console lets the kernel give init a console before devtmpfs is up
    # (init re-opens it after mounting devtmpfs anyway, so non-root is fine)
    mknod -m 600 "$work/dev/console" c 5 1 2>/dev/null || true
    (cd "$work" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) |
        gzip -6 > "$INITRD.tmp" || die "cpio/gzip of the initramfs failed"
    mv "$INITRD.tmp" "$INITRD"
    rm -rf "$work"
    stamp_of > "$STAMP"
    say "initramfs ready: $INITRD ($(du -h "$INITRD" | cut -f1))"
}

# --- main ---------------------------------------------------------------------
case "$MODE" in
build | --check | --print-env) ;;
*) die "usage: setup.sh [--check|--print-env]" ;;
esac
[ "$MODE" = --check ] && MODE=check

if [ "$MODE" = check ]; then
    BUSYBOX=$(find_busybox) || exit 1
    [ -s "$CACHE/kernel-version" ] || [ -n "${PRESERVE_DSCP_VM_KERNEL:-}" ] || exit 1
    KVER=$(resolve_kver) || exit 1
    set_paths
    is_ready
    exit
fi

check_tools
BUSYBOX=$(find_busybox)
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9                      # one setup at a time (parallel run-in-vm.sh)

KVER=$(resolve_kver)
set_paths
if [ "$MODE" = --print-env ]; then
    is_ready || die "VM not built yet; run $HERE/setup.sh"
    print_env
    exit 0
fi

say "cache: $CACHE"
say "kernel: linux-image-$KVER"
build_kernel
echo "$KVER" > "$CACHE/kernel-version"
if is_ready; then
    say "initramfs: up to date ($INITRD)"
else
    build_initramfs
fi
say "ready"
