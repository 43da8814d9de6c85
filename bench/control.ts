/**
 * Control plane with the real CLI (bin/preserve-dscp -> dist/cli.cjs): wall
 * time of each invocation, beside `node -e 0` and `ip link show` measured in
 * the same run. Steps over their target are re-run under node --cpu-prof and
 * the profile is summarised by function and by source file of the bundle.
 */
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { delNetns, median, nowNs, ns, sh, timed } from './lib.js';

export interface Step {
  id: string;
  label: string;
  ms: number;
  runs: number[];
  /** ms / node -e 0 */
  ratioNode: number;
  targetMs?: number;
  pass?: boolean;
  ok: boolean;
  note?: string;
}

export interface ProfileSummary {
  step: string;
  totalMs: number;
  byFile: Array<{ file: string; selfMs: number }>;
  bySelf: Array<{ fn: string; file: string; selfMs: number }>;
  byTotal: Array<{ fn: string; file: string; totalMs: number }>;
  /** wall time of the step outside the node profile (children: ip, tc) */
  note?: string;
}

export interface ControlResult {
  seconds: number;
  tunnels: number;
  baselines: { nodeMs: number; ipLinkShowMs: number; ipJsonLinkShowMs: number; ipJsonLinkShow1000Ms: number; ipBatchCreateMs: number; tcBatchMs: number; tcBatchLists: number };
  steps: Step[];
  profiles: ProfileSummary[];
}

interface CpuNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface CpuProfile {
  nodes: CpuNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Source module of a line of the esbuild bundle (its "// src/x.ts" markers). */
function moduleMap(bundle: string): (line: number) => string {
  const marks: Array<[number, string]> = [];
  bundle.split('\n').forEach((l, i) => {
    const m = /^\/\/ ((?:src|node_modules)\/\S+)/.exec(l);
    if (m) marks.push([i, m[1]]);
  });
  return (line: number) => {
    let f = 'dist/cli.cjs';
    for (const [i, name] of marks) if (i <= line) f = name;
    return f;
  };
}

export function summarizeProfile(step: string, path: string, bundlePath: string): ProfileSummary {
  const p = JSON.parse(readFileSync(path, 'utf8')) as CpuProfile;
  const mod = moduleMap(readFileSync(bundlePath, 'utf8'));
  const self = new Map<number, number>();
  p.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i] ?? 0) / 1000));
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const fileOf = (n: CpuNode) => (n.callFrame.url.endsWith('cli.cjs') ? mod(n.callFrame.lineNumber) : n.callFrame.url ? n.callFrame.url.replace(/^.*node_modules\//, 'node_modules/').replace(/^node:/, 'node:') : `(${n.callFrame.functionName || 'native'})`);
  const nameOf = (n: CpuNode) => `${n.callFrame.functionName || '(anonymous)'}`;
  const fileSelf = new Map<string, number>();
  const fnSelf = new Map<string, { fn: string; file: string; ms: number }>();
  for (const n of p.nodes) {
    const s = self.get(n.id) ?? 0;
    if (!s) continue;
    const file = fileOf(n);
    fileSelf.set(file, (fileSelf.get(file) ?? 0) + s);
    const k = `${nameOf(n)}@${file}`;
    const e = fnSelf.get(k) ?? { fn: nameOf(n), file, ms: 0 };
    e.ms += s;
    fnSelf.set(k, e);
  }
  // inclusive time per function (counted once per sample even if recursive)
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const incl = new Map<string, { fn: string; file: string; ms: number }>();
  for (const [id, s] of self) {
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const n = byId.get(cur)!;
      const file = fileOf(n);
      if (!file.startsWith('src/')) continue;
      const k = `${nameOf(n)}@${file}`;
      if (seen.has(k)) continue;
      seen.add(k);
      const e = incl.get(k) ?? { fn: nameOf(n), file, ms: 0 };
      e.ms += s;
      incl.set(k, e);
    }
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  return {
    step,
    totalMs: total,
    byFile: [...fileSelf].map(([file, selfMs]) => ({ file, selfMs })).sort((a, b) => b.selfMs - a.selfMs).slice(0, 8),
    bySelf: [...fnSelf.values()].map((e) => ({ fn: e.fn, file: e.file, selfMs: e.ms })).sort((a, b) => b.selfMs - a.selfMs).slice(0, 10),
    byTotal: [...incl.values()].map((e) => ({ fn: e.fn, file: e.file, totalMs: e.ms })).sort((a, b) => b.totalMs - a.totalMs).slice(0, 12),
  };
}

export function runControl(root: string, env: NodeJS.ProcessEnv, opts: { tunnels: number; tag: string; tmp: string; profile: boolean }): ControlResult {
  const t0 = Date.now();
  const C = `pdscpb-c-${opts.tag}`;
  const D = `pdscpb-d-${opts.tag}`;
  const cli = join(root, 'bin', 'preserve-dscp');
  const bundle = join(root, 'dist', 'cli.cjs');
  const N = opts.tunnels;
  const inNs = (n: string, args: string[]) => timed('ip', ['netns', 'exec', n, ...args], env);
  const steps: Step[] = [];
  const profiles: ProfileSummary[] = [];
  try {
    for (const n of [C, D]) {
      delNetns(n);
      sh('ip', ['netns', 'add', n]);
    }
    // D: one tunnel, for cold single attaches
    ns(D, ['ip', 'link', 'add', 'veth0', 'type', 'veth', 'peer', 'name', 'veth1']);
    ns(D, ['ip', 'link', 'add', 'vx0', 'type', 'vxlan', 'id', '1', 'dstport', '4789', 'dev', 'veth0']);
    // C: an uplink and N + 1 VXLAN tunnels, made with one ip -batch
    ns(C, ['ip', 'link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'up0p']);
    let batch = '';
    for (let i = 1; i <= N + 1; i++) batch += `link add vx${i} type vxlan id ${i} dstport 4789 dev up0\n`;
    const tb = Date.now();
    ns(C, ['ip', '-batch', '-'], { input: batch });
    const batchMs = Date.now() - tb;

    // baselines, interleaved with the cold attaches
    const nodeRuns: number[] = [];
    const ipRuns: number[] = [];
    const ipJRuns: number[] = [];
    const ipJ1000: number[] = [];
    const cold: number[] = [];
    let coldOk = true;
    for (let r = 0; r < 3; r++) {
      nodeRuns.push(timed('node', ['-e', '0']).ms);
      ipRuns.push(inNs(D, ['ip', 'link', 'show']).ms);
      ipJRuns.push(inNs(D, ['ip', '-j', '-d', 'link', 'show']).ms);
      ipJ1000.push(inNs(C, ['ip', '-j', '-d', 'link', 'show']).ms);
      const a = inNs(D, [cli, 'vx0', 'veth0']);
      coldOk &&= a.status === 0;
      cold.push(a.ms);
      const u = inNs(D, [cli, 'veth0', '--unload']);
      coldOk &&= u.status === 0;
    }
    const nodeMs = median(nodeRuns);
    const step = (id: string, label: string, runs: number[], ok: boolean, targetMs?: number, note?: string): Step => {
      const ms = median(runs);
      const s: Step = { id, label, ms, runs, ratioNode: ms / nodeMs, targetMs, pass: targetMs === undefined ? undefined : ok && ms < targetMs, ok, note };
      steps.push(s);
      return s;
    };
    step('cold', 'cold attach, 1 tunnel + uplink (no instance loaded)', cold, coldOk);

    const tunnels = Array.from({ length: N }, (_, i) => `vx${i + 1}`);
    const bulk = inNs(C, [cli, ...tunnels, 'up0']);
    step('bulk', `attach ${N} tunnels in one call`, [bulk.ms], bulk.status === 0, 10000, bulk.status ? bulk.stderr.trim() : undefined);
    const one = inNs(C, [cli, `vx${N + 1}`, 'up0']);
    step('addone', `add 1 tunnel to an uplink serving ${N}`, [one.ms], one.status === 0, 1000, one.status ? one.stderr.trim() : undefined);
    const st = inNs(C, [cli, 'status', '--json']);
    let listed = -1;
    try {
      listed = (JSON.parse(st.stdout) as { interfaces: unknown[] }).interfaces.length;
    } catch {
      /* reported below */
    }
    step('status', `status --json with ${N + 1} tunnels`, [st.ms], st.status === 0 && listed === N + 2, 1000, `${listed} interfaces listed`);
    // What unload's per-device clsactFilterCount (2 tc processes per device) would cost as one tc -batch.
    let tcIn = '';
    for (const d of ['up0', ...tunnels, `vx${N + 1}`]) tcIn += `filter show dev ${d} ingress\nfilter show dev ${d} egress\n`;
    const tb2 = nowNs();
    const tcOut = ns(C, ['tc', '-j', '-batch', '-'], { input: tcIn, allowFail: true });
    const tcBatchMs = Number(nowNs() - tb2) / 1e6;
    const tcBatchLists = (tcOut.match(/^\[/gm) ?? []).length;
    const un = inNs(C, [cli, 'up0', '--unload']);
    const left = inNs(C, ['tc', 'filter', 'show', 'dev', 'vx1', 'egress']).stdout.trim();
    step('unload', `unload the uplink with all ${N + 1} tunnels`, [un.ms], un.status === 0 && left === '', undefined, left ? 'filters left behind' : undefined);

    if (opts.profile) {
      // Re-run the steps that missed their target under the CPU profiler.
      const dir = mkdtempSync(join(opts.tmp, 'prof-'));
      const prof = (name: string, args: string[]) => {
        const sub = join(dir, name);
        const r = inNs(C, ['node', '--cpu-prof', `--cpu-prof-dir=${sub}`, '--cpu-prof-interval', '200', bundle, ...args]);
        const file = readdirSync(sub).find((f) => f.endsWith('.cpuprofile'));
        if (!file) return;
        const s = summarizeProfile(name, join(sub, file), bundle);
        s.note = `wall ${Math.round(r.ms)} ms, of which node CPU samples ${Math.round(s.totalMs)} ms (the rest: waiting for child processes and the kernel)`;
        profiles.push(s);
      };
      // steps over target; unload (no target) when it takes longer than the bulk attach budget
      const missed = (id: string) => {
        const s = steps.find((x) => x.id === id);
        return !!s && (s.pass === false || (s.targetMs === undefined && s.ms > 10000));
      };
      if (['bulk', 'addone', 'status', 'unload'].some(missed)) {
        if (missed('bulk')) prof('bulk', [...tunnels, 'up0']);
        else inNs(C, [cli, ...tunnels, 'up0']);
        if (missed('addone')) prof('addone', [`vx${N + 1}`, 'up0']);
        else inNs(C, [cli, `vx${N + 1}`, 'up0']);
        if (missed('status')) prof('status', ['status', '--json']);
        if (missed('unload')) prof('unload', ['up0', '--unload']);
        else inNs(C, [cli, 'up0', '--unload']);
      }
    }
    return {
      seconds: (Date.now() - t0) / 1000,
      tunnels: N,
      baselines: { nodeMs, ipLinkShowMs: median(ipRuns), ipJsonLinkShowMs: median(ipJRuns), ipJsonLinkShow1000Ms: median(ipJ1000), ipBatchCreateMs: batchMs, tcBatchMs, tcBatchLists },
      steps,
      profiles,
    };
  } finally {
    delNetns(C);
    delNetns(D);
  }
}
