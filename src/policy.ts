/**
 * DSCP policy: which inner DSCPs reach the outer header, as a 64-entry table
 * (inner DSCP -> carried DSCP) applied in the datapath.
 *
 * Spec: comma-separated items, each a class (carried unchanged), CLASS=CLASS
 * (remapped), or *=CLASS / *=keep for every class not listed. When any item
 * is given, unlisted classes are carried as 0 unless *= says otherwise.
 * `all` (the default) carries every class unchanged.
 * Classes: a number 0-63, csN, afXY, ef, va, le, df.
 */
export class PolicyError extends Error {}

const NAMED: Record<string, number> = { ef: 46, va: 44, le: 1, df: 0, be: 0 };

export function parseClass(text: string): number {
  const t = text.trim().toLowerCase();
  if (/^\d+$/.test(t)) {
    const n = Number(t);
    if (n > 63) throw new PolicyError(`DSCP ${t} is out of range 0-63`);
    return n;
  }
  if (t in NAMED) return NAMED[t];
  let m = /^cs([0-7])$/.exec(t);
  if (m) return Number(m[1]) * 8;
  m = /^af([1-4])([1-3])$/.exec(t);
  if (m) return Number(m[1]) * 8 + Number(m[2]) * 2;
  throw new PolicyError(`unknown DSCP class '${text}' (use 0-63, csN, afXY, ef, va, le)`);
}

export function parsePolicy(spec: string): number[] {
  const s = spec.trim().toLowerCase();
  if (s === 'all' || s === '') return Array.from({ length: 64 }, (_, i) => i);
  const table: (number | undefined)[] = new Array(64).fill(undefined);
  let fallback: number | 'keep' = 0;
  for (const raw of s.split(',')) {
    const item = raw.trim();
    if (!item) continue;
    const [from, to, extra] = item.split('=');
    if (extra !== undefined) throw new PolicyError(`bad policy item '${item}'`);
    if (from === '*') {
      if (to === undefined) throw new PolicyError(`bad policy item '${item}' (use *=CLASS or *=keep)`);
      fallback = to.trim() === 'keep' ? 'keep' : parseClass(to);
      continue;
    }
    const f = parseClass(from);
    table[f] = to === undefined ? f : parseClass(to);
  }
  return table.map((v, i) => v ?? (fallback === 'keep' ? i : fallback));
}

const CLASS_NAMES: Record<number, string> = { 46: 'EF', 44: 'VA', 1: 'LE', 0: 'CS0' };
export function className(dscp: number): string {
  if (CLASS_NAMES[dscp]) return CLASS_NAMES[dscp];
  if (dscp % 8 === 0) return `CS${dscp / 8}`;
  const x = dscp >> 3;
  const y = (dscp & 7) >> 1;
  if ((dscp & 1) === 0 && x >= 1 && x <= 4 && y >= 1 && y <= 3) return `AF${x}${y}`;
  return String(dscp);
}

/** Compact text of a policy table: "all", or the changed classes. */
export function describePolicy(table: number[]): string {
  if (table.every((v, i) => v === i)) return 'all';
  const kept = table.map((v, i) => (v === i && i !== 0 ? className(i) : undefined)).filter(Boolean);
  const mapped = table.map((v, i) => (v !== i ? `${className(i)}=${className(v)}` : undefined)).filter(Boolean);
  const zeroed = table.filter((v, i) => v === 0 && i !== 0).length;
  const mappedNonZero = table.map((v, i) => (v !== i && v !== 0 ? `${className(i)}=${className(v)}` : undefined)).filter(Boolean);
  if (zeroed > 32) return [...kept, ...mappedNonZero, '*=0'].join(',');
  return [...mapped].join(',') || 'all';
}
