/** Shared helpers of the bench: timing, statistics, packets, shell. */
import { execFileSync, spawnSync } from 'node:child_process';

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function nowNs(): bigint {
  return process.hrtime.bigint();
}

export function msSince(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

export function round(x: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** Runs a command, throws with its stderr on failure. */
export function sh(cmd: string, args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv; allowFail?: boolean } = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input: opts.input, env: opts.env ?? process.env, maxBuffer: 256 << 20 });
  if (r.status !== 0 && !opts.allowFail) {
    throw new Error(`${cmd} ${args.join(' ').slice(0, 200)} failed (${r.status ?? r.signal}): ${(r.stderr || r.stdout || '').trim().slice(0, 800)}`);
  }
  return r.stdout;
}

/** Wall time of one command in ms (spawn to exit), and its output. */
export function timed(cmd: string, args: string[], env?: NodeJS.ProcessEnv): { ms: number; stdout: string; stderr: string; status: number | null } {
  const t0 = nowNs();
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: env ?? process.env, maxBuffer: 256 << 20 });
  const ms = msSince(t0);
  return { ms, stdout: r.stdout, stderr: r.stderr, status: r.status };
}

export function ns(name: string, cmd: string[], opts: { allowFail?: boolean; input?: string; env?: NodeJS.ProcessEnv } = {}): string {
  return sh('ip', ['netns', 'exec', name, ...cmd], opts);
}

export function delNetns(name: string): void {
  spawnSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
}

export function machine(): { nproc: number; cpu: string; kernel: string; node: string; clang: string } {
  const cpu = (execFileSync('sh', ['-c', "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], { encoding: 'utf8' }).trim() || 'unknown');
  return {
    nproc: Number(execFileSync('nproc', { encoding: 'utf8' }).trim()),
    cpu,
    kernel: execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim(),
    node: process.version,
    clang: execFileSync('clang', ['--version'], { encoding: 'utf8' }).split('\n')[0],
  };
}

/** 1-minute load average at the time of the call (context for the figures). */
export function loadavg(): number {
  return Number(execFileSync('cat', ['/proc/loadavg'], { encoding: 'utf8' }).split(' ')[0]);
}

// ---- a 32-bit mixer (distinct flow hashes for the map runs) ------------------

export function mix32(x: number): number {
  x >>>= 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

// ---- packets ----------------------------------------------------------------

function csum16(b: Buffer): number {
  let s = 0;
  for (let i = 0; i < b.length; i += 2) s += (b[i] << 8) | (b[i + 1] ?? 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

export function eth(proto: number, payload: Buffer): Buffer {
  const h = Buffer.from([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, proto >> 8, proto & 0xff]);
  return Buffer.concat([h, payload]);
}

/* Source addresses chosen so that BPF_PROG_TEST_RUN, which always runs
 * eth_type_trans() on the data, reads the right EtherType from bytes 12-13
 * when the packet starts at the IP header (l3 framing): 8.0.x.x for IPv4,
 * 2001:db8:86dd:: for IPv6. */
export const SRC4 = [8, 0, 0, 1];
export const DST4 = [10, 0, 0, 2];
export const SRC6 = Buffer.from('20010db886dd00000000000000000001', 'hex');
export const DST6 = Buffer.from('20010db8000000000000000000000002', 'hex');

export function ipv4(tos: number, proto: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(20);
  h[0] = 0x45;
  h[1] = tos;
  h.writeUInt16BE(20 + payload.length, 2);
  h.writeUInt16BE(0x1234, 4);
  h[8] = 64;
  h[9] = proto;
  h.set(SRC4, 12);
  h.set(DST4, 16);
  h.writeUInt16BE(csum16(h), 10);
  return Buffer.concat([h, payload]);
}

export function ipv6(tclass: number, nh: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(40);
  h.writeUInt32BE(((6 << 28) | (tclass << 20) | 0x12345) >>> 0, 0);
  h.writeUInt16BE(payload.length, 4);
  h[6] = nh;
  h[7] = 64;
  SRC6.copy(h, 8);
  DST6.copy(h, 24);
  return Buffer.concat([h, payload]);
}

export function tcp(sport: number, dport: number, payloadLen: number): Buffer {
  const h = Buffer.alloc(20 + payloadLen);
  h.writeUInt16BE(sport, 0);
  h.writeUInt16BE(dport, 2);
  h.writeUInt32BE(1, 4);
  h[12] = 5 << 4;
  h[13] = 0x10; // ACK
  h.writeUInt16BE(65535, 14);
  return h;
}

export function udp(sport: number, dport: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt16BE(sport, 0);
  h.writeUInt16BE(dport, 2);
  h.writeUInt16BE(8 + payload.length, 4);
  return Buffer.concat([h, payload]);
}

/** DSCP of the IP header at off (IPv4 or IPv6). */
export function dscpAt(pkt: Buffer, off: number): number {
  const v = pkt[off] >> 4;
  if (v === 4) return pkt[off + 1] >> 2;
  return (((pkt[off] & 0x0f) << 4) | (pkt[off + 1] >> 4)) >> 2;
}
