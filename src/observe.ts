/**
 * Observe: read what is installed in this network namespace from the kernel
 * alone: our tc filters (fixed handle and priority), their programs, the
 * maps those programs use, and the registry kept in the pdscp_links map.
 * No state file, no bpffs.
 */
import { BpfMap, progFdById, progInfo } from './kernel/bpf.js';
import { closeFd } from './kernel/libc.js';
import { type Link, listLinks, wireguardListenPort } from './kernel/links.js';
import { queryEgress } from './kernel/tc.js';
import {
  ALL_MAPS,
  type Config,
  decodeConfig,
  decodeLink,
  FILTER,
  isOurProgram,
  type LinkRecord,
  MAP_CONFIG,
  MAP_FLOWS,
  MAP_LINKS,
  MAP_SHAPES,
  type MapName,
  u32Key,
} from './layout.js';

/** One of our filters as found on a device's egress hook. */
export interface AttachedFilter {
  ifindex: number;
  ifname: string;
  progId: number;
  progName: string;
  /** id of the flows map the program uses: which instance it belongs to */
  flowsMapId: number;
}

/** Something that is not ours sits at our handle and priority. */
export interface ForeignFilter {
  ifindex: number;
  ifname: string;
  progName: string;
}

export interface Instance {
  mapIds: Record<MapName, number>;
  flowsMaxEntries: number;
  flowsCount?: number;
  config: Config;
  records: LinkRecord[];
}

export interface Observed {
  links: Link[];
  filters: AttachedFilter[];
  foreign: ForeignFilter[];
  instance?: Instance;
  /** facts about named tunnels gathered for planning */
  wireguardPorts: Record<string, number | undefined>;
}

interface ProgSummary {
  name: string;
  maps: Partial<Record<MapName, number>>;
}

/** Reads program info and the names of its maps; cached per program id. */
function summarize(progId: number, cache: Map<number, ProgSummary | undefined>): ProgSummary | undefined {
  if (cache.has(progId)) return cache.get(progId);
  let summary: ProgSummary | undefined;
  let fd = -1;
  try {
    fd = progFdById(progId);
    const info = progInfo(fd);
    const maps: Partial<Record<MapName, number>> = {};
    for (const id of info.mapIds) {
      const m = BpfMap.byId(id);
      try {
        if ((ALL_MAPS as readonly string[]).includes(m.info.name)) maps[m.info.name as MapName] = id;
      } finally {
        m.close();
      }
    }
    summary = { name: info.name, maps };
  } catch {
    summary = undefined; // program vanished between query and open
  } finally {
    closeFd(fd);
  }
  cache.set(progId, summary);
  return summary;
}

function readInstance(mapIds: Record<MapName, number>): Instance | undefined {
  const opened: BpfMap[] = [];
  try {
    const open = (name: MapName) => {
      const m = BpfMap.byId(mapIds[name]);
      opened.push(m);
      const shape = MAP_SHAPES[name];
      if (m.info.keySize !== shape.key || m.info.valueSize !== shape.value) {
        throw new Error(`map ${name} (id ${mapIds[name]}) has an incompatible layout: installed by another version; unload it first`);
      }
      return m;
    };
    const flows = open(MAP_FLOWS);
    const cfgMap = open(MAP_CONFIG);
    const linksMap = open(MAP_LINKS);
    const cfg = cfgMap.lookup(u32Key(0));
    if (!cfg) return undefined;
    const records: LinkRecord[] = [];
    for (const key of linksMap.keys()) {
      const v = linksMap.lookup(key);
      if (v) records.push(decodeLink(key, v));
    }
    return { mapIds, flowsMaxEntries: flows.info.maxEntries, config: decodeConfig(cfg), records };
  } finally {
    for (const m of opened) m.close();
  }
}

export interface ObserveOptions {
  /** tunnel names whose WireGuard listen port should be read */
  wireguardNames?: string[];
}

export function observe(opts: ObserveOptions = {}): Observed {
  const links = listLinks();
  const filters: AttachedFilter[] = [];
  const foreign: ForeignFilter[] = [];
  const cache = new Map<number, ProgSummary | undefined>();
  const instances = new Map<number, { mapIds: Partial<Record<MapName, number>>; filters: number }>();

  for (const link of links) {
    const progId = queryEgress(link.ifindex, FILTER);
    if (progId === undefined) continue;
    const s = summarize(progId, cache);
    if (!s) continue;
    if (!isOurProgram(s.name) || s.maps.pdscp_flows === undefined || s.maps.pdscp_config === undefined) {
      foreign.push({ ifindex: link.ifindex, ifname: link.name, progName: s.name });
      continue;
    }
    filters.push({ ifindex: link.ifindex, ifname: link.name, progId, progName: s.name, flowsMapId: s.maps.pdscp_flows });
    const inst = instances.get(s.maps.pdscp_flows) ?? { mapIds: s.maps, filters: 0 };
    inst.filters++;
    instances.set(s.maps.pdscp_flows, inst);
  }

  // Normally there is one instance per namespace; after a failure there may
  // be more. The one serving most filters is the instance; plan() moves the
  // other filters onto it.
  let instance: Instance | undefined;
  const ranked = [...instances.values()].sort((a, b) => b.filters - a.filters);
  for (const cand of ranked) {
    if (ALL_MAPS.every((n) => cand.mapIds[n] !== undefined)) {
      instance = readInstance(cand.mapIds as Record<MapName, number>);
      if (instance) break;
    }
  }

  const wireguardPorts: Record<string, number | undefined> = {};
  for (const name of opts.wireguardNames ?? []) {
    const link = links.find((l) => l.name === name);
    if (link?.kind === 'wireguard') wireguardPorts[name] = wireguardListenPort(name);
  }
  return { links, filters, foreign, instance, wireguardPorts };
}
