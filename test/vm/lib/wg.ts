/**
 * Real WireGuard topologies for the VM suite (kernel 6.1 under qemu):
 * namespaces A and B joined by one veth pair (veth0 in A, veth1 in B) with an
 * IPv4 and an IPv6 underlay, and N WireGuard interfaces wg0..wg(N-1) per
 * side, each with its own keys (`wg genkey`), its own listen ports (A:
 * 51820+i, B: 52820+i, so the outer UDP ports tell the tunnels apart), one
 * peer, inner IPv4/IPv6 addresses and the same link-local fe80::1 (A) /
 * fe80::2 (B) on every interface.
 *
 * Process starts are expensive under TCG, so the set-up is one bash script
 * per step, not one process per command.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runAsync, sh } from '../../../src/demo/exec.js';
import type { Lab } from '../../../src/demo/lab.js';

export const UPLINK = 'veth0';
export const PEER_IF = 'veth1';
export const UNDER = {
  4: { a: '10.200.0.1', b: '10.200.0.2' },
  6: { a: 'fd00:200::1', b: 'fd00:200::2' },
} as const;

export interface WgTunnel {
  name: string;
  i: number;
  /** A's listen port: the outer source port of A's packets */
  portA: number;
  portB: number;
  pubA: string;
  pubB: string;
  a4: string;
  b4: string;
  a6: string;
  b6: string;
}

export interface WgTopo {
  a: string;
  b: string;
  dir: string;
  underlay: 4 | 6;
  tunnels: WgTunnel[];
  /** the tunnel by index */
  t: (i: number) => WgTunnel;
}

export const portA = (i: number) => 51820 + i;
export const portB = (i: number) => 52820 + i;

/** Runs a bash script; throws with its stderr on failure. */
export async function bash(script: string, timeoutMs = 60_000): Promise<string> {
  const r = await runAsync('bash', ['-euo', 'pipefail', '-c', script], { timeoutMs });
  if (r.code !== 0) throw new Error(`bash script failed (${r.code}): ${r.stderr.trim().split('\n').slice(-5).join(' | ')}\n--- script ---\n${script}`);
  return r.stdout;
}

const endpoint = (fam: 4 | 6, addr: string, port: number) => (fam === 6 ? `[${addr}]:${port}` : `${addr}:${port}`);

/** Shell lines creating wg<i> on both sides (keys, peer, addresses, up). */
function tunnelScript(topo: { a: string; b: string; dir: string; underlay: 4 | 6 }, i: number): string {
  const d = topo.dir;
  const name = `wg${i}`;
  const U = UNDER[topo.underlay];
  const lines = [
    `for s in a b; do wg genkey > ${d}/\${s}${i}.key; wg pubkey < ${d}/\${s}${i}.key > ${d}/\${s}${i}.pub; done`,
    `nsenter --net=/run/netns/${topo.a} sh -c 'ip link add ${name} type wireguard && wg set ${name} private-key ${d}/a${i}.key listen-port ${portA(i)} peer '"$(cat ${d}/b${i}.pub)"' allowed-ips 10.201.${i}.2/32,fd00:201:${i}::2/128,fe80::2/128 endpoint ${endpoint(topo.underlay, U.b, portB(i))}'`,
    `nsenter --net=/run/netns/${topo.b} sh -c 'ip link add ${name} type wireguard && wg set ${name} private-key ${d}/b${i}.key listen-port ${portB(i)} peer '"$(cat ${d}/a${i}.pub)"' allowed-ips 10.201.${i}.1/32,fd00:201:${i}::1/128,fe80::1/128 endpoint ${endpoint(topo.underlay, U.a, portA(i))}'`,
  ];
  for (const [ns, me] of [
    [topo.a, 1],
    [topo.b, 2],
  ] as const) {
    lines.push(
      `ip -n ${ns} -batch - <<'EOF'
addr add 10.201.${i}.${me}/24 dev ${name}
addr add fd00:201:${i}::${me}/64 dev ${name} nodad
addr add fe80::${me}/64 dev ${name} nodad
link set ${name} up
EOF`,
    );
  }
  return lines.join('\n');
}

function tunnelOf(dir: string, i: number): WgTunnel {
  return {
    name: `wg${i}`,
    i,
    portA: portA(i),
    portB: portB(i),
    pubA: readFileSync(join(dir, `a${i}.pub`), 'utf8').trim(),
    pubB: readFileSync(join(dir, `b${i}.pub`), 'utf8').trim(),
    a4: `10.201.${i}.1`,
    b4: `10.201.${i}.2`,
    a6: `fd00:201:${i}::1`,
    b6: `fd00:201:${i}::2`,
  };
}

/** A and B, veth0/veth1 (10.200.0.0/24 and fd00:200::/64), wg0..wg(n-1) with endpoints on the given underlay. */
export async function makeWg(lab: Lab, n: number, underlay: 4 | 6 = 4): Promise<WgTopo> {
  const a = lab.netns('a');
  const b = lab.netns('b');
  const dir = mkdtempSync(join(tmpdir(), 'pdscp-wg-'));
  const topo: WgTopo = { a, b, dir, underlay, tunnels: [], t: (i) => topo.tunnels.find((x) => x.i === i) as WgTunnel };
  const lines = [
    'umask 077',
    `ip -n ${a} link add ${UPLINK} type veth peer name ${PEER_IF} netns ${b}`,
    `ip -n ${a} -batch - <<'EOF'
addr add ${UNDER[4].a}/24 dev ${UPLINK}
addr add ${UNDER[6].a}/64 dev ${UPLINK} nodad
link set ${UPLINK} up
EOF`,
    `ip -n ${b} -batch - <<'EOF'
addr add ${UNDER[4].b}/24 dev ${PEER_IF}
addr add ${UNDER[6].b}/64 dev ${PEER_IF} nodad
link set ${PEER_IF} up
EOF`,
    // static underlay neighbours: no ARP/ND wait for the first outer packet
    `ma=$(ip -n ${a} -br link show ${UPLINK} | awk '{print $3}')`,
    `mb=$(ip -n ${b} -br link show ${PEER_IF} | awk '{print $3}')`,
    `ip -n ${a} neigh replace ${UNDER[4].b} lladdr $mb dev ${UPLINK} nud permanent`,
    `ip -n ${a} neigh replace ${UNDER[6].b} lladdr $mb dev ${UPLINK} nud permanent`,
    `ip -n ${b} neigh replace ${UNDER[4].a} lladdr $ma dev ${PEER_IF} nud permanent`,
    `ip -n ${b} neigh replace ${UNDER[6].a} lladdr $ma dev ${PEER_IF} nud permanent`,
  ];
  for (let i = 0; i < n; i++) lines.push(tunnelScript(topo, i));
  await bash(lines.join('\n'));
  for (let i = 0; i < n; i++) topo.tunnels.push(tunnelOf(dir, i));
  return topo;
}

/** Adds wg<i> on both sides (e.g. while traffic runs). */
export async function addWgTunnel(topo: WgTopo, i: number): Promise<WgTunnel> {
  await bash(`umask 077\n${tunnelScript(topo, i)}`);
  const t = tunnelOf(topo.dir, i);
  topo.tunnels.push(t);
  return t;
}

/**
 * Removes and re-adds the peer of wg<i> on both sides: the sessions are gone,
 * so the next packet starts a new handshake.
 */
export async function resetPeers(topo: WgTopo, i: number): Promise<void> {
  const t = topo.t(i);
  const U = UNDER[topo.underlay];
  await bash(
    [
      `nsenter --net=/run/netns/${topo.a} wg set ${t.name} peer ${t.pubB} remove`,
      `nsenter --net=/run/netns/${topo.b} wg set ${t.name} peer ${t.pubA} remove`,
      `nsenter --net=/run/netns/${topo.a} wg set ${t.name} peer ${t.pubB} allowed-ips ${t.b4}/32,${t.b6}/128,fe80::2/128 endpoint ${endpoint(topo.underlay, U.b, t.portB)}`,
      `nsenter --net=/run/netns/${topo.b} wg set ${t.name} peer ${t.pubA} allowed-ips ${t.a4}/32,${t.a6}/128,fe80::1/128 endpoint ${endpoint(topo.underlay, U.a, t.portA)}`,
    ].join('\n'),
  );
}

/** Points every tunnel's endpoints (both sides) at the IPv4 or IPv6 underlay. */
export async function setUnderlay(topo: WgTopo, fam: 4 | 6): Promise<void> {
  const U = UNDER[fam];
  const lines = topo.tunnels.flatMap((t) => [
    `nsenter --net=/run/netns/${topo.a} wg set ${t.name} peer ${t.pubB} endpoint ${endpoint(fam, U.b, t.portB)}`,
    `nsenter --net=/run/netns/${topo.b} wg set ${t.name} peer ${t.pubA} endpoint ${endpoint(fam, U.a, t.portA)}`,
  ]);
  await bash(lines.join('\n'));
  topo.underlay = fam;
}

/** One ping over each given tunnel from A (completes the handshakes before a measurement). */
export async function warm(topo: WgTopo, idx: number[] = topo.tunnels.map((t) => t.i)): Promise<void> {
  const lines = idx.map((i) => `nsenter --net=/run/netns/${topo.a} ping -n -q -c 1 -W 5 ${topo.t(i).b4} >/dev/null || nsenter --net=/run/netns/${topo.a} ping -n -q -c 2 -W 5 ${topo.t(i).b4} >/dev/null`);
  await bash(lines.join('\n'));
}

export function disposeWg(topo: WgTopo | undefined): void {
  if (topo) rmSync(topo.dir, { recursive: true, force: true });
}

/** `tc filter show` lines of ours (pdscp_ programs) on a device's egress. */
export function ourFilters(ns: string, dev: string): string[] {
  let out = '';
  try {
    out = sh('tc', ['-n', ns, 'filter', 'show', 'dev', dev, 'egress']);
  } catch {
    return [];
  }
  return out.split('\n').filter((l) => /pdscp_/.test(l));
}
