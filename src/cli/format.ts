/** Human-readable output: aligned tables and one-line action summaries. */
import type { Action } from '../plan.js';
import type { StatusReport } from '../status.js';

export function table(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]))).join('  ').trimEnd()).join('\n');
}

export function describeAction(a: Action): string | undefined {
  switch (a.op) {
    case 'load':
      return a.reuse ? undefined : `created the shared flow map (${a.mapSize} flows)`;
    case 'attach':
      return `${a.replace ? 'replaced' : 'attached'} ${a.program} on ${a.ifname}`;
    case 'detach':
      return `removed the filter from ${a.ifname}`;
    case 'cleanupClsact':
      return undefined;
    case 'config':
      return undefined;
    case 'register':
      return undefined;
    case 'unregister':
      return `forgot ${a.name} (${a.uplinkIfindex === 0 ? "uplink" : "tunnel"})`;
  }
}

export function formatStatus(s: StatusReport): string {
  if (!s.loaded) return ['preserve-dscp is not attached in this network namespace', ...s.warnings.map((w) => `warning: ${w}`)].join('\n');
  const lines: string[] = [];
  lines.push(`flows in map: ${s.flows?.entries} / ${s.flows?.capacity}    policy: ${s.policy}`);
  lines.push('');
  const rows = [['INTERFACE', 'ROLE', 'STATE', 'CARRIER', 'OUTER PORT', 'SERVES', 'PACKETS', 'MARKED', 'MISSED']];
  for (const i of s.interfaces) {
    const c = i.counters;
    const state = !i.present ? 'gone' : i.attached ? 'attached' : 'no filter';
    const portText = i.outerSport ? `sport ${i.outerSport}` : i.outerDport ? `dport ${i.outerDport}` : i.role === 'tunnel' ? 'unchecked' : '-';
    const marked = !c ? '-' : i.role === 'tunnel' ? String(c.stored + c.current + c.encoded) : String(c.rewritten);
    const missed = !c ? '-' : i.role === 'tunnel' ? String(c.notIp) : String(c.miss + c.checkFailed);
    rows.push([
      i.ifname,
      i.role,
      state,
      i.role === 'tunnel' ? (i.carrier ?? '-') : '-',
      i.role === 'tunnel' ? portText : '-',
      (i.role === 'tunnel' ? i.uplinks : i.tunnels)?.join(',') || '-',
      c ? String(c.packets) : '-',
      marked,
      missed,
    ]);
  }
  lines.push(table(rows));
  for (const w of s.warnings) lines.push(`warning: ${w}`);
  return lines.join('\n');
}
