/**
 * Several VXLAN `tos 0` tunnels from namespace A to namespace B over one
 * shared uplink (veth up0 in A), optionally a second uplink (up1) for
 * failover, and a UDP sender that can bind a source port, use link-local
 * scope and change the traffic class on every packet of one socket.
 */
import { sh } from '../../../src/demo/exec.js';
import { runAsync } from '../../../src/demo/exec.js';
import type { Lab } from '../../../src/demo/lab.js';
import { koffiPath } from '../../../src/demo/traffic.js';
import { ip4bytes, ip6bytes } from '../../../src/demo/pcap.js';

export interface Star {
  a: string;
  b: string;
  tunnels: string[];
  /** inner IPv4 of B on tunnel i */
  innerB: (i: number) => string;
  innerA: (i: number) => string;
  vni: (i: number) => number;
  uplinks: string[];
  underA: string[];
  underB: string[];
}

const mac = (side: number, i: number) => `02:00:00:${side.toString(16).padStart(2, '0')}:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;

/** A and B joined by `uplinks` veth pairs (up0/dn0, up1/dn1), with n VXLAN tunnels vx0..vx(n-1) over up0. */
export function makeStar(lab: Lab, n: number, uplinks = 1): Star {
  const a = lab.netns('sa');
  const b = lab.netns('sb');
  const star: Star = {
    a,
    b,
    tunnels: [],
    innerA: (i) => `10.210.${i}.1`,
    innerB: (i) => `10.210.${i}.2`,
    vni: (i) => 100 + i,
    uplinks: [],
    underA: [],
    underB: [],
  };
  sh('ip', ['netns', 'exec', b, 'sysctl', '-qw', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0']);
  for (let u = 0; u < uplinks; u++) {
    const up = `up${u}`;
    const dn = `dn${u}`;
    sh('ip', ['-n', a, 'link', 'add', up, 'type', 'veth', 'peer', 'name', dn, 'netns', b]);
    const ua = `10.${200 - u}.0.1`;
    const ub = `10.${200 - u}.0.2`;
    sh('ip', ['-n', a, 'addr', 'add', `${ua}/24`, 'dev', up]);
    sh('ip', ['-n', b, 'addr', 'add', `${ub}/24`, 'dev', dn]);
    sh('ip', ['-n', a, 'link', 'set', up, 'up']);
    sh('ip', ['-n', b, 'link', 'set', dn, 'up']);
    star.uplinks.push(up);
    star.underA.push(ua);
    star.underB.push(ub);
  }
  for (let i = 0; i < n; i++) addStarTunnel(star, i);
  return star;
}

/** Adds tunnel vx<i> (both ends), remote = B's address on dn0. */
export function addStarTunnel(star: Star, i: number): string {
  const name = `vx${i}`;
  const ends = [
    { ns: star.a, local: star.underA[0], remote: star.underB[0], me: star.innerA(i), peer: star.innerB(i), mine: mac(1, i), theirs: mac(2, i) },
    { ns: star.b, local: star.underB[0], remote: star.underA[0], me: star.innerB(i), peer: star.innerA(i), mine: mac(2, i), theirs: mac(1, i) },
  ];
  for (const e of ends) {
    sh('ip', ['-n', e.ns, 'link', 'add', name, 'address', e.mine, 'type', 'vxlan', 'id', String(star.vni(i)), 'local', e.local, 'remote', e.remote, 'dstport', '4789', 'tos', '0', 'ttl', '64']);
    sh('ip', ['-n', e.ns, 'addr', 'add', `${e.me}/24`, 'dev', name]);
    sh('ip', ['-n', e.ns, 'addr', 'add', 'fe80::1/64', 'dev', name, 'nodad']);
    sh('ip', ['-n', e.ns, 'link', 'set', name, 'up']);
    sh('ip', ['-n', e.ns, 'neigh', 'replace', e.peer, 'lladdr', e.theirs, 'dev', name, 'nud', 'permanent']);
    sh('ip', ['-n', e.ns, 'neigh', 'replace', 'fe80::2', 'lladdr', e.theirs, 'dev', name, 'nud', 'permanent']);
  }
  star.tunnels.push(name);
  return name;
}

export interface UdpSpec {
  family: 4 | 6;
  dst: string;
  dport: number;
  /** source address and port to bind (identical 5-tuples on several tunnels) */
  src?: string;
  sport?: number;
  /** interface for link-local scope / SO_BINDTODEVICE */
  dev?: string;
  /** traffic-class bytes, cycled per packet on the same socket */
  tclasses: number[];
  count: number;
  /** microseconds between packets */
  gapUs?: number;
  /** each packet from its own connected socket (distinct flows) */
  newSocketPerPacket?: boolean;
}

const SENDER = String.raw`
const koffi = require(process.env.PDSCP_KOFFI);
const lib = koffi.load('libc.so.6');
const socket = lib.func('int socket(int, int, int)');
const setsockopt = lib.func('int setsockopt(int, int, int, const void *, uint32_t)');
const bind = lib.func('int bind(int, const void *, uint32_t)');
const connect = lib.func('int connect(int, const void *, uint32_t)');
const send = lib.func('intptr_t send(int, const void *, size_t, int)');
const close = lib.func('int close(int)');
const ifindex = lib.func('uint32_t if_nametoindex(const char *)');
const usleep = lib.func('int usleep(uint32_t)');
const specs = JSON.parse(process.argv[process.argv.length - 1]);
function sa(v6, addrHex, port, scope) {
  if (v6) { const b = Buffer.alloc(28); b.writeUInt16LE(10, 0); b.writeUInt16BE(port, 2); Buffer.from(addrHex, 'hex').copy(b, 8); b.writeUInt32LE(scope, 24); return b; }
  const b = Buffer.alloc(16); b.writeUInt16LE(2, 0); b.writeUInt16BE(port, 2); Buffer.from(addrHex, 'hex').copy(b, 4); return b;
}
function open(s) {
  const v6 = s.family === 6;
  const fd = socket(v6 ? 10 : 2, 2, 0);
  if (fd < 0) throw new Error('socket errno ' + koffi.errno());
  const one = Buffer.alloc(4); one.writeInt32LE(1);
  setsockopt(fd, 1, 2, one, 4); // SO_REUSEADDR
  setsockopt(fd, 1, 15, one, 4); // SO_REUSEPORT
  const scope = s.dev ? ifindex(s.dev) : 0;
  if (s.dev) { const d = Buffer.from(s.dev + '\0'); if (setsockopt(fd, 1, 25, d, d.length) !== 0) throw new Error('SO_BINDTODEVICE errno ' + koffi.errno()); }
  if (s.srcHex || s.sport) {
    const src = s.srcHex || (v6 ? '00000000000000000000000000000000' : '00000000');
    if (bind(fd, sa(v6, src, s.sport || 0, scope), v6 ? 28 : 16) !== 0) throw new Error('bind errno ' + koffi.errno());
  }
  if (connect(fd, sa(v6, s.dstHex, s.dport, scope), v6 ? 28 : 16) !== 0) throw new Error('connect errno ' + koffi.errno());
  return fd;
}
function setTclass(fd, v6, t) {
  const v = Buffer.alloc(4); v.writeInt32LE(t);
  if (setsockopt(fd, v6 ? 41 : 0, v6 ? 67 : 1, v, 4) !== 0) throw new Error('tclass errno ' + koffi.errno());
}
for (const s of specs) {
  const v6 = s.family === 6;
  let fd = s.newSocketPerPacket ? -1 : open(s);
  for (let i = 0; i < s.count; i++) {
    if (s.newSocketPerPacket) fd = open(s);
    const t = s.tclasses[i % s.tclasses.length];
    setTclass(fd, v6, t);
    const msg = Buffer.alloc(32); msg.writeUInt32BE(i, 0); msg.writeUInt8(t, 4);
    let tries = 0;
    while (send(fd, msg, msg.length, 0) < 0) { if (++tries > 1000) throw new Error('send errno ' + koffi.errno()); usleep(200); }
    if (s.newSocketPerPacket) close(fd);
    if (s.gapUs) usleep(s.gapUs);
  }
  if (!s.newSocketPerPacket) close(fd);
}
`;

/** Runs the UDP senders (in parallel, one child each) in namespace ns. */
export async function sendUdp(ns: string, specs: UdpSpec[]): Promise<void> {
  await Promise.all(
    specs.map(async (s) => {
      const hex = (a: string) => (s.family === 6 ? ip6bytes(a) : ip4bytes(a)).toString('hex');
      const spec = { ...s, dstHex: hex(s.dst), srcHex: s.src ? hex(s.src) : undefined };
      const r = await runAsync('ip', ['netns', 'exec', ns, process.execPath, '-e', SENDER, '--', JSON.stringify([spec])], {
        env: { ...process.env, PDSCP_KOFFI: koffiPath() },
        timeoutMs: 120_000,
      });
      if (r.code !== 0) throw new Error(`UDP sender in ${ns} failed: ${r.stderr.trim().split('\n').slice(-3).join(' ')}`);
    }),
  );
}
