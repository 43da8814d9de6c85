/**
 * `preserve-dscp demo`: builds two throwaway network namespaces joined by a
 * VXLAN `tos 0` tunnel (outer DSCP 0, only ECN copied), sends ICMP, UDP and
 * TCP with several DSCPs over IPv4 and IPv6, captures the outer packets on
 * the uplink and shows the outer DSCP for each inner DSCP without and with
 * preserve-dscp. Everything it made is removed, also on error or Ctrl-C.
 */
import { disposeLab, emergencyCleanup, inNetns, kernelHasWireguard, makeVxlanPair, makeWireguardPair, newLab } from './demo/lab.js';
import { type FlowResult, flowMatrix, measure } from './demo/measure.js';
import { DSCP_NAMES, type Kind } from './demo/traffic.js';
import { run } from './ops.js';
import { shQuiet } from './demo/exec.js';

export const DEMO_DSCPS = [0, 8, 10, 34, 46, 48];
const KINDS: Kind[] = ['icmp', 'udp', 'tcp'];

export interface DemoRow {
  traffic: string;
  kind: Kind;
  family: 4 | 6;
  inner: number;
  innerName: string;
  /** the outer DSCP when every outer packet of the flow had the same; null if none was captured or they differ */
  without: number | null;
  with: number | null;
  withoutSeen: number[];
  withSeen: number[];
  packets: { without: number; with: number };
}

export interface DemoReport {
  tunnel: 'vxlan' | 'wireguard';
  underlay: 'ipv4';
  namespaces: string[];
  wireguardInKernel: boolean;
  attach: string[];
  dscps: number[];
  rows: DemoRow[];
  ok: boolean;
  seconds: number;
}

const single = (xs: number[]) => (xs.length === 1 ? xs[0] : null);

function rowsOf(without: FlowResult[], withTool: FlowResult[]): DemoRow[] {
  return without.map((w, i) => {
    const t = withTool[i];
    return {
      traffic: w.label,
      kind: w.flow.kind,
      family: w.flow.family,
      inner: w.innerDscp,
      innerName: DSCP_NAMES[w.innerDscp] ?? '',
      without: single(w.outerDscps),
      with: single(t.outerDscps),
      withoutSeen: w.outerDscps,
      withSeen: t.outerDscps,
      packets: { without: w.packets.length, with: t.packets.length },
    };
  });
}

function cell(v: number | null, seen: number[]): string {
  if (v !== null) return String(v);
  return seen.length ? seen.join('/') : '-';
}

function table(rows: DemoRow[], which: 'without' | 'with'): string[] {
  const traffic = [...new Set(rows.map((r) => r.traffic))];
  const dscps = [...new Set(rows.map((r) => r.inner))];
  const head = dscps.map((d) => `${d} ${DSCP_NAMES[d] ?? ''}`.trim());
  const w = Math.max(...head.map((h) => h.length)) + 2;
  const lines = [`  ${'inner DSCP ->'.padEnd(14)}${head.map((h) => h.padEnd(w)).join('')}`];
  for (const t of traffic) {
    const cells = dscps.map((d) => {
      const r = rows.find((x) => x.traffic === t && x.inner === d) as DemoRow;
      return which === 'without' ? cell(r.without, r.withoutSeen) : cell(r.with, r.withSeen);
    });
    lines.push(`  ${t.padEnd(14)}${cells.map((c) => c.padEnd(w)).join('')}`);
  }
  return lines;
}

function hasWgTool(): boolean {
  return shQuiet('sh', ['-c', 'command -v wg']);
}

export async function runDemo(opts: { json: boolean; verbose: boolean }): Promise<void> {
  const started = Date.now();
  const say = (m: string) => {
    if (opts.verbose) process.stderr.write(`demo: ${m}\n`);
  };
  const lab = newLab('pdscp-demo');
  const onSignal = (sig: NodeJS.Signals) => {
    emergencyCleanup();
    process.stderr.write(`preserve-dscp: demo interrupted (${sig}), namespaces removed\n`);
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);
  process.on('exit', emergencyCleanup);
  try {
    const wireguard = kernelHasWireguard(lab);
    const useWg = wireguard && hasWgTool();
    say(useWg ? 'this kernel has WireGuard: using it' : 'no WireGuard here (kernel or wireguard-tools): VXLAN tos 0, which loses DSCP the same way');
    const pair = useWg ? makeWireguardPair(lab, 4) : makeVxlanPair(lab, 4);
    say(`namespaces ${pair.a.ns} (${pair.a.under}) and ${pair.b.ns} (${pair.b.under}), ${pair.tunnel} over ${pair.uplink}`);
    const flows = flowMatrix(pair, KINDS, [4, 6], DEMO_DSCPS.map((d) => d << 2));
    say(`sending ${flows.length} flows without preserve-dscp`);
    const without = await measure(pair, flows);
    say(`attaching: preserve-dscp ${pair.tunnel} ${pair.uplink} in ${pair.a.ns}`);
    const r = inNetns(pair.a.ns, () => run({ op: 'attach', tunnels: [pair.tunnel], uplink: pair.uplink, carrier: 'auto' }));
    const attach = r.actions.map((a) => ('ifname' in a ? `${a.op} ${a.ifname}${'program' in a ? ` ${a.program}` : ''}` : a.op));
    for (const a of attach) say(`  ${a}`);
    say(`sending ${flows.length} flows with preserve-dscp`);
    const withTool = await measure(pair, flows);
    const rows = rowsOf(without, withTool);
    const ok = rows.every((x) => x.with === x.inner && x.without === 0);
    const report: DemoReport = {
      tunnel: useWg ? 'wireguard' : 'vxlan',
      underlay: 'ipv4',
      namespaces: [pair.a.ns, pair.b.ns],
      wireguardInKernel: wireguard,
      attach,
      dscps: DEMO_DSCPS,
      rows,
      ok,
      seconds: Math.round((Date.now() - started) / 100) / 10,
    };
    if (opts.json) {
      process.stdout.write(`${JSON.stringify(report)}\n`);
    } else {
      const lines = [
        `preserve-dscp demo: ${useWg ? 'WireGuard' : 'VXLAN tos 0'} tunnel ${pair.a.inner4} -> ${pair.b.inner4} (and ${pair.a.inner6} -> ${pair.b.inner6})`,
        `over ${pair.a.under} -> ${pair.b.under}, between throwaway namespaces ${pair.a.ns} and ${pair.b.ns}.`,
        'Outer DSCP of the captured tunnel packets, for each inner DSCP:',
        '',
        'without preserve-dscp:',
        ...table(rows, 'without'),
        '',
        `with preserve-dscp (${pair.tunnel} ${pair.uplink}):`,
        ...table(rows, 'with'),
        '',
        ok
          ? `ok: with preserve-dscp every inner DSCP reached the outer header (${rows.length} flows); without it the outer DSCP was 0.`
          : 'MISMATCH: some flows did not show the expected outer DSCP (see the tables; - means no packet was captured)',
        `(${report.seconds} s; namespaces removed)`,
      ];
      process.stdout.write(`${lines.join('\n')}\n`);
    }
    if (!ok) process.exitCode = 1;
  } finally {
    emergencyCleanup();
    disposeLab(lab);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('SIGHUP', onSignal);
    process.off('exit', emergencyCleanup);
  }
}
