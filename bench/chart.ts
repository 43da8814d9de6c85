/** bench/chart.svg: per-packet ns of each program beside its empty baselines. */
import type { CaseResult } from './perpacket.js';

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function chartSvg(cases: CaseResult[], title: string): string {
  const rowH = 26;
  const left = 330;
  const right = 150;
  const top = 56;
  const width = 1100;
  const plotW = width - left - right;
  const max = Math.max(...cases.map((c) => Math.max(c.ns, c.baseNs, c.emptyNs))) * 1.05;
  const x = (v: number) => left + (v / max) * plotW;
  const height = top + cases.length * rowH + 60;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="100%" height="100%" fill="white"/>`);
  out.push(`<text x="${width / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">${esc(title)}</text>`);
  const legend: Array<[string, string]> = [
    ['#2b8a3e', 'program, target met'],
    ['#c92a2a', 'program, target missed'],
    ['#1c7ed6', 'program, no target'],
    ['#adb5bd', 'matched empty (same set_hash / packet reset)'],
    ['#000', 'plain empty (return TC_ACT_UNSPEC)'],
  ];
  legend.forEach(([c, t], i) => {
    const lx = 20 + i * 215;
    out.push(`<rect x="${lx}" y="32" width="12" height="12" fill="${c}"/><text x="${lx + 16}" y="42">${esc(t)}</text>`);
  });
  for (let t = 0; t <= max; t += max > 200 ? 50 : 20) {
    out.push(`<line x1="${x(t)}" y1="${top - 4}" x2="${x(t)}" y2="${top + cases.length * rowH}" stroke="#eee"/>`);
    out.push(`<text x="${x(t)}" y="${top + cases.length * rowH + 14}" text-anchor="middle" fill="#555">${t}</text>`);
  }
  out.push(`<text x="${left + plotW / 2}" y="${top + cases.length * rowH + 32}" text-anchor="middle">ns per packet (BPF_PROG_TEST_RUN, median)</text>`);
  cases.forEach((c, i) => {
    const y = top + i * rowH;
    const color = c.pass === true ? '#2b8a3e' : c.pass === false ? '#c92a2a' : '#1c7ed6';
    out.push(`<text x="${left - 8}" y="${y + 15}" text-anchor="end">${esc(c.label)}</text>`);
    out.push(`<rect x="${left}" y="${y + 3}" width="${x(c.ns) - left}" height="10" fill="${color}"/>`);
    out.push(`<rect x="${left}" y="${y + 14}" width="${x(c.baseNs) - left}" height="8" fill="#adb5bd"/>`);
    out.push(`<line x1="${x(c.emptyNs)}" y1="${y + 2}" x2="${x(c.emptyNs)}" y2="${y + 23}" stroke="#000" stroke-width="1.5"/>`);
    const tgt = c.target !== undefined ? ` (≤${c.target}x)` : '';
    out.push(`<text x="${x(c.ns) + 6}" y="${y + 13}" fill="#333">${c.ns.toFixed(1)} ns, ${c.ratio.toFixed(2)}x${tgt}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
