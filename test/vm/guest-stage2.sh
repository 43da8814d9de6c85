#!/bin/bash
# Second stage of the test VM's init: PID 1 after switch_root into the host
# root (read-only 9p). run-in-vm.sh copies this file into the per-run results
# share, which the initramfs mounts at /run/vm. It finishes the mounts, runs
# the command from /run/vm/cmd.sh, writes its exit status to /run/vm/status
# and powers the VM off.
#
# Files in /run/vm (written by run-in-vm.sh):
#   config   bash, sourced: VM_KVER VM_KROOT, VM_RW_SHARES ("tag:path" words), VM_REPO
#   env      bash, sourced by the command's shell: exported variables
#   cmd.sh   the command (cd to the working directory, then exec argv)
R=/run/vm
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

log() { echo "vm-stage2: $*" >/dev/console; }
halt_now() {
    sync
    echo b > /proc/sysrq-trigger      # qemu runs with -no-reboot: this ends it
    sleep 10
}
fatal() { log "FATAL: $*"; echo "$*" > $R/fatal; halt_now; }
trap 'fatal "stage2 exited unexpectedly"' EXIT

# shellcheck disable=SC1091
. $R/config || fatal "cannot read $R/config"

mountpoint -q /sys/fs/bpf || mount -t bpf -o mode=0700 bpf /sys/fs/bpf || fatal "cannot mount bpffs"
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup 2>/dev/null || log "warning: no cgroup2"
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts /dev/pts 2>/dev/null || true
[ -e /dev/ptmx ] || ln -s pts/ptmx /dev/ptmx
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
# "ip netns add" bind-mounts files under /run/netns and needs shared propagation
mount --make-rshared /

# The repository, read-only at its host path: the root share shows it too,
# unless it lives under /tmp, /run or /var, which are tmpfs in here (a CI
# clone under /tmp, for example).
if [ -n "${VM_REPO:-}" ]; then
    mkdir -p "$VM_REPO" 2>/dev/null
    mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000,cache=mmap repo "$VM_REPO" ||
        fatal "cannot mount the repository share on $VM_REPO"
fi

# Writable 9p shares asked for with VM_RW_DIRS, mounted over their host path
for share in ${VM_RW_SHARES:-}; do
    tag=${share%%:*} dir=${share#*:}
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=mmap "$tag" "$dir" ||
        fatal "cannot mount writable share $tag on $dir"
done

# modprobe inside the VM: the host root has no /lib/modules for this kernel,
# so point kmod at the unpacked kernel package in the cache (visible over 9p).
mkdir -p /run/vm-bin
cat > /run/vm-bin/modprobe <<EOF
#!/bin/sh
exec /sbin/modprobe -d '$VM_KROOT' "\$@"
EOF
chmod 0755 /run/vm-bin/modprobe
[ -x /sbin/modprobe ] && echo /run/vm-bin/modprobe > /proc/sys/kernel/modprobe

ip link set lo up 2>/dev/null
hostname preserve-dscp-vm 2>/dev/null
echo 1 > /proc/sys/kernel/printk_ratelimit 2>/dev/null

# The command's stdout/stderr go to two virtio-serial ports whose qemu side
# are files in the run folder on the host (streamed by run-in-vm.sh).
port() {
    local p
    for p in /sys/class/virtio-ports/*; do
        [ "$(cat "$p/name" 2>/dev/null)" = "$1" ] && { echo "/dev/${p##*/}"; return 0; }
    done
    return 1
}
OUT=$(port vm.stdout) || fatal "no virtio port vm.stdout"
ERR=$(port vm.stderr) || fatal "no virtio port vm.stderr"

mkdir -p /tmp/home
: > $R/started
env -i \
    PATH="/run/vm-bin:$PATH" HOME=/tmp/home USER=root LOGNAME=root SHELL=/bin/bash \
    TERM=dumb LANG=C.UTF-8 TMPDIR=/tmp PRESERVE_DSCP_VM=1 \
    /bin/bash -c '. /run/vm/env && . /run/vm/cmd.sh' </dev/null >"$OUT" 2>"$ERR"
rc=$?
echo "$rc" > $R/status.tmp && mv $R/status.tmp $R/status
trap - EXIT
halt_now
