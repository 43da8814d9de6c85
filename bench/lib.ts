/** Shared helpers of the bench: timing, statistics, packets, shell. */
import * as P from '../test/datapath/packets.js';
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

// ---- packets (the datapath tests' builder, in the bench's argument order) ----

export function eth(proto: number, payload: Buffer): Buffer {
  return P.ethernet(proto, payload);
}

export function ipv4(tos: number, proto: number, payload: Buffer): Buffer {
  return P.ipv4({ tos, proto, payload });
}

export function ipv6(tclass: number, nh: number, payload: Buffer): Buffer {
  return P.ipv6({ tclass, proto: nh, flowLabel: 0x12345, payload });
}

export function tcp(sport: number, dport: number, payloadLen: number): Buffer {
  return Buffer.concat([P.tcp(sport, dport), Buffer.alloc(payloadLen)]);
}

export const udp = P.udp;

/** DSCP of the IP header at off (IPv4 or IPv6). */
export function dscpAt(pkt: Buffer, off: number): number {
  return P.dsByte(pkt, off) >> 2;
}
