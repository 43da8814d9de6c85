/**
 * Per-packet cost with BPF_PROG_TEST_RUN: every datapath case against empty tc
 * programs loaded from the same object in the same run, all interleaved
 * within each round, median over rounds.
 */
import { BpfMap, testRun } from '../src/kernel/bpf.js';
import { type LoadedObject, loadObject } from '../src/kernel/object.js';
import { encodeConfig, IDENTITY_POLICY, type LinkRecord, MAP_CONFIG, MAP_FLOWS, portTable, u32Key } from '../src/layout.js';
import { dscpAt, eth, ipv4, ipv6, median, nowNs, tcp, udp } from './lib.js';
import { type FlowStore, LRU_STORE } from './variants.js';

export const CFG_KEY = 0x5eed1234;
export const MAP_PORT = 4789; // outer UDP dport of the map-carrier tunnel
export const HASH_PORT = 4790; // outer UDP dport of the hash-carrier tunnel
const EF = 46;
const AF41 = 34;

/** Config as the tool writes it for one map-carrier and one hash-carrier VXLAN tunnel. */
export function benchConfig(): Buffer {
  const rec = (ifindex: number, dport: number, carrier: 'map' | 'hash'): LinkRecord => ({
    ifindex,
    uplinkIfindex: 1,
    role: 'tunnel',
    sport: 0,
    dport,
    carrier,
    createdClsact: false,
    l3: false,
    wireguard: false,
    name: `vx${ifindex}`,
  });
  const { ports } = portTable([rec(10, MAP_PORT, 'map'), rec(11, HASH_PORT, 'hash')]);
  return encodeConfig({ key: CFG_KEY, flags: 0, policy: [...IDENTITY_POLICY], ports });
}

/** struct __sk_buff for ctx_in: only mark is set (ifindex 0: the loopback device, ifindex 1). */
export function ctxWithMark(mark: number): Buffer {
  const c = Buffer.alloc(192);
  c.writeUInt32LE(mark >>> 0, 8);
  return c;
}

// ---- packets -------------------------------------------------------------
const innerTcp4 = (dscp: number) => ipv4(dscp << 2, 6, tcp(40000, 5201, 64));
const frame = (l3: boolean, ip: Buffer, v6 = false) => (l3 ? ip : eth(v6 ? 0x86dd : 0x0800, ip));
/** Outer VXLAN packet: outer IP/UDP to dport, VXLAN header, inner Ethernet + IPv4/TCP. */
function outer(v6: boolean, dport: number): Buffer {
  const vxlan = Buffer.from([0x08, 0, 0, 0, 0, 0, 42, 0]);
  const payload = udp(50000, dport, Buffer.concat([vxlan, eth(0x0800, innerTcp4(EF))]));
  return v6 ? ipv6(0, 17, payload) : ipv4(0, 17, payload);
}

export interface Case {
  id: string;
  group: 'tunnel' | 'uplink';
  label: string;
  prog: string;
  /** empty program doing the same preparation (set_hash, packet reset) */
  base: string;
  pkt: Buffer;
  mark: number;
  /** target: ratio to the matched empty must stay at or below */
  target?: number;
  /** mark computed by the kernel: the skb->hash a wrapper (b_thash_key) leaves for this mark and packet */
  markFrom?: { prog: string; mark: number; pkt: Buffer };
  /** sanity check after one run (repeat 1); key: the map carrier's flow key for the case's mark */
  check?: (out: Buffer, flows: BpfMap, store: FlowStore, key: number) => string | undefined;
}

function tunnelCheck(dscp: number | null) {
  return (_out: Buffer, flows: BpfMap, store: FlowStore, key: number): string | undefined => {
    const v = store.read(flows, key);
    if (dscp === null) return v !== undefined ? `entry present for DSCP 0` : undefined;
    return v === dscp ? undefined : `flow entry ${v ?? 'missing'}, expected ${dscp}`;
  };
}

function upCheck(l3: boolean, dscp: number) {
  return (out: Buffer): string | undefined => {
    const got = dscpAt(out, l3 ? 0 : 14);
    return got === dscp ? undefined : `outer DSCP ${got}, expected ${dscp}`;
  };
}

const UP_MAP_HASH = 0x0badf00d; // raw skb->hash the uplink looks up (map carrier)
const UP_MISS_HASH = 0x0dead001;

export function cases(): Case[] {
  const out: Case[] = [];
  for (const l3 of [false, true]) {
    const f = l3 ? 'l3' : 'l2';
    const m = (n: number) => 0x1000 * n + (l3 ? 1 : 0) + 0x77000000;
    out.push(
      { id: `tmap_cur_${f}`, group: 'tunnel', label: `tunnel map, entry current (${f})`, prog: `b_tmap_${f}`, base: 'b_e_sethash', pkt: frame(l3, innerTcp4(EF)), mark: m(1), target: 2.0, check: tunnelCheck(EF) },
      { id: `tmap_new_${f}`, group: 'tunnel', label: `tunnel map, new DSCP each packet (${f})`, prog: `b_tmapnew_${f}`, base: `b_e_flip_${f}`, pkt: frame(l3, innerTcp4(EF)), mark: m(2), check: tunnelCheck(AF41) },
      { id: `tmap_zero_${f}`, group: 'tunnel', label: `tunnel map, DSCP 0 (${f})`, prog: `b_tmap_${f}`, base: 'b_e_sethash', pkt: frame(l3, innerTcp4(0)), mark: m(3), check: tunnelCheck(null) },
      { id: `tmap_scr_${f}`, group: 'tunnel', label: `tunnel map, hash from scratch (${f})`, prog: `b_tmapscr_${f}`, base: 'b_e_invalid', pkt: frame(l3, innerTcp4(EF)), mark: 0 },
      { id: `thash_${f}`, group: 'tunnel', label: `tunnel hash carrier (${f})`, prog: `b_thash_${f}`, base: 'b_e_sethash', pkt: frame(l3, innerTcp4(EF)), mark: m(4), target: 1.5 },
      { id: `prod_tmap_${f}`, group: 'tunnel', label: `pdscp_tmap_${f} as built, new flow each packet`, prog: `pdscp_tmap_${f}`, base: 'b_empty', pkt: frame(l3, innerTcp4(EF)), mark: 0 },
      { id: `prod_thash_${f}`, group: 'tunnel', label: `pdscp_thash_${f} as built`, prog: `pdscp_thash_${f}`, base: 'b_empty', pkt: frame(l3, innerTcp4(EF)), mark: 0, target: 1.5 },
    );
    for (const v6 of [false, true]) {
      const ip = v6 ? 'v6' : 'v4';
      out.push(
        { id: `up_map_${ip}_${f}`, group: 'uplink', label: `uplink map hit, IP${ip} outer (${f})`, prog: `b_up_${f}`, base: `b_e_reset_${f}`, pkt: frame(l3, outer(v6, MAP_PORT), v6), mark: UP_MAP_HASH, target: 2.0, check: upCheck(l3, EF) },
        { id: `up_hash_${ip}_${f}`, group: 'uplink', label: `uplink hash decode, IP${ip} outer (${f})`, prog: `b_up_${f}`, base: `b_e_reset_${f}`, pkt: frame(l3, outer(v6, HASH_PORT), v6), mark: 0, markFrom: { prog: 'b_thash_key', mark: 0x9abcdef0, pkt: frame(false, innerTcp4(AF41)) }, target: 1.5, check: upCheck(l3, AF41) },
      );
    }
    out.push({ id: `up_miss_${f}`, group: 'uplink', label: `uplink map miss, IPv4 outer (${f})`, prog: `b_up_${f}`, base: `b_e_reset_${f}`, pkt: frame(l3, outer(false, MAP_PORT)), mark: UP_MISS_HASH, check: upCheck(l3, 0) });
  }
  return out;
}

interface Item {
  key: string;
  fd: number;
  prog: string;
  pkt: Buffer;
  ctx: Buffer;
  samples: number[]; // ns per packet
  kernel: number[]; // kernel-reported ns (integer)
}

export interface CaseResult {
  id: string;
  group: string;
  label: string;
  prog: string;
  base: string;
  ns: number;
  baseNs: number;
  emptyNs: number;
  /** kernel-reported medians (whole ns) */
  kernelNs: number;
  kernelBaseNs: number;
  ratio: number;
  ratioEmpty: number;
  target?: number;
  pass?: boolean;
  checkError?: string;
}

/** One object to measure: the bench object or a variant of it. */
export interface Subject {
  tag: string;
  objPath: string;
  cases: Case[];
  store?: FlowStore;
  flowsSize?: number;
}

export interface PerPacketResult {
  repeat: number;
  rounds: number;
  results: Record<string, CaseResult[]>;
  /** median ns of each empty program (lowest over the packets it ran with), per subject */
  baselines: Record<string, Record<string, number>>;
  seconds: number;
}

export const programsOf = (cs: Case[]) => [...new Set(['b_empty', 'b_tmap_key', 'b_thash_key', ...cs.flatMap((c) => [c.prog, c.base])])];

export function loadBench(objPath: string, programs: string[], flowsSize = 16384): LoadedObject {
  return loadObject(objPath, { programs, maxEntries: { [MAP_FLOWS]: flowsSize } });
}

const EINTR = 4;
/** testRun, retried when a signal (SIGCHLD of a child process) interrupts it. */
export function testRunRetry(fd: number, pkt: Buffer, opts: { repeat: number; ctx: Buffer }) {
  for (let i = 0; ; i++) {
    try {
      return testRun(fd, pkt, opts);
    } catch (e) {
      if ((e as { errno?: number }).errno !== EINTR || i > 20) throw e;
    }
  }
}

/**
 * ns per packet of one test run: wall time of the syscall / repeat gives
 * sub-ns resolution (the kernel reports whole ns); when the wall time is more
 * than 1 ns/packet above the kernel's figure the run was preempted (the
 * kernel's timer stops while it yields) and the kernel figure + 0.5 is used.
 */
function once(it: Item, repeat: number): void {
  const t0 = nowNs();
  const r = testRunRetry(it.fd, it.pkt, { repeat, ctx: it.ctx });
  const wall = Number(nowNs() - t0) / repeat;
  it.kernel.push(r.duration);
  it.samples.push(wall < r.duration + 1 ? Math.max(wall, r.duration) : r.duration + 0.5);
}

export function runPerPacket(subjects: Subject[], opts: { repeat: number; rounds: number }): PerPacketResult {
  const t0 = nowNs();
  const objs: LoadedObject[] = [];
  try {
    const items = new Map<string, Item>();
    const plan: Array<{ s: Subject; c: Case; k: string; b: string; e: string; err?: string }> = [];
    for (const s of subjects) {
      const store = s.store ?? LRU_STORE;
      const obj = loadBench(s.objPath, programsOf(s.cases), s.flowsSize);
      objs.push(obj);
      const flows = new BpfMap(obj.mapFd(MAP_FLOWS)); // fds owned by obj
      new BpfMap(obj.mapFd(MAP_CONFIG)).update(u32Key(0), benchConfig());
      store.write(flows, UP_MAP_HASH, EF, 1);
      const item = (prog: string, c: Case): string => {
        const key = `${s.tag}|${prog}|${c.pkt.toString('hex')}|${c.mark}`;
        if (!items.has(key)) items.set(key, { key, fd: obj.progFd(prog), prog, pkt: c.pkt, ctx: ctxWithMark(c.mark), samples: [], kernel: [] });
        return key;
      };
      const keyPkt = frame(false, innerTcp4(EF));
      for (const c0 of s.cases) {
        const c = { ...c0 };
        if (c.markFrom) c.mark = testRunRetry(obj.progFd(c.markFrom.prog), c.markFrom.pkt, { repeat: 1, ctx: ctxWithMark(c.markFrom.mark) }).ctx!.readUInt32LE(8);
        // sanity: the flow key of the mark (b_tmap_key also stores EF for it), one run of the case, its check
        const key = c.check && c.group === 'tunnel' ? testRunRetry(obj.progFd('b_tmap_key'), keyPkt, { repeat: 1, ctx: ctxWithMark(c.mark) }).ctx!.readUInt32LE(8) : 0;
        const r = testRunRetry(obj.progFd(c.prog), c.pkt, { repeat: 1, ctx: ctxWithMark(c.mark) });
        const err = r.retval !== -1 ? `retval ${r.retval}` : c.check?.(r.data, flows, store, key);
        plan.push({ s, c, k: item(c.prog, c), b: item(c.base, c), e: item('b_empty', c), err });
      }
    }
    const list = [...items.values()];
    for (const it of list) testRunRetry(it.fd, it.pkt, { repeat: Math.min(opts.repeat, 100000), ctx: it.ctx }); // warm-up
    for (let r = 0; r < opts.rounds; r++) {
      // all items once per round; the order rotates so no item always follows the same one
      for (let i = 0; i < list.length; i++) once(list[(i + r * 7) % list.length], opts.repeat);
    }
    const med = (k: string) => median(items.get(k)!.samples);
    const kmed = (k: string) => median(items.get(k)!.kernel);
    const results: Record<string, CaseResult[]> = {};
    for (const { s, c, k, b, e, err } of plan) {
      const ns = med(k);
      const baseNs = med(b);
      const emptyNs = med(e);
      const ratio = ns / baseNs;
      (results[s.tag] ??= []).push({
        id: c.id,
        group: c.group,
        label: c.label,
        prog: c.prog,
        base: c.base,
        ns,
        baseNs,
        emptyNs,
        kernelNs: kmed(k),
        kernelBaseNs: kmed(b),
        ratio,
        ratioEmpty: ns / emptyNs,
        target: c.target,
        pass: c.target === undefined ? undefined : ratio <= c.target,
        checkError: err,
      });
    }
    const baselines: Record<string, Record<string, number>> = {};
    for (const it of list) {
      if (!(it.prog.startsWith('b_e') || it.prog === 'b_empty')) continue;
      const tag = it.key.split('|')[0];
      const b = (baselines[tag] ??= {});
      b[it.prog] = Math.min(b[it.prog] ?? Infinity, median(it.samples));
    }
    return { repeat: opts.repeat, rounds: opts.rounds, results, baselines, seconds: Number(nowNs() - t0) / 1e9 };
  } finally {
    for (const o of objs) o.close();
  }
}
