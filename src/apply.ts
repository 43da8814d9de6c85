/**
 * Apply: carry out a plan's actions in order against the kernel. Called with
 * the lock held. A failure stops at the failing action; everything applied
 * before it is a valid state of its own (see plan.ts for the order), and the
 * next invocation or `gc` converges from there.
 */
import { BpfMap, bindMap } from './kernel/bpf.js';
import { closeFd } from './kernel/libc.js';
import { type LoadedObject, loadObject } from './kernel/object.js';
import { attachEgress, clsactFilterCounts, detachEgress, ensureClsact, removeClsact } from './kernel/tc.js';
import { ALL_MAPS, encodeConfig, encodeLink, FILTER, linkKey, MAP_CONFIG, MAP_FLOWS, MAP_LINKS, type MapName, u32Key } from './layout.js';
import type { Action, Plan } from './plan.js';
import type { Observed } from './observe.js';

export interface ApplyOptions {
  objectPath: string;
  /** verifier log level for the load (the log is returned in ApplyResult) */
  logLevel?: number;
  /** called before each action (tests inject faults here) */
  beforeAction?: (action: Action, index: number) => void;
}

export interface ApplyResult {
  applied: Action[];
  verifierLog?: string;
}

export function apply(plan: Plan, obs: Observed, opts: ApplyOptions): ApplyResult {
  const maps = new Map<MapName, BpfMap>();
  let obj: LoadedObject | undefined;
  const applied: Action[] = [];
  const map = (name: MapName): BpfMap => {
    let m = maps.get(name);
    if (m) return m;
    if (obj) m = new BpfMap(obj.mapFd(name));
    else if (obs.instance) m = BpfMap.byId(obs.instance.mapIds[name]);
    else throw new Error('internal: no BPF maps to write to');
    maps.set(name, m);
    return m;
  };
  // The registry as this apply leaves it, so a created clsact is recorded
  // without walking the map (one walk per attach would be quadratic).
  const records = new Map((obs.instance?.records ?? []).map((r) => [linkKey(r).toString('hex'), r]));
  const reused: number[] = [];
  let verifierLog: string | undefined;
  let filterCounts: Map<string, number> | undefined;
  try {
    plan.actions.forEach((action, i) => {
      opts.beforeAction?.(action, i);
      switch (action.op) {
        case 'load': {
          const reuseMaps: Record<string, number> = {};
          if (action.reuse && obs.instance) {
            for (const name of ALL_MAPS) {
              const m = BpfMap.byId(obs.instance.mapIds[name]);
              reused.push(m.fd);
              reuseMaps[name] = m.fd;
            }
          }
          obj = loadObject(opts.objectPath, {
            programs: action.programs,
            reuseMaps,
            maxEntries: { [MAP_FLOWS]: action.mapSize },
            logLevel: opts.logLevel,
          });
          verifierLog = obj.log;
          // Bind every map to every program: the registry is used by none
          // and the flow map not by hash-carrier programs, yet all must stay
          // alive and findable (program info -> map ids) from any filter.
          for (const p of action.programs) for (const m of ALL_MAPS) bindMap(obj.progFd(p), obj.mapFd(m));
          break;
        }
        case 'register':
          map(MAP_LINKS).update(linkKey(action.record), encodeLink(action.record));
          records.set(linkKey(action.record).toString('hex'), action.record);
          break;
        case 'unregister':
          map(MAP_LINKS).delete(linkKey(action));
          records.delete(linkKey(action).toString('hex'));
          break;
        case 'config':
          map(MAP_CONFIG).update(u32Key(0), encodeConfig(action.config));
          break;
        case 'attach': {
          if (!obj) throw new Error('internal: attach before load');
          const created = ensureClsact(action.ifindex);
          try {
            attachEgress(action.ifindex, FILTER, obj.progFd(action.program), action.replace);
          } catch (e) {
            if (created) removeClsact(action.ifindex);
            throw e;
          }
          if (created) {
            // Recorded so that unload may remove the qdisc the tool added.
            for (const [k, r] of records) {
              if (r.ifindex !== action.ifindex) continue;
              const marked = { ...r, createdClsact: true };
              map(MAP_LINKS).update(linkKey(marked), encodeLink(marked));
              records.set(k, marked);
            }
          }
          break;
        }
        case 'detach':
          detachEgress(action.ifindex, FILTER);
          break;
        case 'cleanupClsact':
          // Cleanups come last in a plan: count the filters of all of them at once.
          filterCounts ??= clsactFilterCounts(plan.actions.filter((a) => a.op === 'cleanupClsact').map((a) => a.ifname));
          if (filterCounts.get(action.ifname) === 0) removeClsact(action.ifindex);
          break;
      }
      applied.push(action);
    });
  } finally {
    for (const m of maps.values()) if (!obj) m.close();
    obj?.close();
    reused.forEach(closeFd);
  }
  return { applied, verifierLog };
}
