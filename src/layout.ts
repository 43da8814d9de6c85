/**
 * The datapath's shared definitions (bpf/preserve_dscp.h) as seen from
 * userspace: names, constants, and byte layouts of map keys and values.
 */
export const TC_HANDLE = 0xd5c0;
export const TC_PRIORITY = 0x0d5c;
export const FILTER = { handle: TC_HANDLE, priority: TC_PRIORITY } as const;

export const MAP_FLOWS = 'pdscp_flows';
export const MAP_CONFIG = 'pdscp_config';
export const MAP_STATS = 'pdscp_stats';
export const MAP_LINKS = 'pdscp_links';
export const ALL_MAPS = [MAP_FLOWS, MAP_CONFIG, MAP_STATS, MAP_LINKS] as const;
export type MapName = (typeof ALL_MAPS)[number];

export const DEFAULT_MAP_SIZE = 16384;
export const COUNTER_SLOTS = 512;
export const COUNTERS_PER_SLOT = 16;

export type Carrier = 'map' | 'hash';
export type Role = 'tunnel' | 'uplink';

/** Entry point names in the object (kernel program names, <= 15 chars). */
export function programName(role: Role, l3: boolean, carrier: Carrier = 'map', checked = true): string {
  const framing = l3 ? 'l3' : 'l2';
  if (role === 'uplink') return `pdscp_up_${framing}`;
  if (carrier === 'hash') return `pdscp_thash_${framing}`;
  return `pdscp_tmap${checked ? '' : 'u'}_${framing}`;
}
export const ALL_PROGRAMS = [
  'pdscp_tmap_l2',
  'pdscp_tmap_l3',
  'pdscp_tmapu_l2',
  'pdscp_tmapu_l3',
  'pdscp_thash_l2',
  'pdscp_thash_l3',
  'pdscp_up_l2',
  'pdscp_up_l3',
] as const;
export function isOurProgram(name: string): boolean {
  return (ALL_PROGRAMS as readonly string[]).includes(name);
}

/** Counter slots in datapath order; 'packets' is not stored (slot 0 is
 * reserved): every packet moves exactly one counter, so it is their sum. */
export const COUNTER_NAMES = [
  'packets',
  'notIp',
  'stored',
  'current',
  'removed',
  'encoded',
  'rewritten',
  'miss',
  'hashZero',
  'notTunnel',
  'checkFailed',
] as const;
export type CounterName = (typeof COUNTER_NAMES)[number];
export type Counters = Record<CounterName, number>;

/** One pdscp_stats slot as read from userspace (a value per CPU), summed. */
export function decodeCounters(value: Buffer, cpus: number): Counters {
  const out = Object.fromEntries(COUNTER_NAMES.map((n) => [n, 0])) as Counters;
  const stride = COUNTERS_PER_SLOT * 8;
  for (let cpu = 0; cpu < cpus; cpu++) {
    COUNTER_NAMES.forEach((n, i) => {
      if (n !== 'packets') out[n] += Number(value.readBigUInt64LE(cpu * stride + i * 8));
    });
  }
  // Every packet moves exactly one counter: packets seen is their sum.
  out.packets = COUNTER_NAMES.reduce((sum, n) => sum + out[n], 0);
  return out;
}

export const PORT_MAP = 0x1;
export const PORT_HASH = 0x2;
export const PORT_WG = 0x4;
export const PORT_DST_SHIFT = 4;
export const CFG_UNCHECKED_MAP = 0x1;
export const CFG_MIXED_PORTS = 0x2;

/** struct pdscp_config */
export interface Config {
  key: number;
  flags: number;
  policy: number[]; // 64 entries
  ports: Uint8Array; // 65536 entries
}
export const CONFIG_SIZE = 4 + 4 + 64 + 65536;

export function encodeConfig(c: Config): Buffer {
  const b = Buffer.alloc(CONFIG_SIZE);
  b.writeUInt32LE(c.key >>> 0, 0);
  b.writeUInt32LE(c.flags >>> 0, 4);
  for (let i = 0; i < 64; i++) b[8 + i] = c.policy[i] & 0x3f;
  b.set(c.ports, 72);
  return b;
}

export function decodeConfig(b: Buffer): Config {
  return {
    key: b.readUInt32LE(0),
    flags: b.readUInt32LE(4),
    policy: [...b.subarray(8, 72)],
    ports: new Uint8Array(b.subarray(72, 72 + 65536)),
  };
}

export const IDENTITY_POLICY: readonly number[] = Array.from({ length: 64 }, (_, i) => i);

export const LINK_CREATED_CLSACT = 0x1;
export const LINK_L3 = 0x2;

/** struct pdscp_link_key + struct pdscp_link: one registry entry, for an
 * uplink (uplinkIfindex 0) or for a tunnel/uplink pair. */
export interface LinkRecord {
  ifindex: number;
  role: Role;
  uplinkIfindex: number;
  sport: number;
  dport: number;
  carrier: Carrier;
  createdClsact: boolean;
  l3: boolean;
  wireguard: boolean;
  name: string;
}
export const LINK_RECORD_SIZE = 32;

export function encodeLink(r: LinkRecord): Buffer {
  const b = Buffer.alloc(LINK_RECORD_SIZE);
  b.writeUInt32LE(r.role === 'tunnel' ? 1 : 2, 0);
  b.writeUInt16LE(r.sport, 8);
  b.writeUInt16LE(r.dport, 10);
  b[12] = r.carrier === 'hash' ? 1 : 0;
  b[13] = (r.createdClsact ? LINK_CREATED_CLSACT : 0) | (r.l3 ? LINK_L3 : 0);
  b[14] = r.wireguard ? 1 : 0;
  b.write(r.name.slice(0, 15), 16, 'latin1');
  return b;
}

export function linkKey(r: { ifindex: number; uplinkIfindex: number }): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(r.ifindex >>> 0, 0);
  b.writeUInt32LE(r.uplinkIfindex >>> 0, 4);
  return b;
}

export function decodeLink(key: Buffer, b: Buffer): LinkRecord {
  const nameEnd = b.indexOf(0, 16);
  return {
    ifindex: key.readUInt32LE(0),
    role: b.readUInt32LE(0) === 1 ? 'tunnel' : 'uplink',
    uplinkIfindex: key.readUInt32LE(4),
    sport: b.readUInt16LE(8),
    dport: b.readUInt16LE(10),
    carrier: b[12] === 1 ? 'hash' : 'map',
    createdClsact: (b[13] & LINK_CREATED_CLSACT) !== 0,
    l3: (b[13] & LINK_L3) !== 0,
    wireguard: b[14] === 1,
    name: b.subarray(16, nameEnd < 0 ? 32 : nameEnd).toString('latin1'),
  };
}

export function u32Key(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0, 0);
  return b;
}

/** Expected key/value sizes of each map, checked when reusing maps by id. */
export const MAP_SHAPES: Record<MapName, { key: number; value: number }> = {
  pdscp_flows: { key: 4, value: 4 },
  pdscp_config: { key: 4, value: CONFIG_SIZE },
  pdscp_stats: { key: 4, value: COUNTERS_PER_SLOT * 8 },
  pdscp_links: { key: 8, value: LINK_RECORD_SIZE },
};

/** Port roles of the tunnels in the registry, as the config's port table. */
export function portTable(records: LinkRecord[]): { ports: Uint8Array; uncheckedMap: boolean; mixed: boolean } {
  const ports = new Uint8Array(65536);
  let uncheckedMap = false;
  for (const r of records) {
    if (r.role !== 'tunnel') continue;
    const bits = (r.carrier === 'hash' ? PORT_HASH : PORT_MAP) | (r.wireguard ? PORT_WG : 0);
    if (r.sport) ports[r.sport] |= bits;
    if (r.dport) ports[r.dport] |= (bits & ~PORT_WG) << PORT_DST_SHIFT;
    if (!r.sport && !r.dport && r.carrier === 'map') uncheckedMap = true;
  }
  return { ports, uncheckedMap, mixed: mixedPorts(ports) };
}

/** Some port serves tunnels of both carriers (as source or as destination). */
export function mixedPorts(ports: Uint8Array): boolean {
  const both = PORT_MAP | PORT_HASH;
  return ports.some((p) => (p & both) === both || ((p >> PORT_DST_SHIFT) & both) === both);
}
