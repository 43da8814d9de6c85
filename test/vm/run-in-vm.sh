#!/usr/bin/env bash
# test/vm/run-in-vm.sh <command> [args...]
#
# Boots Debian's 6.1 kernel (with WireGuard) under qemu (TCG), with the host
# root shared read-only over 9p, and runs <command> in it as root, in the
# current directory (same path inside), with /tmp, /run and /var on tmpfs.
# The command's stdout and stderr are streamed to ours; we exit with its
# exit status.
#
# Exit status: the command's; 124 if VM_TIMEOUT expired (qemu is killed);
# 125 if the VM failed (boot failure, kernel panic/oops, qemu error).
#
# Environment:
#   VM_TIMEOUT=600     seconds before qemu is killed (exit 124)
#   VM_MEM=2G VM_CPUS=2
#   VM_PASS_ENV="A B"  host variables to pass to the command (CI is always
#                      passed when set)
#   VM_RW_DIRS="/dir"  host folders to share writable, mounted over the same
#                      path inside (everything else is read-only)
#   VM_VERBOSE=1       print boot/run timings on stderr
#   VM_DEBUG=1         stream the kernel console to stderr (and drop "quiet")
#   VM_KEEP=1          keep the run folder (<cache>/runs/...) for inspection
#   VM_KERNEL_ARGS     extra kernel command-line words
#   PRESERVE_DSCP_VM_CACHE  see setup.sh
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${PRESERVE_DSCP_VM_CACHE:-$REPO/.cache/vm}
export PRESERVE_DSCP_VM_CACHE=$CACHE

die() { echo "run-in-vm: $*" >&2; exit 125; }
[ $# -gt 0 ] || die "usage: run-in-vm.sh <command> [args...]"

TIMEOUT=${VM_TIMEOUT:-600}
case "$TIMEOUT" in '' | *[!0-9]*) die "VM_TIMEOUT must be a number of seconds" ;; esac
command -v qemu-system-x86_64 >/dev/null ||
    die "qemu-system-x86_64 not found; install it with: apt-get install -y qemu-system-x86"

if ! "$HERE/setup.sh" --check; then
    "$HERE/setup.sh" >&2 || die "setup.sh failed"
fi
ENVTXT=$("$HERE/setup.sh" --print-env) || die "setup.sh --print-env failed"
eval "$ENVTXT"           # KVER KROOT VMLINUZ INITRD

mkdir -p "$CACHE/runs"
RUN=$(mktemp -d "$CACHE/runs/run.XXXXXX") || die "cannot create a run folder"
chmod 0755 "$RUN"
QPID="" TAILS=""
cleanup() {
    [ -n "$QPID" ] && kill "$QPID" 2>/dev/null
    for p in $TAILS; do kill "$p" 2>/dev/null; done
    if [ "${VM_KEEP:-0}" = 1 ]; then
        echo "run-in-vm: run folder kept: $RUN" >&2
    else
        rm -rf "$RUN"
    fi
}
trap cleanup EXIT
trap 'echo "run-in-vm: interrupted" >&2; exit 130' INT TERM

# --- what the guest runs ------------------------------------------------------
cp "$HERE/guest-stage2.sh" "$RUN/stage2.sh"
{
    printf 'cd -- %q || exit 125\n' "$PWD"
    printf 'exec'
    printf ' %q' "$@"
    printf '\n'
} > "$RUN/cmd.sh"
{
    for name in CI ${VM_PASS_ENV:-}; do
        [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "bad name in VM_PASS_ENV: $name"
        [ -n "${!name+x}" ] && printf 'export %s=%q\n' "$name" "${!name}"
    done
    printf 'export VM_KERNEL_VERSION=%q\n' "$KVER"
} > "$RUN/env"

RW_ARGS=() RW_SHARES="" i=0
for dir in ${VM_RW_DIRS:-}; do
    dir=$(cd "$dir" 2>/dev/null && pwd) || die "VM_RW_DIRS: no such folder: $dir"
    i=$((i + 1))
    RW_ARGS+=(-virtfs "local,path=$dir,mount_tag=rw$i,security_model=none,multidevs=remap")
    RW_SHARES="$RW_SHARES rw$i:$dir"
done
{
    printf 'VM_KVER=%q\n' "$KVER"
    printf 'VM_KROOT=%q\n' "$KROOT"
    printf 'VM_RW_SHARES=%q\n' "$RW_SHARES"
    printf 'VM_REPO=%q\n' "$REPO"
} > "$RUN/config"
: > "$RUN/stdout"
: > "$RUN/stderr"
: > "$RUN/console.log"

KARGS="console=ttyS0 panic=-1 oops=panic mitigations=off rdinit=/init"
if [ "${VM_DEBUG:-0}" = 1 ]; then KARGS="$KARGS loglevel=7"; else KARGS="$KARGS quiet loglevel=4"; fi
KARGS="$KARGS ${VM_KERNEL_ARGS:-}"

# shellcheck disable=SC2054  # commas are qemu option syntax
QEMU=(qemu-system-x86_64
    -nodefaults -no-user-config -accel tcg -cpu max
    -m "${VM_MEM:-2G}" -smp "${VM_CPUS:-2}"
    -display none -no-reboot -nic none
    -serial "file:$RUN/console.log"
    -kernel "$VMLINUZ" -initrd "$INITRD" -append "$KARGS"
    -virtfs "local,path=/,mount_tag=root,security_model=none,readonly=on,multidevs=remap"
    -virtfs "local,path=$REPO,mount_tag=repo,security_model=none,readonly=on,multidevs=remap"
    -virtfs "local,path=$RUN,mount_tag=results,security_model=none"
    "${RW_ARGS[@]}"
    -device virtio-serial-pci,id=vser
    -chardev "file,id=vmout,path=$RUN/stdout,append=on"
    -device virtserialport,bus=vser.0,chardev=vmout,name=vm.stdout
    -chardev "file,id=vmerr,path=$RUN/stderr,append=on"
    -device virtserialport,bus=vser.0,chardev=vmerr,name=vm.stderr
)

T0=$(date +%s.%N)
timeout -k 5 "$TIMEOUT" "${QEMU[@]}" </dev/null >"$RUN/qemu.log" 2>&1 &
QPID=$!
tail -s 0.1 -c +1 -f --pid="$QPID" "$RUN/stdout" &
TAILS="$!"
tail -s 0.1 -c +1 -f --pid="$QPID" "$RUN/stderr" >&2 &
TAILS="$TAILS $!"
if [ "${VM_DEBUG:-0}" = 1 ]; then
    tail -s 0.1 -c +1 -f --pid="$QPID" "$RUN/console.log" >&2 &
    TAILS="$TAILS $!"
fi
wait "$QPID"
QRC=$?
QPID=""
for p in $TAILS; do wait "$p" 2>/dev/null; done
TAILS=""
T1=$(date +%s.%N)

show_console() {
    local hits
    hits=$(tr -d '\r' < "$RUN/console.log" |
        grep -E 'Kernel panic|BUG:|Oops|general protection|WARNING:|vm-init:|vm-stage2:' | head -n 5)
    [ -n "$hits" ] && printf 'run-in-vm: %s\n' "$hits" >&2
    echo "run-in-vm: --- last lines of the VM console ---" >&2
    tr -d '\r' < "$RUN/console.log" | tail -n 40 >&2
    if [ -s "$RUN/qemu.log" ]; then
        echo "run-in-vm: --- qemu ---" >&2
        tail -n 20 "$RUN/qemu.log" >&2
    fi
}

if [ "${VM_VERBOSE:-0}" = 1 ] && [ -f "$RUN/status" ]; then
    started=$(stat -c %.9Y "$RUN/started" 2>/dev/null || echo "")
    if [ -n "$started" ]; then
        awk -v a="$T0" -v b="$started" -v c="$T1" \
            'BEGIN { printf "run-in-vm: boot %.1fs, command %.1fs, total %.1fs\n", b-a, c-b, c-a }' >&2
    fi
fi

if [ "$QRC" = 124 ] || [ "$QRC" = 137 ]; then
    echo "run-in-vm: timed out after ${TIMEOUT}s; qemu killed" >&2
    show_console
    exit 124
fi
if [ -s "$RUN/status" ]; then
    rc=$(cat "$RUN/status")
    case "$rc" in '' | *[!0-9]*) die "bad status '$rc' from the VM" ;; esac
    exit "$rc"
fi
if [ -s "$RUN/fatal" ]; then
    echo "run-in-vm: VM setup failed: $(cat "$RUN/fatal")" >&2
else
    echo "run-in-vm: the VM stopped without an exit status (qemu rc=$QRC: kernel panic, oops or boot failure)" >&2
fi
show_console
exit 125
