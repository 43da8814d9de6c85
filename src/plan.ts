/**
 * Plan: the actions a request needs, computed from the observed state as a
 * pure function (no kernel access), so every case is unit-testable.
 *
 * Order matters for hitless changes: registry and config (ports) first, then
 * the uplink, then tunnels; on removal the reverse.
 */
import {
  type Carrier,
  CFG_MIXED_PORTS,
  CFG_UNCHECKED_MAP,
  type Config,
  DEFAULT_MAP_SIZE,
  IDENTITY_POLICY,
  type LinkRecord,
  portTable,
  programName,
} from './layout.js';
import { isL3, type Link } from './kernel/links.js';
import type { Observed } from './observe.js';

export class PlanError extends Error {
  constructor(
    message: string,
    /** 2: usage error, 1: operational error */
    readonly exitCode: 1 | 2 = 1,
  ) {
    super(message);
  }
}

export interface TunnelOptions {
  /** 'auto': hash where the outer port is known, map otherwise */
  carrier?: Carrier | 'auto';
  /** outer UDP source port of the tunnel's packets (WireGuard: listen port) */
  sport?: number;
  /** outer UDP destination port (VXLAN/Geneve: the device's port) */
  dport?: number;
  /** false: no outer port check even where a port is known */
  outerCheck?: boolean;
}

export interface AttachRequest extends TunnelOptions {
  op: 'attach';
  tunnels: string[];
  uplink: string;
  mapSize?: number;
  policy?: number[];
}

export interface UnloadRequest {
  op: 'unload';
  names: string[];
}

export interface GcRequest {
  op: 'gc';
}

export interface PolicyRequest {
  op: 'policy';
  policy: number[];
}

export type Request = AttachRequest | UnloadRequest | GcRequest | PolicyRequest;

export type Action =
  /** load the programs; reuse the instance's maps or create new ones */
  | { op: 'load'; programs: string[]; reuse: boolean; mapSize: number }
  | { op: 'register'; record: LinkRecord }
  | { op: 'unregister'; ifindex: number; uplinkIfindex: number; name: string }
  | { op: 'config'; config: Config }
  /** clsact (if missing) + filter; replace swaps an existing filter atomically */
  | { op: 'attach'; ifindex: number; ifname: string; program: string; replace: boolean }
  | { op: 'detach'; ifindex: number; ifname: string }
  /** remove the clsact qdisc if the tool added it and no filter is left */
  | { op: 'cleanupClsact'; ifindex: number; ifname: string };

export interface Plan {
  actions: Action[];
  notes: string[];
}

const NAME_RE = /^[^\s/:]{1,15}$/;

export function validIfname(name: string): boolean {
  return NAME_RE.test(name) && Buffer.byteLength(name) <= 15 && name !== '.' && name !== '..';
}

function checkNames(names: string[]): void {
  for (const n of names) {
    if (!validIfname(n)) throw new PlanError(`invalid interface name '${n}' (1-15 bytes, no '/', ':' or spaces)`, 2);
  }
  const seen = new Set<string>();
  for (const n of names) {
    if (seen.has(n)) throw new PlanError(`interface ${n} is named twice`, 2);
    seen.add(n);
  }
}

function linkByName(obs: Observed, name: string): Link {
  const l = obs.links.find((x) => x.name === name);
  if (!l) throw new PlanError(`${name}: no such interface`);
  if (l.linkType === 'loopback') throw new PlanError(`${name}: loopback cannot carry tunnel traffic`);
  return l;
}

function recordsOf(obs: Observed): LinkRecord[] {
  return obs.instance?.records ?? [];
}

/** Config with the port table recomputed from records. */
function configFor(base: Config | undefined, records: LinkRecord[], policy: number[] | undefined, newKey: number): Config {
  const { ports, uncheckedMap, mixed } = portTable(records);
  return {
    key: base?.key ?? newKey,
    flags: (uncheckedMap ? CFG_UNCHECKED_MAP : 0) | (mixed ? CFG_MIXED_PORTS : 0),
    policy: policy ?? base?.policy ?? [...IDENTITY_POLICY],
    ports,
  };
}

function sameConfig(a: Config | undefined, b: Config): boolean {
  if (!a) return false;
  if (a.key !== b.key || a.flags !== b.flags) return false;
  if (a.policy.some((v, i) => v !== b.policy[i])) return false;
  for (let i = 0; i < 65536; i++) if (a.ports[i] !== b.ports[i]) return false;
  return true;
}

function isStale(obs: Observed, ifindex: number): boolean {
  const f = obs.filters.find((x) => x.ifindex === ifindex);
  return !!f && !!obs.instance && f.flowsMapId !== obs.instance.mapIds.pdscp_flows;
}

/** Decides carrier and ports of one tunnel. */
export function tunnelSettings(
  link: Link,
  opts: TunnelOptions,
  wgPort: number | undefined,
): { carrier: Carrier; sport: number; dport: number; wireguard: boolean } {
  const wireguard = link.kind === 'wireguard';
  let sport = opts.sport ?? (wireguard ? (wgPort ?? 0) : 0);
  let dport = opts.dport ?? (link.udpDport ?? 0);
  if (opts.outerCheck === false) {
    sport = 0;
    dport = 0;
  }
  const known = sport !== 0 || dport !== 0;
  let carrier: Carrier;
  if (opts.carrier === 'hash') {
    if (!known) {
      throw new PlanError(
        `${link.name}: the hash carrier needs the tunnel's outer UDP port (give --outer-sport or --outer-dport)`,
        2,
      );
    }
    carrier = 'hash';
  } else if (opts.carrier === 'map') {
    carrier = 'map';
  } else {
    carrier = known ? 'hash' : 'map';
  }
  return { carrier, sport, dport, wireguard };
}

export function planAttach(obs: Observed, req: AttachRequest, newKey: number): Plan {
  if (req.tunnels.includes(req.uplink)) throw new PlanError(`${req.uplink} cannot be both a tunnel and the uplink`, 2);
  checkNames([...req.tunnels, req.uplink]);
  const uplink = linkByName(obs, req.uplink);
  const tunnels = req.tunnels.map((n) => linkByName(obs, n));
  const notes: string[] = [];
  const records = recordsOf(obs);

  for (const f of obs.foreign) {
    if (f.ifindex === uplink.ifindex || tunnels.some((t) => t.ifindex === f.ifindex)) {
      throw new PlanError(`${f.ifname}: another program (${f.progName}) uses preserve-dscp's tc handle and priority`);
    }
  }
  if (records.some((r) => r.role === 'tunnel' && r.ifindex === uplink.ifindex)) {
    throw new PlanError(`${uplink.name} is a tunnel of preserve-dscp; it cannot also be an uplink`);
  }
  for (const t of tunnels) {
    if (records.some((r) => r.role === 'uplink' && r.ifindex === t.ifindex)) {
      throw new PlanError(`${t.name} is an uplink of preserve-dscp; it cannot also be a tunnel`);
    }
  }
  if (req.mapSize !== undefined && obs.instance && obs.instance.flowsMaxEntries !== req.mapSize) {
    throw new PlanError(
      `the flow map already exists with ${obs.instance.flowsMaxEntries} entries; unload every interface to change --map-size`,
    );
  }

  const next: LinkRecord[] = records.filter(
    (r) => !(r.role === 'tunnel' && tunnels.some((t) => t.ifindex === r.ifindex) && r.uplinkIfindex === uplink.ifindex),
  );
  const registers: LinkRecord[] = [];
  const attaches: Action[] = [];
  const filterOn = (ifindex: number) => obs.filters.find((f) => f.ifindex === ifindex);

  // Uplink.
  const upL3 = isL3(uplink);
  const upProg = programName('uplink', upL3);
  const upRec = records.find((r) => r.role === 'uplink' && r.ifindex === uplink.ifindex && r.uplinkIfindex === 0);
  const upFilter = filterOn(uplink.ifindex);
  if (!upRec || upRec.name !== uplink.name || upRec.l3 !== upL3) {
    registers.push({
      ifindex: uplink.ifindex,
      uplinkIfindex: 0,
      role: 'uplink',
      sport: 0,
      dport: 0,
      carrier: 'map',
      createdClsact: upRec?.createdClsact ?? false,
      l3: upL3,
      wireguard: false,
      name: uplink.name,
    });
  }
  if (!upFilter || upFilter.progName !== upProg || isStale(obs, uplink.ifindex)) {
    attaches.push({ op: 'attach', ifindex: uplink.ifindex, ifname: uplink.name, program: upProg, replace: !!upFilter });
  }
  if (!upRec) next.push(registers[registers.length - 1]);

  // Tunnels.
  const tunnelAttaches: Action[] = [];
  for (const t of tunnels) {
    const s = tunnelSettings(t, req, obs.wireguardPorts[t.name]);
    const l3 = isL3(t);
    const prog = programName('tunnel', l3, s.carrier, s.sport !== 0 || s.dport !== 0);
    const existing = records.find((r) => r.role === 'tunnel' && r.ifindex === t.ifindex && r.uplinkIfindex === uplink.ifindex);
    const rec: LinkRecord = {
      ifindex: t.ifindex,
      uplinkIfindex: uplink.ifindex,
      role: 'tunnel',
      sport: s.sport,
      dport: s.dport,
      carrier: s.carrier,
      createdClsact: existing?.createdClsact ?? records.some((r) => r.ifindex === t.ifindex && r.createdClsact),
      l3,
      wireguard: s.wireguard,
      name: t.name,
    };
    // Other pairs of this tunnel (failover uplinks) follow its new settings.
    for (let i = 0; i < next.length; i++) {
      const r = next[i];
      if (r.role === 'tunnel' && r.ifindex === t.ifindex && !sameRecord(r, { ...rec, uplinkIfindex: r.uplinkIfindex })) {
        next[i] = { ...rec, uplinkIfindex: r.uplinkIfindex };
        registers.push(next[i]);
      }
    }
    next.push(rec);
    if (!existing || !sameRecord(existing, rec)) registers.push(rec);
    const f = filterOn(t.ifindex);
    if (!f || f.progName !== prog || isStale(obs, t.ifindex)) {
      tunnelAttaches.push({ op: 'attach', ifindex: t.ifindex, ifname: t.name, program: prog, replace: !!f });
    }
    if (s.carrier === 'map' && s.sport === 0 && s.dport === 0) {
      notes.push(`${t.name}: outer port unknown, the uplink cannot check that remarked packets are this tunnel's (give --outer-sport/--outer-dport)`);
    }
  }

  const config = configFor(obs.instance?.config, next, req.policy, newKey);
  const actions: Action[] = [];
  const allAttaches = [...attaches, ...tunnelAttaches];
  if (allAttaches.length > 0 || !obs.instance) {
    const programs = [...new Set(allAttaches.map((a) => (a as { program: string }).program))];
    actions.push({ op: 'load', programs, reuse: !!obs.instance, mapSize: obs.instance?.flowsMaxEntries ?? req.mapSize ?? DEFAULT_MAP_SIZE });
  }
  for (const r of registers) actions.push({ op: 'register', record: r });
  if (!sameConfig(obs.instance?.config, config)) actions.push({ op: 'config', config });
  actions.push(...allAttaches);
  return { actions, notes };
}

function sameRecord(a: LinkRecord, b: LinkRecord): boolean {
  return (
    a.ifindex === b.ifindex &&
    a.uplinkIfindex === b.uplinkIfindex &&
    a.role === b.role &&
    a.sport === b.sport &&
    a.dport === b.dport &&
    a.carrier === b.carrier &&
    a.l3 === b.l3 &&
    a.wireguard === b.wireguard &&
    a.name === b.name
  );
}

/**
 * Removal of pair records; then every tunnel without pairs loses its filter
 * and every affected uplink without tunnels loses its filter and record.
 */
function planRemoval(obs: Observed, drop: LinkRecord[], uplinksToCheck: Set<number>, alsoDetach: Set<number>): Action[] {
  const records = recordsOf(obs);
  const dropped = new Set(drop.map((r) => `${r.ifindex}/${r.uplinkIfindex}`));
  const remaining = records.filter((r) => !dropped.has(`${r.ifindex}/${r.uplinkIfindex}`));
  const exists = (ifindex: number) => obs.links.some((l) => l.ifindex === ifindex);
  const hasFilter = (ifindex: number) => obs.filters.some((f) => f.ifindex === ifindex);
  const detaches: Action[] = [];
  const unregisters: Action[] = [];
  const cleanups: Action[] = [];
  const nameOf = (ifindex: number) => obs.links.find((l) => l.ifindex === ifindex)?.name ?? records.find((r) => r.ifindex === ifindex)?.name ?? `#${ifindex}`;
  const createdClsact = (ifindex: number) => records.some((r) => r.ifindex === ifindex && r.createdClsact);

  const tunnelsTouched = new Set(drop.filter((r) => r.role === 'tunnel').map((r) => r.ifindex));
  for (const t of [...tunnelsTouched, ...alsoDetach]) {
    if (remaining.some((r) => r.role === 'tunnel' && r.ifindex === t)) continue;
    if (exists(t) && hasFilter(t)) detaches.push({ op: 'detach', ifindex: t, ifname: nameOf(t) });
    if (exists(t) && createdClsact(t)) cleanups.push({ op: 'cleanupClsact', ifindex: t, ifname: nameOf(t) });
  }
  for (const r of drop) unregisters.push({ op: 'unregister', ifindex: r.ifindex, uplinkIfindex: r.uplinkIfindex, name: r.name });

  const upDetaches: Action[] = [];
  for (const u of uplinksToCheck) {
    if (remaining.some((r) => r.role === 'tunnel' && r.uplinkIfindex === u)) continue;
    if (exists(u) && hasFilter(u)) upDetaches.push({ op: 'detach', ifindex: u, ifname: nameOf(u) });
    if (records.some((r) => r.role === 'uplink' && r.ifindex === u)) {
      unregisters.push({ op: 'unregister', ifindex: u, uplinkIfindex: 0, name: nameOf(u) });
      remaining.splice(0, remaining.length, ...remaining.filter((r) => !(r.role === 'uplink' && r.ifindex === u)));
    }
    if (exists(u) && createdClsact(u)) cleanups.push({ op: 'cleanupClsact', ifindex: u, ifname: nameOf(u) });
  }

  const actions: Action[] = [...detaches, ...unregisters];
  if (obs.instance) {
    const config = configFor(obs.instance.config, remaining, undefined, obs.instance.config.key);
    if (!sameConfig(obs.instance.config, config)) actions.push({ op: 'config', config });
  }
  actions.push(...upDetaches, ...cleanups);
  return actions;
}

export function planUnload(obs: Observed, req: UnloadRequest): Plan {
  checkNames(req.names);
  if (req.names.length === 0) throw new PlanError('name at least one interface to unload', 2);
  const records = recordsOf(obs);
  const notes: string[] = [];
  // A name may refer to a deleted interface: then only the registry knows it.
  const resolve = (name: string): number[] => {
    const link = obs.links.find((l) => l.name === name);
    const ids = new Set<number>();
    if (link) ids.add(link.ifindex);
    for (const r of records) if (r.name === name && !obs.links.some((l) => l.ifindex === r.ifindex)) ids.add(r.ifindex);
    return [...ids];
  };
  const isUplink = (i: number) => records.some((r) => r.role === 'uplink' && r.ifindex === i);
  const isTunnel = (i: number) => records.some((r) => r.role === 'tunnel' && r.ifindex === i);

  const named = req.names.map((n) => ({ name: n, ids: resolve(n) }));
  for (const n of named) {
    if (n.ids.length === 0) throw new PlanError(`${n.name}: no such interface, and preserve-dscp has nothing recorded for it`);
  }
  const uplinks = new Set<number>();
  const tunnels = new Set<number>();
  const unmanaged: string[] = [];
  for (const n of named) {
    for (const id of n.ids) {
      if (isUplink(id)) uplinks.add(id);
      else if (isTunnel(id)) tunnels.add(id);
      else if (obs.filters.some((f) => f.ifindex === id)) tunnels.add(id); // orphan filter of ours
      else unmanaged.push(n.name);
    }
  }
  for (const n of unmanaged) notes.push(`${n}: nothing installed`);

  // `tunnels... uplink --unload` removes those tunnels' pairs with that uplink
  // (all their pairs if no uplink is named); a lone uplink name removes the
  // uplink with all its tunnels.
  let drop: LinkRecord[];
  if (unmanaged.length > 0 && tunnels.size === 0) {
    // Only unmanaged tunnel names besides the uplink: nothing of theirs to
    // drop (a repeated or interrupted unload); the uplink is checked below.
    drop = [];
  } else if (tunnels.size > 0) {
    drop = records.filter(
      (r) => r.role === 'tunnel' && tunnels.has(r.ifindex) && (uplinks.size === 0 || uplinks.has(r.uplinkIfindex)),
    );
  } else {
    drop = records.filter((r) => r.role === 'tunnel' && uplinks.has(r.uplinkIfindex));
  }
  const check = new Set<number>([...uplinks, ...drop.map((r) => r.uplinkIfindex)]);
  const orphans = new Set([...tunnels].filter((t) => !records.some((r) => r.ifindex === t)));
  return { actions: planRemoval(obs, drop, check, orphans), notes };
}

/**
 * Garbage collection: registry entries of interfaces that no longer exist
 * (or no longer carry our filter), filters of ours that no record explains,
 * and uplinks left without tunnels.
 */
export function planGc(obs: Observed): Plan {
  const records = recordsOf(obs);
  const live = (ifindex: number, name: string) => obs.links.some((l) => l.ifindex === ifindex && l.name === name);
  const filtered = (ifindex: number) => obs.filters.some((f) => f.ifindex === ifindex && !isStale(obs, ifindex));
  const upNames = new Map(records.filter((r) => r.role === 'uplink').map((r) => [r.ifindex, r.name]));
  const drop = records.filter((r) => {
    if (!live(r.ifindex, r.name) || !filtered(r.ifindex)) return true;
    if (r.role === 'tunnel') {
      const upName = upNames.get(r.uplinkIfindex);
      return upName === undefined || !live(r.uplinkIfindex, upName) || !filtered(r.uplinkIfindex);
    }
    return false;
  });
  const uplinks = new Set(records.filter((r) => r.role === 'uplink').map((r) => r.ifindex));
  const explained = new Set(records.filter((r) => !drop.includes(r)).map((r) => r.ifindex));
  const orphanFilters = new Set(obs.filters.filter((f) => !explained.has(f.ifindex) && !uplinks.has(f.ifindex)).map((f) => f.ifindex));
  const dropUplinks = drop.filter((r) => r.role === 'uplink');
  const dropPairs = drop.filter((r) => r.role === 'tunnel');
  const actions = planRemoval(obs, dropPairs, uplinks, orphanFilters);
  // Uplink records of vanished uplinks are not covered by planRemoval's check
  // (it skips uplinks that still have tunnels); drop them explicitly.
  for (const u of dropUplinks) {
    if (!actions.some((a) => a.op === 'unregister' && a.ifindex === u.ifindex && a.uplinkIfindex === 0)) {
      actions.unshift({ op: 'unregister', ifindex: u.ifindex, uplinkIfindex: 0, name: u.name });
    }
  }
  return { actions, notes: [] };
}

export function planPolicy(obs: Observed, req: PolicyRequest): Plan {
  if (!obs.instance) throw new PlanError('preserve-dscp is not attached in this network namespace');
  const config = { ...obs.instance.config, policy: req.policy };
  return { actions: sameConfig(obs.instance.config, config) ? [] : [{ op: 'config', config }], notes: [] };
}

export function plan(obs: Observed, req: Request, newKey: number): Plan {
  switch (req.op) {
    case 'attach':
      return planAttach(obs, req, newKey);
    case 'unload':
      return planUnload(obs, req);
    case 'gc':
      return planGc(obs);
    case 'policy':
      return planPolicy(obs, req);
  }
}
