#!/usr/bin/env bash
# test/vm/wg-smoke.sh — proves that real (kernel) WireGuard works in the test
# VM, and shows the problem this project solves: kernel WireGuard does not
# copy the inner DSCP onto the outer UDP packets.
#
# Run it inside the VM:   test/vm/run-in-vm.sh bash test/vm/wg-smoke.sh
#
# Two network namespaces joined by a veth pair (underlay 10.200.0.0/24), a
# wireguard interface in each (tunnel 10.201.0.0/24), keys from `wg genkey`.
# We ping across the tunnel with `ping -Q 0xb8` (DSCP EF) and capture with
# tcpdump both the inner packets (on wg0) and the outer UDP packets (on the
# veth). Passes when the pings get through, the inner packets carry TOS 0xb8
# and every outer packet carries TOS 0x0.
set -euo pipefail

if [ "${PRESERVE_DSCP_VM:-}" != 1 ]; then
    echo "wg-smoke: run me inside the test VM: test/vm/run-in-vm.sh bash test/vm/wg-smoke.sh" >&2
    exit 2
fi
for t in ip wg tcpdump ping nsenter; do
    command -v "$t" >/dev/null || { echo "wg-smoke: '$t' not found on the host root" >&2; exit 2; }
done

W=$(mktemp -d /tmp/wg-smoke.XXXXXX)
A=wgs-a B=wgs-b
PORT=51820
inns() { local ns=$1; shift; nsenter --net="/run/netns/$ns" "$@"; }
step() { echo "wg-smoke: $*"; }
fail() { echo "wg-smoke: FAIL: $*" >&2; exit 1; }

step "namespaces $A, $B joined by veth"
ip netns add $A
ip netns add $B
ip link add veth-a netns $A type veth peer name veth-b netns $B
inns $A ip link set lo up
inns $B ip link set lo up
inns $A ip addr add 10.200.0.1/24 dev veth-a
inns $B ip addr add 10.200.0.2/24 dev veth-b
inns $A ip link set veth-a up
inns $B ip link set veth-b up

step "wireguard interfaces (keys from wg genkey)"
umask 077
for ns in $A $B; do
    wg genkey > "$W/$ns.key"
    wg pubkey < "$W/$ns.key" > "$W/$ns.pub"
done
inns $A ip link add wg0 type wireguard
inns $B ip link add wg0 type wireguard
inns $A wg set wg0 private-key "$W/$A.key" listen-port $PORT \
    peer "$(cat "$W/$B.pub")" allowed-ips 10.201.0.2/32 endpoint 10.200.0.2:$PORT
inns $B wg set wg0 private-key "$W/$B.key" listen-port $PORT \
    peer "$(cat "$W/$A.pub")" allowed-ips 10.201.0.1/32 endpoint 10.200.0.1:$PORT
inns $A ip addr add 10.201.0.1/24 dev wg0
inns $B ip addr add 10.201.0.2/24 dev wg0
inns $A ip link set wg0 up
inns $B ip link set wg0 up

step "tcpdump on veth-b (outer) and wg0 (inner) in $B"
inns $B tcpdump -Z root -U -n -i veth-b -w "$W/outer.pcap" udp port $PORT 2> "$W/outer.log" &
P1=$!
inns $B tcpdump -Z root -U -n -i wg0 -w "$W/inner.pcap" icmp 2> "$W/inner.log" &
P2=$!
for _ in $(seq 100); do
    grep -q 'listening on' "$W/outer.log" && grep -q 'listening on' "$W/inner.log" && break
    sleep 0.1
done
grep -q 'listening on' "$W/outer.log" || fail "tcpdump did not start: $(cat "$W/outer.log")"

step "ping -Q 0xb8 across the tunnel"
inns $A ping -n -c 4 -i 0.2 -W 3 -Q 0xb8 10.201.0.2 || fail "ping across the tunnel failed"
sleep 0.5
kill -TERM $P1 $P2   # (background jobs of a script ignore SIGINT)
wait $P1 $P2 || true

step "wg show ($A)"
inns $A wg show wg0 | sed 's/^/    /'

echo "wg-smoke: inner packets on wg0 ($B):"
tcpdump -n -v -r "$W/inner.pcap" 2>/dev/null | grep -E '^[0-9]' | sed 's/^/    /'
echo "wg-smoke: outer packets on veth-b ($B):"
tcpdump -n -v -r "$W/outer.pcap" 2>/dev/null | grep -E '^[0-9]' | sed 's/^/    /'

# "IP (tos 0xb8, ttl 64, ..., proto UDP (17), length 156)": TOS (and IP length)
# of every captured packet. Outer IP length 176 / 120 = WireGuard handshake
# initiation / response (148 / 92 bytes of UDP payload): WireGuard sends those
# with a fixed TOS 0x88 of its own; everything else is transport data.
inner_tos=$(tcpdump -n -v -r "$W/inner.pcap" 2>/dev/null | sed -n 's/.*IP (tos \(0x[0-9a-f]*\).*ICMP.*/\1/p')
outer=$(tcpdump -n -v -r "$W/outer.pcap" 2>/dev/null |
    sed -n 's/.*IP (tos \(0x[0-9a-f]*\).*proto UDP (17), length \([0-9]*\)).*/\1 \2/p')
data_tos=$(echo "$outer" | awk '$2 != 176 && $2 != 120 { print $1 }')
hs_tos=$(echo "$outer" | awk '$2 == 176 || $2 == 120 { print $1 }')
n_in=$(echo "$inner_tos" | grep -c . || true)
n_data=$(echo "$data_tos" | grep -c . || true)
n_hs=$(echo "$hs_tos" | grep -c . || true)
[ "$n_in" -ge 8 ] || fail "expected >= 8 inner ICMP packets on wg0 (4 requests, 4 replies), got $n_in"
[ "$n_hs" -ge 2 ] || fail "expected a WireGuard handshake on veth-b, got $n_hs handshake packets"
[ "$n_data" -ge 8 ] || fail "expected >= 8 outer data packets on veth-b (4 pings + 4 replies), got $n_data"
if echo "$inner_tos" | grep -qvx '0xb8'; then fail "inner packets without TOS 0xb8: $(echo $inner_tos)"; fi
if echo "$data_tos" | grep -qvx '0x0'; then fail "outer data packets with TOS other than 0x0: $(echo $data_tos)"; fi
step "handshake packets' TOS: $(echo $hs_tos) (WireGuard's own)"

ip netns del $A
ip netns del $B
rm -rf "$W"
step "PASS: $n_in inner packets with TOS 0xb8; all $n_data outer WireGuard data packets have TOS 0x0 (kernel WireGuard does not copy DSCP)"
