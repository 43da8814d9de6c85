#!/bin/bash
# Sets up a Debian/Ubuntu machine to build, run and test preserve-dscp:
# apt packages, npm dependencies, then the build. Idempotent.
#   scripts/setup.sh          set up
#   scripts/setup.sh --demo   set up, then run the demo
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

# clang/llvm + libbpf-dev: build the BPF object; libbpf1: loaded at run time;
# iproute2: ip/tc; tcpdump: captures in tests and the demo; iperf3: the
# throughput benchmark; wireguard-tools: WireGuard listen ports (wg);
# qemu/busybox/kmod/cpio: the WireGuard VM tests.
PACKAGES=(clang llvm libbpf1 libbpf-dev linux-libc-dev iproute2 tcpdump iperf3 wireguard-tools iputils-ping bpftool
          qemu-system-x86 busybox-static kmod cpio util-linux procps)

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (it installs packages with apt-get)" >&2
  exit 1
fi
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v node >/dev/null; then
  echo "setup: Node.js 18 or newer is needed (apt-get install nodejs npm)" >&2
  exit 1
fi
echo "setup: npm ci"
npm ci --no-audit --no-fund --loglevel=error
echo "setup: build"
npm run --silent build
if [ "${1:-}" = "--demo" ]; then
  exec bin/preserve-dscp demo
fi
