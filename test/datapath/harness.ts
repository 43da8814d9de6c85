/**
 * Loads the real datapath into the kernel for BPF_PROG_TEST_RUN.
 *
 * test/datapath/harness.bpf.c includes bpf/preserve_dscp.bpf.c unchanged and
 * adds wrappers that set skb->hash from skb->mark (ctx_in cannot set the
 * hash) and, on the tunnel side, return the resulting skb->hash in cb[0].
 *
 * The test process moves itself into a fresh network namespace (unshare of
 * the calling thread; Node runs JS and FFI calls on it) so the device the
 * tests need exists without touching the host's: besides lo (ifindex 1),
 * pdeth (ifb, ifindex 700: counter slot 700 % 512 = 188).
 *
 * The test run of a tc program always reads skb->protocol from bytes 12-13
 * of the data and starts skb->data at byte 0, for any device; L3 frames are
 * therefore passed as the bare IP packet (see packets.ts V4_SRC).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import koffi from 'koffi';
import { BpfMap, possibleCpus, testRun } from '../../src/kernel/bpf.js';
import { KernelError } from '../../src/kernel/libbpf.js';
import { loadObject, type LoadedObject } from '../../src/kernel/object.js';
import {
  CFG_MIXED_PORTS,
  COUNTER_NAMES,
  COUNTERS_PER_SLOT,
  COUNTER_SLOTS,
  decodeCounters,
  encodeConfig,
  IDENTITY_POLICY,
  MAP_CONFIG,
  MAP_FLOWS,
  MAP_STATS,
  mixedPorts,
  u32Key,
  type Carrier,
  type Config,
  type Counters,
} from '../../src/layout.js';
import type { Frame } from './packets.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../..');

export const TC_ACT_UNSPEC = -1;

/** Compiles harness.bpf.c (cached by the sources' content) and returns the object path. */
export function buildHarness(): string {
  const sources = ['test/datapath/harness.bpf.c', 'bpf/preserve_dscp.bpf.c', 'bpf/preserve_dscp.h'];
  const h = createHash('sha256');
  for (const s of sources) h.update(readFileSync(join(root, s)));
  const dir = join(tmpdir(), 'pdscp-datapath-test');
  mkdirSync(dir, { recursive: true });
  const out = join(dir, `harness-${h.digest('hex').slice(0, 16)}.bpf.o`);
  if (existsSync(out)) return out;
  const clang = process.env.CLANG ?? 'clang';
  const arch = execFileSync('uname', ['-m'], { encoding: 'utf8' }).trim();
  const multiarch = { x86_64: 'x86_64-linux-gnu', aarch64: 'aarch64-linux-gnu' }[arch] ?? `${arch}-linux-gnu`;
  const tmp = `${out}.${process.pid}.tmp`;
  execFileSync(
    clang,
    ['-O2', '-g', '-Wall', '-Werror', '-target', 'bpf', `-I/usr/include/${multiarch}`, '-Ibpf', '-c', 'test/datapath/harness.bpf.c', '-o', tmp],
    { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] },
  );
  renameSync(tmp, out);
  return out;
}

export const IFINDEX_LO = 1;
export let IFINDEX_ETH700 = 0;
let netnsReady = false;

function ifindexOf(name: string): number {
  const line = execFileSync('ip', ['-o', 'link', 'show', 'dev', name], { encoding: 'utf8' });
  return Number(line.split(':')[0]);
}

/** Moves this process's main thread into a new network namespace with the test devices. */
export function enterTestNetns(): void {
  if (netnsReady) return;
  const libc = koffi.load('libc.so.6');
  const unshare = libc.func('int unshare(int flags)');
  const CLONE_NEWNET = 0x40000000;
  if (unshare(CLONE_NEWNET) !== 0) throw new Error(`unshare(CLONE_NEWNET) failed: errno ${koffi.errno()}`);
  execFileSync('ip', ['link', 'add', 'name', 'pdeth', 'index', '700', 'type', 'ifb']);
  IFINDEX_ETH700 = ifindexOf('pdeth');
  netnsReady = true;
}

let setAffinity: ((pid: number, size: number, mask: Buffer) => number) | undefined;
/** Pins the calling (main) thread to one CPU; null: all CPUs. BPF_PROG_TEST_RUN runs on it. */
export function pinCpu(cpu: number | null): void {
  setAffinity ??= koffi.load('libc.so.6').func('int sched_setaffinity(int pid, size_t size, const void *mask)') as never;
  const mask = Buffer.alloc(128);
  if (cpu === null) mask.fill(0xff);
  else mask[cpu >> 3] = 1 << (cpu & 7);
  if (setAffinity!(0, mask.length, mask) !== 0) throw new Error(`sched_setaffinity: errno ${koffi.errno()}`);
}

export const WRAPPERS = [
  'h_tmap_l2',
  'h_tmap_l3',
  'h_tmapu_l2',
  'h_tmapu_l3',
  'h_thash_l2',
  'h_thash_l3',
  'h_up_l2',
  'h_up_l3',
] as const;
export type Wrapper = (typeof WRAPPERS)[number];

export function tunnelProg(carrier: Carrier, l3: boolean, checked = true): Wrapper {
  const f = l3 ? 'l3' : 'l2';
  if (carrier === 'hash') return `h_thash_${f}`;
  return checked ? `h_tmap_${f}` : `h_tmapu_${f}`;
}
export function uplinkProg(l3: boolean): Wrapper {
  return l3 ? 'h_up_l3' : 'h_up_l2';
}

export interface RunResult {
  retval: number;
  /** the packet after the program, in the same framing as the input Frame's data */
  data: Buffer;
  /** skb->hash after a tunnel wrapper (cb[0]) */
  hash: number;
  mark: number;
}

export interface RunOpts {
  /** flow hash to preset (skb->mark for the wrappers); 0: none / from scratch */
  hash?: number;
  /** device the skb is on (skb->ifindex); default lo */
  ifindex?: number;
}

export class Harness {
  readonly obj: LoadedObject;
  readonly flows: BpfMap;
  readonly config: BpfMap;
  readonly stats: BpfMap;
  private readonly fds = new Map<string, number>();

  constructor(extraPrograms: string[] = []) {
    enterTestNetns();
    this.obj = loadObject(buildHarness(), { programs: [...WRAPPERS, ...extraPrograms] });
    this.flows = new BpfMap(this.obj.mapFd(MAP_FLOWS));
    this.config = new BpfMap(this.obj.mapFd(MAP_CONFIG));
    this.stats = new BpfMap(this.obj.mapFd(MAP_STATS));
    for (const p of [...WRAPPERS, ...extraPrograms]) this.fds.set(p, this.obj.progFd(p));
  }

  setConfig(c: Partial<Config>): void {
    this.config.update(
      u32Key(0),
      encodeConfig({
        key: c.key ?? 0,
        flags: c.flags ?? (c.ports && mixedPorts(c.ports) ? CFG_MIXED_PORTS : 0),
        policy: c.policy ?? [...IDENTITY_POLICY],
        ports: c.ports ?? new Uint8Array(65536),
      }),
    );
  }

  run(prog: string, f: Frame, o: RunOpts = {}): RunResult {
    const fd = this.fds.get(prog);
    if (fd === undefined) throw new Error(`program ${prog} not loaded`);
    const ctx = Buffer.alloc(192);
    ctx.writeUInt32LE((o.hash ?? 0) >>> 0, 8);
    ctx.writeUInt32LE(o.ifindex ?? IFINDEX_LO, 40);
    const r = testRun(fd, f.data, { ctx });
    const out = r.ctx!;
    return { retval: r.retval, data: Buffer.from(r.data), hash: out.readUInt32LE(48), mark: out.readUInt32LE(8) };
  }

  /**
   * Like run(), but returns 'refused' when the kernel's test run rejects the
   * frame (EINVAL): it needs >= 14 bytes, and when bytes 12-13 say IPv4/IPv6
   * a complete IPv4/IPv6 header after them.
   */
  runOrRefused(prog: string, f: Frame, o: RunOpts = {}): RunResult | 'refused' {
    try {
      return this.run(prog, f, o);
    } catch (e) {
      if (e instanceof KernelError && e.errno === 22) return 'refused';
      throw e;
    }
  }

  flow(hash: number): { dscp: number; checked: number } | undefined {
    const v = this.flows.lookup(u32Key(hash));
    return v && { dscp: v[0], checked: v[1] };
  }

  setFlow(hash: number, dscp: number, checked: number): void {
    this.flows.update(u32Key(hash), Buffer.from([dscp, checked, 0, 0]));
  }

  clearFlows(): void {
    const keys = [...this.flows.keys()];
    for (const k of keys) this.flows.delete(k);
  }

  /** Counters of a slot (ifindex % 512), per-CPU values summed. */
  counters(ifindex: number): Counters {
    return decodeCounters(this.stats.lookup(u32Key(ifindex % COUNTER_SLOTS))!, possibleCpus());
  }

  /** One counter of a slot as stored per CPU. */
  perCpu(ifindex: number, name: (typeof COUNTER_NAMES)[number]): number[] {
    const v = this.stats.lookup(u32Key(ifindex % COUNTER_SLOTS))!;
    const stride = this.stats.userValueSize / possibleCpus();
    const i = COUNTER_NAMES.indexOf(name);
    return Array.from({ length: possibleCpus() }, (_, cpu) => Number(v.readBigUInt64LE(cpu * stride + i * 8)));
  }

  /** Counter changes since `before`, only the non-zero ones. */
  delta(ifindex: number, before: Counters): Partial<Counters> {
    const now = this.counters(ifindex);
    const d: Partial<Counters> = {};
    for (const n of COUNTER_NAMES) if (now[n] !== before[n]) d[n] = now[n] - before[n];
    return d;
  }

  close(): void {
    this.flows.close();
    this.config.close();
    this.stats.close();
    this.obj.close();
  }
}

export const STATS_VALUE_SIZE = COUNTERS_PER_SLOT * 8;

/** Deterministic 32-bit PRNG (mulberry32) so the suite is reproducible. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}
