/**
 * tc clsact + cls_bpf (direct action) on the egress hook, at the tool's own
 * handle and priority, through libbpf's bpf_tc_* (netlink in the current
 * network namespace). Other filters and qdiscs are never touched.
 */
import { execFileSync } from 'node:child_process';
import { check, libbpf } from './libbpf.js';

const BPF_TC_INGRESS = 1;
const BPF_TC_EGRESS = 2;
const BPF_TC_F_REPLACE = 1;
const ENOENT = 2;
const EEXIST = 17;
const ENODEV = 19;

export interface FilterId {
  handle: number;
  priority: number;
}

function hook(ifindex: number, point = BPF_TC_EGRESS): Buffer {
  const h = Buffer.alloc(24);
  h.writeBigUInt64LE(24n, 0);
  h.writeInt32LE(ifindex, 8);
  h.writeUInt32LE(point, 12);
  return h;
}

function opts(id: FilterId, progFd = 0, flags = 0): Buffer {
  const o = Buffer.alloc(32);
  o.writeBigUInt64LE(32n, 0);
  o.writeInt32LE(progFd, 8);
  o.writeUInt32LE(flags, 12);
  o.writeUInt32LE(id.handle, 20);
  o.writeUInt32LE(id.priority, 24);
  return o;
}

/** Adds the clsact qdisc; returns false if the device already had one. */
export function ensureClsact(ifindex: number): boolean {
  const r = libbpf().bpf_tc_hook_create(hook(ifindex, BPF_TC_INGRESS | BPF_TC_EGRESS));
  if (r === -EEXIST) return false;
  check(r, `adding clsact qdisc to ifindex ${ifindex}`);
  return true;
}

/** Removes the whole clsact qdisc (ingress and egress). */
export function removeClsact(ifindex: number): void {
  const r = libbpf().bpf_tc_hook_destroy(hook(ifindex, BPF_TC_INGRESS | BPF_TC_EGRESS));
  if (r !== -ENOENT && r !== -22) check(r, `removing clsact qdisc from ifindex ${ifindex}`);
}

/** Attaches (or atomically replaces) the filter at id on egress. */
export function attachEgress(ifindex: number, id: FilterId, progFd: number, replace: boolean): void {
  check(libbpf().bpf_tc_attach(hook(ifindex), opts(id, progFd, replace ? BPF_TC_F_REPLACE : 0)), `attaching tc filter on ifindex ${ifindex}`);
}

/** Program id of the filter at id on egress, or undefined if there is none. */
export function queryEgress(ifindex: number, id: FilterId): number | undefined {
  const o = opts(id);
  const r = libbpf().bpf_tc_query(hook(ifindex), o);
  // No filter, no clsact (EINVAL), or the device vanished meanwhile (ENODEV).
  if (r === -ENOENT || r === -22 || r === -ENODEV) return undefined;
  check(r, `querying tc filter on ifindex ${ifindex}`);
  return o.readUInt32LE(16);
}

/** Removes the filter at id on egress; false if it was not there. */
export function detachEgress(ifindex: number, id: FilterId): boolean {
  const r = libbpf().bpf_tc_detach(hook(ifindex), opts(id));
  if (r === -ENOENT || r === -22 || r === -ENODEV) return false;
  check(r, `removing tc filter from ifindex ${ifindex}`);
  return true;
}

/**
 * Number of filters of any owner on each device's clsact ingress and egress,
 * with one `tc -batch` for all devices (one process, not two per device).
 */
export function clsactFilterCounts(ifnames: string[]): Map<string, number> {
  const counts = new Map<string, number>();
  if (ifnames.length === 0) return counts;
  const cmds = ifnames.flatMap((n) => [`filter show dev ${n} ingress`, `filter show dev ${n} egress`]);
  const out = execFileSync('tc', ['-j', '-batch', '-'], { input: `${cmds.join('\n')}\n`, encoding: 'utf8', stdio: ['pipe', 'pipe', 'ignore'], maxBuffer: 256 << 20 });
  const lines = out.split('\n').filter((l) => l.trim());
  if (lines.length !== cmds.length) throw new Error(`tc -batch answered ${lines.length} of ${cmds.length} queries`);
  ifnames.forEach((n, i) => {
    // tc lists a header entry per priority without options, and one per filter.
    const perHook = [lines[2 * i], lines[2 * i + 1]].map((l) => (JSON.parse(l) as Array<{ options?: unknown }>).filter((f) => f.options !== undefined).length);
    counts.set(n, perHook[0] + perHook[1]);
  });
  return counts;
}
