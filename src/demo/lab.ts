/**
 * Throwaway network namespaces with a tunnel between them (VXLAN `tos 0` or
 * WireGuard), and
 * the cleanup that removes everything they made. Shared by the demo and the
 * end-to-end tests.
 */
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import koffi from 'koffi';
import { liveChildren, liveTempDirs, sh, shQuiet } from './exec.js';

export type Family = 4 | 6;

/** Network namespaces made under one prefix; cleanup() deletes every one of them. */
export class Lab {
  readonly namespaces: string[] = [];
  private n = 0;
  readonly prefix: string;

  constructor(prefix: string) {
    // Unique per process and per Lab: pid plus a counter plus a random tail.
    this.prefix = `${prefix}-${process.pid.toString(36)}${Math.random().toString(36).slice(2, 6)}`;
  }

  /** Creates a namespace with loopback up; the name is unique. */
  netns(tag: string): string {
    const name = `${this.prefix}-${tag}${this.n++}`;
    sh('ip', ['netns', 'add', name]);
    this.namespaces.push(name);
    madeNamespaces.add(name);
    sh('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    return name;
  }

  /** Deletes the namespaces (idempotent; never throws). Children must be stopped first. */
  cleanup(): void {
    while (this.namespaces.length) {
      const ns = this.namespaces.pop() as string;
      shQuiet('ip', ['netns', 'del', ns]);
    }
  }
}

/** Every namespace this process made (deleted or not): for leak checks scoped to this process. */
export const madeNamespaces = new Set<string>();

/** Namespaces made by this process that still exist. */
export function leftoverOfProcess(): string[] {
  const live = new Set(leftoverNamespaces(''));
  return [...madeNamespaces].filter((n) => live.has(n));
}

/** Namespaces of every Lab of this process, for signal handlers. */
export const liveLabs = new Set<Lab>();

export function newLab(prefix: string): Lab {
  const lab = new Lab(prefix);
  liveLabs.add(lab);
  return lab;
}

export function disposeLab(lab: Lab): void {
  lab.cleanup();
  liveLabs.delete(lab);
}

/** Kills children and deletes namespaces synchronously: for SIGINT/SIGTERM/exit. */
export function emergencyCleanup(): void {
  for (const c of liveChildren) {
    try {
      c.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
  for (const lab of liveLabs) lab.cleanup();
  liveLabs.clear();
  for (const d of liveTempDirs) rmSync(d, { recursive: true, force: true });
  liveTempDirs.clear();
}

/** Existing namespaces whose names start with prefix ('' for all). */
export function leftoverNamespaces(prefix: string): string[] {
  let out = '';
  try {
    out = sh('ip', ['netns', 'list']);
  } catch {
    return [];
  }
  return out
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => n && n.startsWith(prefix));
}

export interface TunnelEnd {
  ns: string;
  /** underlay address (outer IP) */
  under: string;
  inner4: string;
  inner6: string;
  mac: string;
}

export interface VxlanPair {
  /** the tunnel type (VxlanPair is the shape of any tunnel pair) */
  kind?: 'vxlan' | 'wireguard';
  a: TunnelEnd;
  b: TunnelEnd;
  underlay: Family;
  /** tunnel device name in both namespaces */
  tunnel: string;
  /** veth name in a (b's end is peerIf) */
  uplink: string;
  peerIf: string;
  dport: number;
  vni: number;
}

export const VXLAN_PORT = 4789;

/**
 * Two namespaces joined by a veth pair, with a VXLAN `tos 0` device in each
 * (the outer header gets DSCP 0 and the inner ECN) over an IPv4 or IPv6
 * underlay, and IPv4 and IPv6 inner addresses with static neighbours (no
 * ARP/ND wait).
 */
export function makeVxlanPair(lab: Lab, underlay: Family, opts: { tunnel?: string; uplink?: string } = {}): VxlanPair {
  const pair = makeUnderlay(lab, underlay, { tunnel: opts.tunnel ?? 'vx0', uplink: opts.uplink });
  const { a, b, tunnel } = pair;
  for (const [end, other, dev] of [
    [a, b, pair.uplink],
    [b, a, pair.peerIf],
  ] as const) {
    const ns = end.ns;
    sh('ip', [
      '-n', ns, 'link', 'add', tunnel, 'address', end.mac, 'type', 'vxlan', 'id', String(pair.vni),
      'local', end.under, 'remote', other.under, 'dstport', String(VXLAN_PORT), 'dev', dev, 'tos', '0', 'ttl', '64',
    ]);
    sh('ip', ['-n', ns, 'addr', 'add', `${end.inner4}/24`, 'dev', tunnel]);
    sh('ip', ['-n', ns, 'addr', 'add', `${end.inner6}/64`, 'dev', tunnel, 'nodad']);
    sh('ip', ['-n', ns, 'link', 'set', tunnel, 'up']);
    sh('ip', ['-n', ns, 'neigh', 'replace', other.inner4, 'lladdr', other.mac, 'dev', tunnel, 'nud', 'permanent']);
    sh('ip', ['-n', ns, 'neigh', 'replace', other.inner6, 'lladdr', other.mac, 'dev', tunnel, 'nud', 'permanent']);
  }
  return { ...pair, kind: 'vxlan' };
}

/** Namespaces A and B joined by a veth pair with underlay addresses and static neighbours (no tunnel yet). */
function makeUnderlay(lab: Lab, underlay: Family, opts: { tunnel: string; uplink?: string }): VxlanPair {
  const tunnel = opts.tunnel;
  const uplink = opts.uplink ?? 'veth-a';
  const peerIf = 'veth-b';
  const A = lab.netns('a');
  const B = lab.netns('b');
  // End n (1 = A, 2 = B) of the underlay and of the tunnel's inner networks.
  const end = (ns: string, n: number): TunnelEnd => ({
    ns,
    under: underlay === 4 ? `10.200.0.${n}` : `fd00:200::${n}`,
    inner4: `10.201.0.${n}`,
    inner6: `fd00:201::${n}`,
    mac: `02:00:00:20:01:0${n}`,
  });
  const a = end(A, 1);
  const b = end(B, 2);
  sh('ip', ['-n', A, 'link', 'add', uplink, 'type', 'veth', 'peer', 'name', peerIf, 'netns', B]);
  const plen = underlay === 4 ? '/24' : '/64';
  for (const [end, dev] of [
    [a, uplink],
    [b, peerIf],
  ] as const) {
    sh('ip', ['-n', end.ns, 'addr', 'add', `${end.under}${plen}`, 'dev', dev, ...(underlay === 6 ? ['nodad'] : [])]);
    sh('ip', ['-n', end.ns, 'link', 'set', dev, 'up']);
  }
  // Underlay neighbours, so the first outer packet is not held for ARP/ND.
  const macOf = (ns: string, dev: string) => JSON.parse(sh('ip', ['-n', ns, '-j', 'link', 'show', dev]))[0].address as string;
  sh('ip', ['-n', A, 'neigh', 'replace', b.under, 'lladdr', macOf(B, peerIf), 'dev', uplink, 'nud', 'permanent']);
  sh('ip', ['-n', B, 'neigh', 'replace', a.under, 'lladdr', macOf(A, uplink), 'dev', peerIf, 'nud', 'permanent']);
  return { a, b, underlay, tunnel, uplink, peerIf, dport: VXLAN_PORT, vni: 42 };
}

export const WG_PORT_A = 51820;
export const WG_PORT_B = 51821;

/**
 * Two namespaces joined by a veth pair with a WireGuard tunnel wg0 between
 * them (keys from `wg genkey`), IPv4 and IPv6 inner addresses. dport is B's
 * listen port: the outer packets from A go there.
 */
export function makeWireguardPair(lab: Lab, underlay: Family): VxlanPair {
  const pair = makeUnderlay(lab, underlay, { tunnel: 'wg0' });
  const keys = [pair.a, pair.b].map(() => {
    const priv = sh('wg', ['genkey']).trim();
    return { priv, pub: sh('wg', ['pubkey'], { input: `${priv}\n` }).trim() };
  });
  const ends = [
    { end: pair.a, other: pair.b, key: keys[0], peer: keys[1], port: WG_PORT_A, peerPort: WG_PORT_B },
    { end: pair.b, other: pair.a, key: keys[1], peer: keys[0], port: WG_PORT_B, peerPort: WG_PORT_A },
  ];
  for (const e of ends) {
    const ns = e.end.ns;
    sh('ip', ['-n', ns, 'link', 'add', pair.tunnel, 'type', 'wireguard']);
    const endpoint = underlay === 4 ? `${e.other.under}:${e.peerPort}` : `[${e.other.under}]:${e.peerPort}`;
    const dir = mkdtempSync(join(tmpdir(), 'pdscp-wg-'));
    try {
      const keyFile = join(dir, 'key');
      writeFileSync(keyFile, `${e.key.priv}\n`, { mode: 0o600 });
      sh('ip', ['netns', 'exec', ns, 'wg', 'set', pair.tunnel, 'private-key', keyFile, 'listen-port', String(e.port), 'peer', e.peer.pub, 'endpoint', endpoint, 'allowed-ips', '0.0.0.0/0,::/0']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    sh('ip', ['-n', ns, 'addr', 'add', `${e.end.inner4}/24`, 'dev', pair.tunnel]);
    sh('ip', ['-n', ns, 'addr', 'add', `${e.end.inner6}/64`, 'dev', pair.tunnel, 'nodad']);
    sh('ip', ['-n', ns, 'link', 'set', pair.tunnel, 'up']);
  }
  return { ...pair, kind: 'wireguard', dport: WG_PORT_B };
}

/** Whether this kernel can make WireGuard devices (the demo then could use it). */
export function kernelHasWireguard(lab: Lab): boolean {
  const ns = lab.netns('probe');
  try {
    return shQuiet('ip', ['-n', ns, 'link', 'add', 'wgprobe', 'type', 'wireguard']);
  } finally {
    shQuiet('ip', ['netns', 'del', ns]);
    lab.namespaces.splice(lab.namespaces.indexOf(ns), 1);
  }
}

const CLONE_NEWNET = 0x40000000;
let setnsFn: ((fd: number, type: number) => number) | undefined;

/**
 * Runs fn (synchronous) with this thread in network namespace ns, as
 * `nsenter --net` would: netlink sockets and child processes started by fn
 * live there. The thread returns to its namespace afterwards.
 */
export function inNetns<T>(ns: string, fn: () => T): T {
  setnsFn ??= koffi.load('libc.so.6').func('int setns(int fd, int nstype)') as (fd: number, type: number) => number;
  const home = openSync('/proc/thread-self/ns/net', 'r');
  let target = -1;
  try {
    target = openSync(`/run/netns/${ns}`, 'r');
    if (setnsFn(target, CLONE_NEWNET) !== 0) throw new Error(`setns(${ns}) failed: errno ${koffi.errno()}`);
    try {
      return fn();
    } finally {
      if (setnsFn(home, CLONE_NEWNET) !== 0) throw new Error(`cannot return to the original network namespace: errno ${koffi.errno()}`);
    }
  } finally {
    if (target >= 0) closeSync(target);
    closeSync(home);
  }
}
