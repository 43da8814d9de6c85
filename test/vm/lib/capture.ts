/**
 * Captures for WireGuard: tcpdump in a namespace (nsenter, cheaper than ip
 * netns exec), outer WireGuard packets decoded down to the message type, and
 * inner packets read on the receiver's wg device, paired by order.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { liveTempDirs, sleep, stopChild, track, waitFor } from '../../../src/demo/exec.js';
import { type IpInfo, ipPackets, PROTO_UDP } from '../../../src/demo/pcap.js';

export class Tcpdump {
  private constructor(
    private readonly child: ChildProcess,
    private readonly dir: string,
    readonly file: string,
  ) {}

  /** Starts tcpdump on ns/ifname (direction in/out/inout) and resolves once it listens. */
  static async start(ns: string, ifname: string, filter: string, direction?: 'in' | 'out' | 'inout'): Promise<Tcpdump> {
    const dir = mkdtempSync(join(tmpdir(), 'pdscp-vmcap-'));
    liveTempDirs.add(dir);
    const file = join(dir, 'cap.pcap');
    const args = [`--net=/run/netns/${ns}`, 'tcpdump', '-i', ifname, '-n', '-U', '--immediate-mode', '-B', '8192', '-s', '256', '-Z', 'root', '-w', file];
    if (direction) args.push('-Q', direction);
    args.push(...filter.split(' ').filter(Boolean));
    const child = track(spawn('nsenter', args, { stdio: ['ignore', 'ignore', 'pipe'] }));
    try {
      await waitFor(child, 'stderr', 'listening on', 20_000);
    } catch (e) {
      await stopChild(child, 'SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      liveTempDirs.delete(dir);
      throw e;
    }
    return new Tcpdump(child, dir, file);
  }

  /** Stops tcpdump (after settleMs) and returns the pcap file's content. */
  async stop(settleMs = 300): Promise<Buffer> {
    await sleep(settleMs);
    await stopChild(this.child, 'SIGINT');
    try {
      return readFileSync(this.file);
    } finally {
      rmSync(this.dir, { recursive: true, force: true });
      liveTempDirs.delete(this.dir);
    }
  }
}

/** Starts several captures at once. */
export function startAll(specs: [string, string, string, ('in' | 'out' | 'inout')?][]): Promise<Tcpdump[]> {
  return Promise.all(specs.map(([ns, dev, filter, dir]) => Tcpdump.start(ns, dev, filter, dir)));
}

export const WG_INIT = 1;
export const WG_RESPONSE = 2;
export const WG_COOKIE = 3;
export const WG_DATA = 4;

export interface WgPacket {
  ip: IpInfo;
  sport: number;
  dport: number;
  /** WireGuard message type (first payload byte) */
  type: number;
  /** UDP payload length */
  len: number;
  /** a data message without payload (32 bytes: header + tag) */
  keepalive: boolean;
}

/** Outer WireGuard (UDP) packets of a capture. */
export function wgPackets(pcap: Buffer): WgPacket[] {
  const out: WgPacket[] = [];
  for (const { ip, data } of ipPackets(pcap)) {
    if (ip.proto !== PROTO_UDP || data.length < ip.l4 + 9) continue;
    const len = data.readUInt16BE(ip.l4 + 4) - 8;
    const type = data[ip.l4 + 8];
    out.push({ ip, sport: ip.sport as number, dport: ip.dport as number, type, len, keepalive: type === WG_DATA && len === 32 });
  }
  return out;
}

/** Outer data packets (type 4, not keepalives) from source port sport. */
export function wgData(pkts: WgPacket[], sport: number): WgPacket[] {
  return pkts.filter((p) => p.sport === sport && p.type === WG_DATA && !p.keepalive);
}

export interface InnerPacket {
  ip: IpInfo;
  /** IP total length */
  len: number;
  /** UDP payload (the senders put a sequence number and the TOS there) */
  udp?: Buffer;
}

/** Packets seen on a wg device (raw IP). */
export function innerPackets(pcap: Buffer): InnerPacket[] {
  return ipPackets(pcap).map(({ ip, data, off }) => ({
    ip,
    len: ip.version === 4 ? data.readUInt16BE(off + 2) : data.readUInt16BE(off + 4) + 40,
    udp: ip.proto === PROTO_UDP ? data.subarray(ip.l4 + 8) : undefined,
  }));
}

/** The outer ECN WireGuard gives (ip_tunnel_ecn_encap(0, inner)): CE becomes ECT(0). */
export const wgEcn = (innerEcn: number) => (innerEcn === 3 ? 2 : innerEcn);

export interface Paired {
  outer: WgPacket;
  inner: InnerPacket;
}

export interface PairResult {
  pairs: Paired[];
  outerCount: number;
  innerCount: number;
  /** pairs whose lengths do not fit (outer payload = 32 + inner length padded to 16) */
  misaligned: number;
}

/**
 * Pairs the i-th outer data packet with the i-th inner packet: WireGuard keeps
 * the order of one peer's packets through its parallel encryption and
 * decryption, so without loss the two lists are the same packets.
 */
export function pairByOrder(outer: WgPacket[], inner: InnerPacket[]): PairResult {
  const n = Math.min(outer.length, inner.length);
  const pairs: Paired[] = [];
  let misaligned = 0;
  for (let i = 0; i < n; i++) {
    const o = outer[i];
    const p = inner[i];
    const room = o.len - 32;
    if (room < p.len || room >= p.len + 16) misaligned++;
    pairs.push({ outer: o, inner: p });
  }
  return { pairs, outerCount: outer.length, innerCount: inner.length, misaligned };
}

export const kindOf = (ip: IpInfo) => (ip.proto === 1 || ip.proto === 58 ? 'icmp' : ip.proto === 6 ? 'tcp' : ip.proto === 17 ? 'udp' : `proto${ip.proto}`);
