/**
 * preserve-dscp benchmarks: node --import tsx bench/run.ts [--quick] [--no-profile] [--only=perpacket,variants,map,throughput,control]
 *
 * Writes bench/results.json and bench/chart.svg, prints the tables and
 * refreshes the "latest run" section of BENCHMARKS.md. Root only; uses
 * throwaway network namespaces (pdscpb-*) and a temp dir, removed at the end.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chartSvg } from './chart.js';
import { type ControlResult, runControl } from './control.js';
import { loadavg, machine, round } from './lib.js';
import { type MapHitRow, runMapHit } from './maphit.js';
import { cases, type PerPacketResult, runPerPacket } from './perpacket.js';
import { runThroughput, type ThroughputResult } from './throughput.js';
import { arrayStore, buildVariant, clangArgs, LRU_STORE, VARIANTS } from './variants.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const profile = !argv.includes('--no-profile');
const onlyArg = argv.find((a) => a.startsWith('--only='));
const only = new Set((onlyArg ? onlyArg.slice(7) : 'perpacket,variants,map,throughput,control').split(','));

const log = (s: string) => process.stderr.write(`[bench] ${s}\n`);

function table(head: string[], rows: Array<Array<string | number>>): string {
  const cells = [head, ...rows.map((r) => r.map(String))];
  const w = head.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(w[i])).join(' | ')} |`;
  return [line(head), `|${w.map((n) => '-'.repeat(n + 2)).join('|')}|`, ...cells.slice(1).map(line)].join('\n');
}
const pf = (p?: boolean) => (p === undefined ? '' : p ? 'PASS' : 'FAIL');
const mb = (b: number) => `${(b / 1048576).toFixed(2)} MiB`;

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('run as root (BPF, tc, network namespaces)');
  const t0 = Date.now();
  const tmp = mkdtempSync(join(tmpdir(), 'pdscp-bench-'));
  const tag = String(process.pid);
  // A private lock file: the tool's lock is global (not per namespace), and
  // other test runs on this machine must not stall the control-plane timings.
  const env = { ...process.env, PRESERVE_DSCP_LOCK: join(tmp, 'lock') };
  const results: Record<string, unknown> = { date: new Date().toISOString(), machine: machine(), loadavgStart: loadavg(), quick };
  try {
    // The CLI steps run the bundle: rebuild it when src/ or bpf/ is newer.
    const built = ['cli.cjs', 'preserve_dscp.bpf.o'].map((f) => join(root, 'dist', f));
    const newest = (dir: string): number => Math.max(0, ...readdirSync(dir, { recursive: true }).map((f) => statSync(join(dir, String(f))).mtimeMs));
    if (!built.every(existsSync) || Math.max(newest(join(root, 'src')), newest(join(root, 'bpf'))) > Math.min(...built.map((f) => statSync(f).mtimeMs))) {
      log('dist/ missing or older than src/, bpf/: npm run build');
      try {
        execFileSync('npm', ['run', 'build'], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });
      } catch {
        if (!built.every(existsSync)) throw new Error('npm run build failed and dist/ is missing');
        log('npm run build failed: measuring the existing dist/');
        results.staleDist = true;
      }
    }
    // The bench object: the datapath + wrappers, compiled as the brief says.
    const benchObj = join(tmp, 'bench.bpf.o');
    execFileSync('clang', [...clangArgs(), `-I${join(root, 'bpf')}`, '-c', join(root, 'bench', 'bench.bpf.c'), '-o', benchObj], { stdio: 'inherit' });

    const out: string[] = [];
    let pp: PerPacketResult | undefined;
    if (only.has('perpacket')) {
      log('per-packet cost (BPF_PROG_TEST_RUN)');
      pp = runPerPacket([{ tag: 'main', objPath: benchObj, cases: cases() }], { repeat: 1_000_000, rounds: quick ? 3 : 7 });
      const cs = pp.results.main;
      results.perPacket = { repeat: pp.repeat, rounds: pp.rounds, seconds: pp.seconds, baselines: pp.baselines.main, cases: cs };
      out.push(
        `Per-packet cost, BPF_PROG_TEST_RUN, repeat ${pp.repeat}, median of ${pp.rounds} interleaved rounds (${pp.seconds.toFixed(0)} s)`,
        table(
          ['case', 'program', 'ns', 'matched empty', 'ns', 'ratio', 'plain empty ns', 'ratio', 'target', ''],
          cs.map((c) => [c.label, c.prog, c.ns.toFixed(1), c.base, c.baseNs.toFixed(1), `${c.ratio.toFixed(2)}x`, c.emptyNs.toFixed(1), `${c.ratioEmpty.toFixed(2)}x`, c.target ? `<= ${c.target}x` : '', pf(c.pass) + (c.checkError ? ` CHECK FAILED: ${c.checkError}` : '')]),
        ),
        `empty programs (ns): ${Object.entries(pp.baselines.main).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')}`,
        '',
      );
      writeFileSync(join(root, 'bench', 'chart.svg'), chartSvg(cs, `preserve-dscp per-packet cost vs empty tc program (${machine().nproc} cores, kernel ${machine().kernel})`));
    }

    if (only.has('variants')) {
      log('variants of the datapath (where the time goes)');
      const ids = ['tmap_cur_l2', 'tmap_new_l2', 'thash_l2', 'up_map_v4_l2', 'up_hash_v4_l2'];
      const built = VARIANTS.map((v) => buildVariant(root, join(tmp, 'variants'), v));
      const subjects = built.filter((b) => b.obj).map((b) => ({ tag: b.variant.name, objPath: b.obj!, cases: cases().filter((c) => ids.includes(c.id)), store: b.variant.array ? arrayStore(16384) : LRU_STORE }));
      const vr = runPerPacket(subjects, { repeat: 1_000_000, rounds: quick ? 3 : 5 });
      results.variants = {
        seconds: vr.seconds,
        variants: built.map((b) => ({ name: b.variant.name, what: b.variant.what, error: b.error, cases: vr.results[b.variant.name] })),
      };
      const asis = vr.results['as-is'];
      out.push(
        `Variants of the datapath (modified copies, interleaved; ratio to the matched empty; delta ns vs as-is) (${vr.seconds.toFixed(0)} s)`,
        table(
          ['variant', ...ids],
          built.map((b) => [
            b.variant.name,
            ...ids.map((id) => {
              const c = vr.results[b.variant.name]?.find((x) => x.id === id);
              const a = asis?.find((x) => x.id === id);
              if (!c) return b.error ?? '-';
              const d = a && b.variant.name !== 'as-is' ? ` (${c.ns - a.ns >= 0 ? '+' : ''}${(c.ns - a.ns).toFixed(1)})` : '';
              return `${c.ns.toFixed(1)} ns ${c.ratio.toFixed(2)}x${d}${c.checkError ? ' CHECK FAILED' : ''}`;
            }),
          ]),
        ),
        ...built.map((b) => `  ${b.variant.name}: ${b.variant.what}${b.error ? ` [skipped: ${b.error}]` : ''}`),
        '',
      );
    }

    if (only.has('map')) {
      log('map hit ratio and memory (100,000 flows)');
      const flows = quick ? 30000 : 100000;
      const rows: MapHitRow[] = [runMapHit(benchObj, 'LRU_HASH (as built)', 16384, flows), runMapHit(benchObj, 'LRU_HASH (as built)', 131072, flows)];
      for (const slots of [131072, 1048576]) {
        const b = buildVariant(root, join(tmp, 'variants'), VARIANTS.find((v) => v.name === 'array')!, slots);
        if (b.obj) rows.push(runMapHit(b.obj, 'ARRAY direct-mapped (variant)', slots, flows));
      }
      results.mapHit = rows;
      out.push(
        `Map carrier with ${flows} concurrent flows`,
        table(
          ['flow store', 'entries', 'hit: all tunnel pkts, then all uplink pkts', 'entry still current on 2nd pass', 'hit: tunnel then uplink per packet', 'flows map memlock', 'instance memlock (4 maps)'],
          rows.map((r) => [r.store, r.size, `${(r.hitAfterFullPass * 100).toFixed(1)}%`, `${(r.currentOnSecondPass * 100).toFixed(1)}%`, `${(r.hitPerPacket * 100).toFixed(1)}%`, mb(r.flowsMemlock), mb(r.instanceMemlock)]),
        ),
        '',
      );
    }

    if (only.has('throughput')) {
      log('tunnel throughput (iperf3 over VXLAN, real CLI)');
      const th: ThroughputResult = runThroughput([join(root, 'bin', 'preserve-dscp')], env, { runs: quick ? 3 : 5, seconds: quick ? 2 : 3, tag });
      results.throughput = th;
      out.push(
        `Tunnel throughput: iperf3 TCP -S 0xb8 over VXLAN tos 0 via veth, ${th.runSeconds} s runs, off/hash/map alternating, ratio = median over rounds of the run / mean of the off runs around it (${th.seconds.toFixed(0)} s)`,
        table(
          ['arm', 'runs (Gbit/s)', 'median', 'paired ratio to off', 'uplink rewritten', 'target', ''],
          Object.entries(th.arms).map(([arm, v]) => [
            arm === 'off' ? 'not attached' : arm === 'hash' ? 'attached (auto: hash carrier)' : 'attached --carrier map',
            v.map((x) => x.toFixed(2)).join(' '),
            th.median[arm].toFixed(2),
            arm === 'off' ? '1' : `${(th.ratio[arm as 'hash' | 'map'] * 100).toFixed(1)}%`,
            arm === 'off' ? '' : String(th.rewritten[arm] ?? ''),
            arm === 'off' ? '' : '>= 97%',
            arm === 'off' ? '' : pf(th.ratio[arm as 'hash' | 'map'] >= th.target),
          ]),
        ),
        '',
      );
    }

    if (only.has('control')) {
      log('control plane (real CLI, 1,000 tunnels)');
      const cr: ControlResult = runControl(root, env, { tunnels: 1000, tag, tmp, profile });
      results.control = cr;
      out.push(
        `Control plane (bin/preserve-dscp, wall time) (${cr.seconds.toFixed(0)} s)`,
        table(
          ['step', 'ms', 'x node -e 0', 'target', ''],
          cr.steps.map((s) => [s.label + (s.note ? ` (${s.note})` : ''), s.ms.toFixed(0), `${s.ratioNode.toFixed(1)}x`, s.targetMs ? `< ${s.targetMs} ms` : '', pf(s.pass) + (s.ok ? '' : ' ERROR')]),
        ),
        `baselines: node -e 0 ${cr.baselines.nodeMs.toFixed(0)} ms; ip link show ${cr.baselines.ipLinkShowMs.toFixed(1)} ms (2 links), ip -j -d link show ${cr.baselines.ipJsonLinkShowMs.toFixed(1)} ms (2 links) / ${cr.baselines.ipJsonLinkShow1000Ms.toFixed(1)} ms (${cr.tunnels + 3} links); ip -batch creating ${cr.tunnels + 1} VXLAN devices ${cr.baselines.ipBatchCreateMs} ms; one tc -j -batch listing ingress+egress filters of all ${cr.tunnels + 2} devices ${cr.baselines.tcBatchMs.toFixed(0)} ms (${cr.baselines.tcBatchLists} lists)`,
        '',
      );
      for (const p of cr.profiles) {
        out.push(
          `Profile of '${p.step}' (node --cpu-prof on dist/cli.cjs): ${p.note}`,
          table(['function (inclusive)', 'source', 'ms'], p.byTotal.map((f) => [f.fn, f.file, f.totalMs.toFixed(0)])),
          table(['function (self)', 'source', 'ms'], p.bySelf.map((f) => [f.fn, f.file, f.selfMs.toFixed(0)])),
          '',
        );
      }
    }

    const seconds = (Date.now() - t0) / 1000;
    results.seconds = round(seconds, 1);
    results.loadavgEnd = loadavg();
    out.push(`Total bench time ${seconds.toFixed(0)} s; load average ${results.loadavgStart} at start, ${results.loadavgEnd} at end.`);
    const text = out.join('\n');
    process.stdout.write(`${text}\n`);
    writeFileSync(join(root, 'bench', 'results.json'), `${JSON.stringify(results, null, 2)}\n`);
    updateBenchmarksMd(text, results);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** Replaces the generated section of BENCHMARKS.md (between the markers). */
function updateBenchmarksMd(text: string, results: Record<string, unknown>): void {
  const path = join(root, 'BENCHMARKS.md');
  if (!existsSync(path)) return;
  const m = results.machine as ReturnType<typeof machine>;
  const begin = '<!-- bench:begin (generated by bench/run.ts) -->';
  const end = '<!-- bench:end -->';
  const md = readFileSync(path, 'utf8');
  const i = md.indexOf(begin);
  const j = md.indexOf(end);
  if (i < 0 || j < i) return;
  const body = `${begin}\nLatest run: ${results.date}, ${m.nproc} cores, ${m.cpu}, kernel ${m.kernel}, node ${m.node}, ${m.clang}${results.quick ? ' (--quick)' : ''}.\n\n\`\`\`\n${text}\n\`\`\`\n`;
  writeFileSync(path, md.slice(0, i) + body + md.slice(j));
}

main().catch((e) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
