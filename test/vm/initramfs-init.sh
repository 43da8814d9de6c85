#!/bin/busybox sh
# shellcheck shell=dash disable=SC2093
# /init of the test VM's initramfs (copied there by test/vm/setup.sh).
#
# Loads the modules listed in /modules.load, mounts the host root read-only
# over 9p (tag "root") and the per-run results share (tag "results",
# writable), puts tmpfs on /run /tmp /var, then switch_roots into the host
# root and runs /run/vm/stage2.sh (written by run-in-vm.sh) with bash.
#
# Kernel command-line KEY=VAL words reach us as environment variables:
#   vm_rootcache   9p cache mode of the root share (default: loose)
#   vm_msize       9p msize (default: 512000)
/bin/busybox mkdir -p /proc /sys /dev /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys

fail() {
    echo "vm-init: FATAL: $*"
    # make qemu exit (-no-reboot); run-in-vm.sh reports a missing status
    echo b > /proc/sysrq-trigger
    sleep 10
    exit 1
}

while read -r m; do
    [ -n "$m" ] || continue
    out=$(insmod "/lib/modules/$m" 2>&1) || case "$out" in
        *"File exists"*) ;;
        *) echo "vm-init: warning: insmod $m: $out" ;;
    esac
done < /modules.load

msize=${vm_msize:-512000}
rootcache=${vm_rootcache:-loose}
R=/newroot
mkdir -p $R
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=$msize,cache=$rootcache root $R ||
    fail "cannot mount the host root (9p tag 'root')"

mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs $R/run || fail "tmpfs on /run"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs $R/tmp || fail "tmpfs on /tmp"
mount -t tmpfs -o mode=0755 tmpfs $R/var || fail "tmpfs on /var"
mkdir -p $R/run/vm $R/run/lock $R/var/tmp $R/var/lib $R/var/cache $R/var/log $R/var/spool
chmod 1777 $R/var/tmp
ln -s ../run $R/var/run
ln -s ../run/lock $R/var/lock
mount -t 9p -o trans=virtio,version=9p2000.L,msize=$msize,cache=none results $R/run/vm ||
    fail "cannot mount the results share (9p tag 'results')"
[ -f $R/run/vm/stage2.sh ] || fail "no stage2.sh in the results share"
[ -x $R/bin/bash ] || fail "the host root has no /bin/bash"

mount --move /dev $R/dev
mount --move /proc $R/proc
mount --move /sys $R/sys
exec switch_root $R /bin/bash /run/vm/stage2.sh
fail "switch_root failed"
