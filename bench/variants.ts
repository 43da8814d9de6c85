/**
 * Modified copies of the datapath, built in the bench's temp dir, to find
 * where the time goes and what a change would gain. bpf/ is never edited:
 * each variant is a list of exact text replacements applied to a copy; a
 * variant whose text no longer matches the source is skipped (reported).
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BpfMap } from '../src/kernel/bpf.js';
import { u32Key } from '../src/layout.js';

export interface FlowStore {
  /** write the entry the uplink finds for skb->hash = hash */
  write(flows: BpfMap, hash: number, dscp: number, checked: number): void;
  /** DSCP stored for hash, undefined if none */
  read(flows: BpfMap, hash: number): number | undefined;
}

export const LRU_STORE: FlowStore = {
  write(flows, hash, dscp, checked) {
    flows.update(u32Key(hash), Buffer.from([dscp, checked, 0, 0]));
  },
  read(flows, hash) {
    return flows.lookup(u32Key(hash))?.[0];
  },
};

/** Direct-mapped array: slot = hash & (slots - 1), u64 value = hash | dscp << 32 | checked << 40. */
export function arrayStore(slots: number): FlowStore {
  return {
    write(flows, hash, dscp, checked) {
      const v = Buffer.alloc(8);
      v.writeUInt32LE(hash >>> 0, 0);
      v[4] = dscp;
      v[5] = checked;
      flows.update(u32Key(hash & (slots - 1)), v);
    },
    read(flows, hash) {
      const v = flows.lookup(u32Key(hash & (slots - 1)));
      return v && v.readUInt32LE(0) === hash >>> 0 && v[4] ? v[4] : undefined;
    },
  };
}

export interface Variant {
  name: string;
  what: string;
  patches: Array<[string, string]>;
  /** direct-mapped array flow store (needs -DFLOW_SLOTS) */
  array?: boolean;
}

const NOCOUNT: [string, string] = ['if (c)\n\t\tc->v[which]++;', '(void)c;\n\t(void)which;'];
const NODECODE: [string, string] = ['if ((cfg->flags & PDSCP_CFG_MIXED_PORTS) && hc_decode(hash, cfg->key) >= 0)\n\t\thash ^= 1;', ''];
const ARRAY_MAP: [string, string] = [
  `struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384); /* the loader sets the configured size */
	__type(key, __u32);
	__type(value, struct pdscp_flow);
} pdscp_flows SEC(".maps");`,
  `/* bench variant: direct-mapped flow cache, slot = hash & (FLOW_SLOTS - 1);
 * the u64 value is hash | dscp << 32 | checked << 40 (one store, one load). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FLOW_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} pdscp_flows SEC(".maps");`,
];
const ARRAY_TUNNEL: [string, string] = [
  `	struct pdscp_flow *cur = bpf_map_lookup_elem(&pdscp_flows, &hash);

	if (dscp == 0) {
		if (cur) {
			bpf_map_delete_elem(&pdscp_flows, &hash);
			count(c, PDSCP_C_REMOVED);
		} else {
			count(c, PDSCP_C_CURRENT);
		}
		return TC_ACT_UNSPEC;
	}
	if (cur && cur->dscp == dscp && cur->checked == checked) {
		count(c, PDSCP_C_CURRENT);
		return TC_ACT_UNSPEC;
	}
	struct pdscp_flow val = { .dscp = dscp, .checked = checked };

	bpf_map_update_elem(&pdscp_flows, &hash, &val, BPF_ANY);`,
  `	__u32 slot = hash & (FLOW_SLOTS - 1);
	__u64 *e = bpf_map_lookup_elem(&pdscp_flows, &slot);
	__u64 want = (__u64)hash | ((__u64)dscp << 32) | ((__u64)checked << 40);
	__u64 old;

	if (!e)
		return TC_ACT_UNSPEC;
	old = *(volatile __u64 *)e;
	if (dscp == 0) {
		if ((__u32)old == hash && (old >> 32)) {
			*(volatile __u64 *)e = 0;
			count(c, PDSCP_C_REMOVED);
		} else {
			count(c, PDSCP_C_CURRENT);
		}
		return TC_ACT_UNSPEC;
	}
	if (old == want) {
		count(c, PDSCP_C_CURRENT);
		return TC_ACT_UNSPEC;
	}
	*(volatile __u64 *)e = want;`,
];
const ARRAY_UPLINK: [string, string] = [
  `		struct pdscp_flow *f = bpf_map_lookup_elem(&pdscp_flows, &hash);

		if (!f || (f->checked && !(roles & PDSCP_PORT_MAP))) {
			count(c, PDSCP_C_MISS);
			return TC_ACT_UNSPEC;
		}
		dscp = f->dscp & 0x3f;`,
  `		__u32 slot = hash & (FLOW_SLOTS - 1);
		__u64 *e = bpf_map_lookup_elem(&pdscp_flows, &slot);
		__u64 fv = e ? *(volatile __u64 *)e : 0;

		if ((__u32)fv != hash || !(fv >> 32) || (((fv >> 40) & 1) && !(roles & PDSCP_PORT_MAP))) {
			count(c, PDSCP_C_MISS);
			return TC_ACT_UNSPEC;
		}
		dscp = (fv >> 32) & 0x3f;`,
];

export const VARIANTS: Variant[] = [
  { name: 'as-is', what: 'bpf/preserve_dscp.bpf.c unchanged', patches: [] },
  { name: 'no-counters', what: 'count() does nothing (cost of the per-CPU counters)', patches: [NOCOUNT] },
  { name: 'no-decode', what: 'map carrier without the mixed-port check (off by default unless a port serves both carriers)', patches: [NODECODE] },
  { name: 'array', what: 'pdscp_flows as a direct-mapped ARRAY (slot = hash & mask, u64 tag+DSCP) instead of LRU_HASH', patches: [ARRAY_MAP, ARRAY_TUNNEL, ARRAY_UPLINK], array: true },
];

export interface BuiltVariant {
  variant: Variant;
  obj?: string;
  error?: string;
}

const ARCH = { x86_64: 'x86_64-linux-gnu', aarch64: 'aarch64-linux-gnu' } as Record<string, string>;
export function clangArgs(): string[] {
  const m = execFileSync('uname', ['-m'], { encoding: 'utf8' }).trim();
  return ['-O2', '-g', '-target', 'bpf', `-I/usr/include/${ARCH[m] ?? `${m}-linux-gnu`}`];
}

/** Builds the bench object from a patched copy of the datapath in dir/<name>/. */
export function buildVariant(root: string, tmp: string, v: Variant, flowSlots = 16384): BuiltVariant {
  const dir = join(tmp, `${v.name}-${flowSlots}`);
  mkdirSync(join(dir, 'bpf'), { recursive: true });
  mkdirSync(join(dir, 'bench'), { recursive: true });
  let src = readFileSync(join(root, 'bpf', 'preserve_dscp.bpf.c'), 'utf8');
  for (const [from, to] of v.patches) {
    if (!src.includes(from)) return { variant: v, error: `source changed: patch no longer applies (${from.split('\n')[0].trim().slice(0, 60)})` };
    src = src.split(from).join(to); // every occurrence
  }
  writeFileSync(join(dir, 'bpf', 'preserve_dscp.bpf.c'), src);
  copyFileSync(join(root, 'bpf', 'preserve_dscp.h'), join(dir, 'bpf', 'preserve_dscp.h'));
  copyFileSync(join(root, 'bench', 'bench.bpf.c'), join(dir, 'bench', 'bench.bpf.c'));
  const out = join(dir, 'bench.bpf.o');
  try {
    execFileSync('clang', [...clangArgs(), `-I${join(dir, 'bpf')}`, `-DFLOW_SLOTS=${flowSlots}`, '-c', join(dir, 'bench', 'bench.bpf.c'), '-o', out], { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    return { variant: v, error: `clang: ${String((e as { stderr?: Buffer }).stderr ?? e).slice(0, 400)}` };
  }
  return { variant: v, obj: out };
}
