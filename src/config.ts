/**
 * The configuration file of `preserve-dscp watch` (JSON):
 *
 * {
 *   "tunnels": [
 *     { "match": "wg*", "uplinks": ["eth0"] },
 *     { "match": "vx0", "uplinks": "auto", "carrier": "map", "outerDport": 4789 }
 *   ],
 *   "policy": "ef,af41",
 *   "mapSize": 16384
 * }
 *
 * match: an interface name, or a pattern with * and ?.
 * uplinks: names, or "auto": the device of the route to each WireGuard peer
 * endpoint (honouring the tunnel's fwmark).
 * carrier, outerSport, outerDport, outerCheck: as the command-line options.
 * Errors name the line and the field.
 */
import { readFileSync } from 'node:fs';
import type { Carrier } from './layout.js';
import { PolicyError, parsePolicy } from './policy.js';

export class ConfigError extends Error {}

export interface TunnelRule {
  match: string;
  uplinks: string[] | 'auto';
  carrier: Carrier | 'auto';
  outerSport?: number;
  outerDport?: number;
  outerCheck: boolean;
}

export interface WatchConfig {
  tunnels: TunnelRule[];
  policy?: number[];
  mapSize?: number;
}

export const DEFAULT_CONFIG_PATH = '/etc/preserve-dscp.json';

/** 1-based line of the n-th character. */
function lineAt(text: string, pos: number): number {
  return text.slice(0, pos).split('\n').length;
}

/** Line where a field's key appears (best effort, for messages). */
function lineOfField(text: string, key: string, occurrence: number): number | undefined {
  const re = new RegExp(`"${key.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}"\\s*:`, 'g');
  let m: RegExpExecArray | null;
  let n = 0;
  while ((m = re.exec(text))) {
    if (n++ === occurrence) return lineAt(text, m.index);
  }
  return undefined;
}

export function parseConfig(text: string, file = 'config'): WatchConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    const pos = /position (\d+)/.exec(msg);
    const where = pos ? `line ${lineAt(text, Number(pos[1]))}` : 'syntax';
    throw new ConfigError(`${file}: ${where}: invalid JSON (${msg.replace(/ in JSON at position \d+.*/, '')})`);
  }
  const fail = (field: string, key: string, occurrence: number, why: string): never => {
    const line = lineOfField(text, key, occurrence);
    throw new ConfigError(`${file}:${line ? ` line ${line}:` : ''} ${field}: ${why}`);
  };
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError(`${file}: line 1: the file must hold one JSON object`);
  const obj = raw as Record<string, unknown>;
  for (const k of Object.keys(obj)) {
    if (!['tunnels', 'policy', 'mapSize'].includes(k)) fail(k, k, 0, 'unknown field (expected tunnels, policy, mapSize)');
  }
  if (!Array.isArray(obj.tunnels) || obj.tunnels.length === 0) fail('tunnels', 'tunnels', 0, 'needs a non-empty array of rules');
  const occ: Record<string, number> = {};
  const next = (k: string) => {
    occ[k] = (occ[k] ?? -1) + 1;
    return occ[k];
  };
  const tunnels: TunnelRule[] = (obj.tunnels as unknown[]).map((r, i) => {
    const f = `tunnels[${i}]`;
    if (typeof r !== 'object' || r === null || Array.isArray(r)) fail(f, 'tunnels', 0, 'each rule is an object');
    const rule = r as Record<string, unknown>;
    const seen: Record<string, number> = {};
    for (const k of Object.keys(rule)) seen[k] = next(k);
    for (const k of Object.keys(rule)) {
      if (!['match', 'uplinks', 'carrier', 'outerSport', 'outerDport', 'outerCheck'].includes(k)) fail(`${f}.${k}`, k, seen[k], 'unknown field');
    }
    if (typeof rule.match !== 'string' || !/^[^\s/:]{1,15}$/.test(rule.match)) fail(`${f}.match`, 'match', seen.match ?? 0, 'needs an interface name or pattern (1-15 characters)');
    let uplinks: string[] | 'auto' = 'auto';
    if (rule.uplinks !== undefined && rule.uplinks !== 'auto') {
      if (!Array.isArray(rule.uplinks) || rule.uplinks.length === 0 || rule.uplinks.some((u) => typeof u !== 'string' || !/^[^\s/:*?]{1,15}$/.test(u))) {
        fail(`${f}.uplinks`, 'uplinks', seen.uplinks, 'needs "auto" or an array of interface names');
      }
      uplinks = rule.uplinks as string[];
    }
    const carrier = rule.carrier ?? 'auto';
    if (!['auto', 'map', 'hash'].includes(carrier as string)) fail(`${f}.carrier`, 'carrier', seen.carrier, 'is "auto", "map" or "hash"');
    const port = (k: 'outerSport' | 'outerDport') => {
      const v = rule[k];
      if (v === undefined) return undefined;
      if (!Number.isInteger(v) || (v as number) < 1 || (v as number) > 65535) fail(`${f}.${k}`, k, seen[k], 'needs a UDP port 1-65535');
      return v as number;
    };
    if (rule.outerCheck !== undefined && typeof rule.outerCheck !== 'boolean') fail(`${f}.outerCheck`, 'outerCheck', seen.outerCheck, 'is true or false');
    return {
      match: rule.match as string,
      uplinks,
      carrier: carrier as Carrier | 'auto',
      outerSport: port('outerSport'),
      outerDport: port('outerDport'),
      outerCheck: rule.outerCheck !== false,
    };
  });
  let policy: number[] | undefined;
  if (obj.policy !== undefined) {
    if (typeof obj.policy !== 'string') fail('policy', 'policy', 0, 'needs a policy text such as "ef,af41" or "all"');
    try {
      policy = parsePolicy(obj.policy as string);
    } catch (e) {
      if (e instanceof PolicyError) fail('policy', 'policy', 0, e.message);
      throw e;
    }
  }
  if (obj.mapSize !== undefined && (!Number.isInteger(obj.mapSize) || (obj.mapSize as number) < 1)) fail('mapSize', 'mapSize', 0, 'needs a positive whole number');
  return { tunnels, policy, mapSize: obj.mapSize as number | undefined };
}

export function loadConfig(path: string): WatchConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    throw new ConfigError(`${path}: cannot read the configuration file`);
  }
  return parseConfig(text, path);
}

/** Shell-style match of an interface name against a pattern with * and ?. */
export function matches(pattern: string, name: string): boolean {
  const re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
  return re.test(name);
}
