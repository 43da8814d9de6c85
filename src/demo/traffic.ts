/**
 * Traffic with a chosen DSCP/ECN: ping -Q for ICMP, and a sender child (node +
 * koffi calling libc) that sets IP_TOS / IPV6_TCLASS on UDP and TCP sockets
 * before connect(), because Node's own sockets cannot. Child scripts are
 * passed as source with `node -e`, so this works from the bundle and from src.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { runAsync, stopChild, track, waitFor } from './exec.js';
import type { Family } from './lab.js';
import { ip4bytes, ip6bytes } from './pcap.js';

export type Kind = 'icmp' | 'udp' | 'tcp';

export interface Flow {
  kind: Kind;
  family: Family;
  /** the whole TOS / traffic-class byte: DSCP << 2 | ECN */
  tclass: number;
  /** destination (inner) address */
  dst: string;
  /** UDP/TCP destination port */
  port?: number;
  /** packets (ICMP echo requests, UDP datagrams, TCP writes) */
  count?: number;
}

export const DSCP_NAMES: Record<number, string> = {
  0: 'CS0', 8: 'CS1', 10: 'AF11', 12: 'AF12', 14: 'AF13', 16: 'CS2', 18: 'AF21', 20: 'AF22', 22: 'AF23', 24: 'CS3',
  26: 'AF31', 28: 'AF32', 30: 'AF33', 32: 'CS4', 34: 'AF41', 36: 'AF42', 38: 'AF43', 40: 'CS5', 44: 'VA', 46: 'EF', 48: 'CS6', 56: 'CS7',
};

export const ECN_NOT_ECT = 0;
export const ECN_ECT1 = 1;
export const ECN_ECT0 = 2;
export const ECN_CE = 3;

export function kindLabel(kind: Kind, family: Family): string {
  return kind === 'icmp' ? (family === 4 ? 'ICMPv4' : 'ICMPv6') : `${kind.toUpperCase()}/IPv${family}`;
}

function here(): string {
  return typeof __filename !== 'undefined' ? __filename : fileURLToPath(import.meta.url);
}

/** Where koffi is, for the child scripts (they run with `node -e`, outside any package). */
export function koffiPath(): string {
  return createRequire(here()).resolve('koffi');
}

function nodeIn(ns: string, script: string, args: string[]): string[] {
  return ['netns', 'exec', ns, process.execPath, '-e', script, '--', ...args];
}

/** ICMP echo with ping -Q (IPv6 too: ping -6 -Q sets the traffic class). */
export async function ping(ns: string, f: Flow, timeoutS = 1): Promise<{ ok: boolean; output: string }> {
  const args = ['netns', 'exec', ns, 'ping', ...(f.family === 6 ? ['-6'] : ['-4']), '-n', '-q', '-c', String(f.count ?? 1), '-i', '0.05', '-W', String(timeoutS), '-Q', `0x${f.tclass.toString(16)}`, f.dst];
  const r = await runAsync('ip', args, { timeoutMs: (timeoutS + 5) * 1000 });
  return { ok: r.code === 0, output: (r.stdout + r.stderr).trim() };
}

const SENDER = String.raw`
const koffi = require(process.env.PDSCP_KOFFI);
const lib = koffi.load('libc.so.6');
const socket = lib.func('int socket(int domain, int type, int protocol)');
const setsockopt = lib.func('int setsockopt(int fd, int level, int name, const void *val, uint32_t len)');
const connect = lib.func('int connect(int fd, const void *addr, uint32_t len)');
const send = lib.func('intptr_t send(int fd, const void *buf, size_t len, int flags)');
const shutdown = lib.func('int shutdown(int fd, int how)');
const recv = lib.func('intptr_t recv(int fd, _Out_ void *buf, size_t len, int flags)');
const close = lib.func('int close(int fd)');
const flows = JSON.parse(process.argv[process.argv.length - 1]);
let failed = 0;
for (const f of flows) {
  const v6 = f.family === 6;
  const fd = socket(v6 ? 10 : 2, f.kind === 'tcp' ? 1 : 2, 0);
  if (fd < 0) { console.error('socket: errno ' + koffi.errno()); failed++; continue; }
  const val = Buffer.alloc(4); val.writeInt32LE(f.tclass);
  if (setsockopt(fd, v6 ? 41 : 0, v6 ? 67 : 1, val, 4) !== 0) { console.error('setsockopt: errno ' + koffi.errno()); failed++; close(fd); continue; }
  let sa;
  if (v6) { sa = Buffer.alloc(28); sa.writeUInt16LE(10, 0); sa.writeUInt16BE(f.port, 2); Buffer.from(f.addr, 'hex').copy(sa, 8); }
  else { sa = Buffer.alloc(16); sa.writeUInt16LE(2, 0); sa.writeUInt16BE(f.port, 2); Buffer.from(f.addr, 'hex').copy(sa, 4); }
  if (connect(fd, sa, sa.length) !== 0) { console.error('connect ' + f.dst + ' port ' + f.port + ': errno ' + koffi.errno()); failed++; close(fd); continue; }
  const msg = Buffer.from('preserve-dscp tclass 0x' + f.tclass.toString(16) + ' ');
  for (let i = 0; i < (f.count || 1); i++) {
    if (send(fd, msg, msg.length, 0) < 0) { console.error('send: errno ' + koffi.errno()); failed++; break; }
  }
  if (f.kind === 'tcp') {
    shutdown(fd, 1);
    const b = Buffer.alloc(64);
    recv(fd, b, 64, 0); // until the peer closes: the whole exchange is on the wire
  }
  close(fd);
}
process.exit(failed ? 1 : 0);
`;

/** Sends UDP/TCP flows from ns, one socket each, TOS/TCLASS set before connect(). */
export async function sendSockets(ns: string, flows: Flow[]): Promise<void> {
  if (flows.length === 0) return;
  const spec = flows.map((f) => {
    if (f.kind === 'icmp' || f.port === undefined) throw new Error('sendSockets: UDP/TCP flows with a port only');
    return { ...f, addr: (f.family === 6 ? ip6bytes(f.dst) : ip4bytes(f.dst)).toString('hex') };
  });
  const r = await runAsync('ip', nodeIn(ns, SENDER, [JSON.stringify(spec)]), {
    env: { ...process.env, PDSCP_KOFFI: koffiPath() },
    timeoutMs: 20_000,
  });
  if (r.code !== 0) throw new Error(`sender in ${ns} failed (${r.code}): ${r.stderr.trim()}`);
}

const SINK = String.raw`
const net = require('net');
const dgram = require('dgram');
const spec = JSON.parse(process.argv[process.argv.length - 1]);
let pending = spec.tcp.length + spec.udp.length;
const up = () => { if (--pending === 0) console.log('ready'); };
if (pending === 0) console.log('ready');
for (const port of spec.tcp) {
  const srv = net.createServer((s) => { s.on('data', () => {}); s.on('end', () => s.end()); s.on('error', () => {}); });
  srv.listen({ port, host: '::', ipv6Only: false }, up);
}
for (const port of spec.udp) {
  const u = dgram.createSocket({ type: 'udp6', ipv6Only: false });
  u.on('message', () => {});
  u.bind(port, '::', up);
}
process.on('SIGTERM', () => process.exit(0));
`;

/** A TCP and UDP sink (IPv4 and IPv6) in ns, so senders see no refusals; stop() ends it. */
export class Sink {
  private constructor(private readonly child: ChildProcess) {}

  static async start(ns: string, ports: { tcp?: number[]; udp?: number[] }): Promise<Sink> {
    const spec = JSON.stringify({ tcp: ports.tcp ?? [], udp: ports.udp ?? [] });
    const child = track(spawn('ip', nodeIn(ns, SINK, [spec]), { stdio: ['ignore', 'pipe', 'pipe'] }));
    try {
      await waitFor(child, 'stdout', 'ready', 10_000);
    } catch (e) {
      await stopChild(child, 'SIGKILL');
      throw e;
    }
    return new Sink(child);
  }

  stop(): Promise<void> {
    return stopChild(this.child);
  }
}

const TUN_READER = String.raw`
const fs = require('fs');
const koffi = require(process.env.PDSCP_KOFFI);
const lib = koffi.load('libc.so.6');
const ioctl = lib.func('int ioctl(int fd, unsigned long req, void *arg)');
const name = process.argv[process.argv.length - 1];
const fd = fs.openSync('/dev/net/tun', 'r+');
const ifr = Buffer.alloc(40);
ifr.write(name, 0, 15, 'latin1');
ifr.writeUInt16LE(0x0001 | 0x1000, 16); // IFF_TUN | IFF_NO_PI
if (ioctl(fd, 0x400454ca, ifr) !== 0) { console.error('TUNSETIFF: errno ' + koffi.errno()); process.exit(1); }
console.log('ready');
const buf = Buffer.alloc(65536);
for (;;) {
  let n;
  try { n = fs.readSync(fd, buf, 0, buf.length, null); } catch (e) { if (e.code === 'EAGAIN' || e.code === 'EINTR') continue; throw e; }
  process.stdout.write('pkt ' + buf.subarray(0, n).toString('hex') + '\n');
}
`;

/**
 * A TUN device in ns whose reader prints every packet routed into it (raw IP,
 * no packet-information header). The device goes away when the reader stops.
 */
export class TunReader {
  private out = '';
  private constructor(private readonly child: ChildProcess) {
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (this.out += d));
  }

  static async start(ns: string, ifname: string): Promise<TunReader> {
    const child = track(spawn('ip', nodeIn(ns, TUN_READER, [ifname]), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PDSCP_KOFFI: koffiPath() } }));
    const reader = new TunReader(child);
    try {
      await waitFor(child, 'stdout', 'ready', 10_000);
    } catch (e) {
      await stopChild(child, 'SIGKILL');
      throw e;
    }
    return reader;
  }

  /** The packets read so far (each starting at the IP header). */
  packets(): Buffer[] {
    return this.out
      .split('\n')
      .filter((l) => l.startsWith('pkt '))
      .map((l) => Buffer.from(l.slice(4), 'hex'));
  }

  stop(): Promise<void> {
    return stopChild(this.child, 'SIGKILL');
  }
}
