/** Status: what is attached where, read back from the kernel. */
import { BpfMap, possibleCpus } from './kernel/bpf.js';
import { COUNTER_SLOTS, type Counters, decodeCounters, type LinkRecord, MAP_FLOWS, MAP_STATS, u32Key } from './layout.js';
import type { Observed } from './observe.js';
import { describePolicy } from './policy.js';

export interface InterfaceStatus {
  ifname: string;
  ifindex: number;
  role: 'tunnel' | 'uplink';
  /** the interface still exists */
  present: boolean;
  /** our filter is on its egress hook */
  attached: boolean;
  program?: string;
  carrier?: 'map' | 'hash';
  framing: 'l2' | 'l3';
  outerSport?: number;
  outerDport?: number;
  wireguard?: boolean;
  /** tunnel: its uplinks; uplink: its tunnels */
  uplinks?: string[];
  tunnels?: string[];
  counters?: Counters;
}

export interface StatusReport {
  loaded: boolean;
  flows?: { entries: number; capacity: number };
  policy?: string;
  policyTable?: number[];
  interfaces: InterfaceStatus[];
  warnings: string[];
}

function readCounters(stats: BpfMap, ifindex: number): Counters {
  const v = stats.lookup(u32Key(ifindex % COUNTER_SLOTS)) ?? Buffer.alloc(stats.userValueSize);
  return decodeCounters(v, possibleCpus());
}

export function buildStatus(obs: Observed): StatusReport {
  const inst = obs.instance;
  if (!inst) {
    const warnings = obs.filters.length ? [`${obs.filters.length} filter(s) of preserve-dscp without a usable instance: run gc`] : [];
    return { loaded: false, interfaces: [], warnings };
  }
  const warnings: string[] = [];
  const present = (r: LinkRecord) => obs.links.some((l) => l.ifindex === r.ifindex && l.name === r.name);
  const filterOf = (ifindex: number) => obs.filters.find((f) => f.ifindex === ifindex);
  const nameOf = (ifindex: number) => inst.records.find((r) => r.ifindex === ifindex)?.name ?? `#${ifindex}`;
  const flows = BpfMap.byId(inst.mapIds[MAP_FLOWS]);
  const stats = BpfMap.byId(inst.mapIds[MAP_STATS]);
  try {
    const interfaces: InterfaceStatus[] = [];
    const seen = new Set<string>();
    for (const r of inst.records) {
      const id = `${r.role}/${r.ifindex}`;
      if (seen.has(id)) continue;
      seen.add(id);
      const f = filterOf(r.ifindex);
      const base: InterfaceStatus = {
        ifname: r.name,
        ifindex: r.ifindex,
        role: r.role,
        present: present(r),
        attached: !!f && present(r),
        program: f?.progName,
        framing: r.l3 ? 'l3' : 'l2',
        counters: present(r) ? readCounters(stats, r.ifindex) : undefined,
      };
      if (r.role === 'tunnel') {
        const pairs = inst.records.filter((x) => x.role === 'tunnel' && x.ifindex === r.ifindex);
        Object.assign(base, {
          carrier: r.carrier,
          outerSport: r.sport || undefined,
          outerDport: r.dport || undefined,
          wireguard: r.wireguard,
          uplinks: pairs.map((p) => nameOf(p.uplinkIfindex)),
        });
      } else {
        base.tunnels = inst.records.filter((x) => x.role === 'tunnel' && x.uplinkIfindex === r.ifindex).map((x) => x.name);
      }
      if (!base.present) warnings.push(`${r.name} (${r.role}) no longer exists: run gc`);
      else if (!base.attached) warnings.push(`${r.name} (${r.role}) has lost its filter: attach again or run gc`);
      interfaces.push(base);
    }
    interfaces.sort((a, b) => (a.role === b.role ? a.ifname.localeCompare(b.ifname, 'en', { numeric: true }) : a.role === 'uplink' ? -1 : 1));
    const slots = new Map<number, string[]>();
    for (const i of interfaces.filter((x) => x.present)) {
      const s = i.ifindex % COUNTER_SLOTS;
      slots.set(s, [...(slots.get(s) ?? []), i.ifname]);
    }
    for (const names of slots.values()) if (names.length > 1) warnings.push(`counters of ${names.join(', ')} are shared (ifindex modulo ${COUNTER_SLOTS})`);
    for (const f of obs.filters) {
      if (!inst.records.some((r) => r.ifindex === f.ifindex)) warnings.push(`${f.ifname}: filter of preserve-dscp not in the registry: run gc`);
      else if (f.flowsMapId !== inst.mapIds[MAP_FLOWS]) warnings.push(`${f.ifname}: filter uses another instance's maps: attach again or run gc`);
    }
    return {
      loaded: true,
      flows: { entries: flows.count(), capacity: inst.flowsMaxEntries },
      policy: describePolicy(inst.config.policy),
      policyTable: inst.config.policy,
      interfaces,
      warnings,
    };
  } finally {
    flows.close();
    stats.close();
  }
}
