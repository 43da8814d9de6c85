/**
 * Core on real WireGuard: ICMP, UDP and TCP with DSCP 0, CS1, AF41, EF, CS6
 * (and a few ECN code points), IPv4 and IPv6 inner, over an IPv4 and an IPv6
 * underlay: without the tool every outer data packet has DSCP 0; with
 * `preserve-dscp wg0 veth0` (hash carrier, the default for WireGuard) and with
 * `--carrier map` every outer data packet carries its inner packet's DSCP and
 * the ECN WireGuard gives it.
 *
 * Outer data packets (A's veth0, egress, from wg0's listen port) are paired
 * with the decrypted inner packets on B's wg0 by order.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { guardNamespaces, withLab } from '../../e2e/lib/lab.js';
import { type Flow, sendSockets, Sink } from '../../../src/demo/traffic.js';
import { innerPackets, kindOf, pairByOrder, startAll, wgData, wgEcn, wgPackets } from '../lib/capture.js';
import { bash, disposeWg, makeWg, setUnderlay, UPLINK, warm, type WgTopo } from '../lib/wg.js';
import { DSCPS, pd, secs, status, vmOnly } from '../lib/tool.js';

vmOnly();
guardNamespaces();

const UDP_PORT = 9000;
const TCP_PORT = 9001;

interface Outcome {
  outer: number;
  inner: number;
  misaligned: number;
  wrong: number;
  byKind: Record<string, { n: number; wrong: number }>;
  examples: string[];
  timing: string;
}

/** Sends the whole matrix once and pairs outer with inner. */
async function window(topo: WgTopo, withTool: boolean): Promise<Outcome> {
  const t = topo.t(0);
  const t0 = Date.now();
  const [outerCap, innerCap] = await startAll([
    [topo.a, UPLINK, `udp and src port ${t.portA}`, 'out'],
    [topo.b, 'wg0', '', 'in'],
  ]);
  const tc = secs(t0);
  const pings: Flow[] = [];
  const sockets: Flow[] = [];
  for (const fam of [4, 6] as const) {
    const dst = fam === 4 ? t.b4 : t.b6;
    for (const d of DSCPS) {
      pings.push({ kind: 'icmp', family: fam, tclass: d << 2, dst, count: 2 });
      sockets.push({ kind: 'udp', family: fam, tclass: d << 2, dst, port: UDP_PORT, count: 3 });
      sockets.push({ kind: 'tcp', family: fam, tclass: d << 2, dst, port: TCP_PORT, count: 2 });
    }
  }
  // ECN code points: ECT(0), ECT(1) and CE (WireGuard puts ECT(0) outside for CE).
  sockets.push({ kind: 'udp', family: 4, tclass: (46 << 2) | 2, dst: t.b4, port: UDP_PORT, count: 3 });
  sockets.push({ kind: 'udp', family: 6, tclass: (34 << 2) | 1, dst: t.b6, port: UDP_PORT, count: 3 });
  sockets.push({ kind: 'udp', family: 4, tclass: (8 << 2) | 3, dst: t.b4, port: UDP_PORT, count: 3 });
  // One after the other, in one shell: ICMP has no ports, so all pings between
  // the two hosts share one flow hash (the map carrier keeps one mark per hash).
  const pingScript = pings
    .map((f) => `ping -${f.family} -n -q -c ${f.count} -i 0.05 -W 3 -Q 0x${f.tclass.toString(16)} ${f.dst} >/dev/null || echo "ping -Q 0x${f.tclass.toString(16)} ${f.dst} failed"`)
    .join('\n');
  const [pingOut] = await Promise.all([bash(`nsenter --net=/run/netns/${topo.a} bash -c '${pingScript}'`), sendSockets(topo.a, sockets)]);
  assert.equal(pingOut.trim(), '', 'pings failed');
  const t1 = Date.now();
  const [o, i] = await Promise.all([outerCap.stop(500), innerCap.stop(500)]);
  const outer = wgData(wgPackets(o), t.portA);
  const inner = innerPackets(i);
  const r = pairByOrder(outer, inner);
  const out: Outcome = { outer: r.outerCount, inner: r.innerCount, misaligned: r.misaligned, wrong: 0, byKind: {}, examples: [], timing: `captures ${tc} s, traffic ${Math.round((t1 - t0) / 100 - tc * 10) / 10} s, total ${secs(t0)} s` };
  for (const { outer: op, inner: ip } of r.pairs) {
    const wantDscp = withTool ? ip.ip.dscp : 0;
    const ok = op.ip.dscp === wantDscp && op.ip.ecn === wgEcn(ip.ip.ecn);
    const k = `${kindOf(ip.ip)}/v${ip.ip.version}`;
    out.byKind[k] ??= { n: 0, wrong: 0 };
    out.byKind[k].n++;
    if (!ok) {
      out.wrong++;
      out.byKind[k].wrong++;
      if (out.examples.length < 5) out.examples.push(`${k} inner tclass 0x${ip.ip.tclass.toString(16)} -> outer 0x${op.ip.tclass.toString(16)}`);
    }
  }
  return out;
}

test('core on WireGuard: ICMP/UDP/TCP, DSCP 0/CS1/AF41/EF/CS6, IPv4+IPv6 inner, IPv4+IPv6 underlay, hash and map', async (tt) => {
  await withLab('wg core', async (lab) => {
    const t0 = Date.now();
    let topo: WgTopo | undefined;
    let sink: Sink | undefined;
    try {
      topo = await makeWg(lab, 1, 4);
      sink = await Sink.start(topo.b, { udp: [UDP_PORT], tcp: [TCP_PORT] });
      const topoRef = topo;
      for (const fam of [4, 6] as const) {
        await setUnderlay(topoRef, fam);
        await warm(topoRef);
        for (const mode of ['without', 'hash', 'map'] as const) {
          await tt.test(`IPv${fam} underlay, ${mode === 'without' ? 'without the tool' : `carrier ${mode}`}`, async () => {
            if (mode !== 'without') {
              await pd(topoRef.a, [...(mode === 'map' ? ['--carrier', 'map'] : []), 'wg0', UPLINK]);
              if (fam === 4) {
                const st = await status(topoRef.a);
                const wg0 = st.interfaces.find((x) => x.ifname === 'wg0');
                assert.equal(wg0?.carrier, mode, `status says carrier ${wg0?.carrier}`);
              }
            }
            try {
              const r = await window(topoRef, mode !== 'without');
              const kinds = Object.entries(r.byKind)
                .map(([k, v]) => `${k} ${v.n}${v.wrong ? ` (${v.wrong} wrong)` : ''}`)
                .join(', ');
              console.log(`core: IPv${fam} underlay ${mode.padEnd(7)}: ${r.outer} outer data packets, ${r.inner} inner, ${r.misaligned} misaligned, ${r.wrong} wrong [${kinds}] (${r.timing})`);
              assert.equal(r.outer, r.inner, 'every outer data packet pairs with one inner packet');
              assert.equal(r.misaligned, 0, 'pairs by order have matching lengths');
              assert.ok(r.outer >= 100, `${r.outer} outer data packets`);
              for (const k of ['icmp/v4', 'icmp/v6', 'udp/v4', 'udp/v6', 'tcp/v4', 'tcp/v6']) assert.ok((r.byKind[k]?.n ?? 0) > 0, `no ${k} packet`);
              assert.equal(r.wrong, 0, `wrong outer marks: ${r.examples.join('; ')}`);
            } finally {
              if (mode !== 'without') await pd(topoRef.a, ['wg0', UPLINK, '--unload']);
            }
          });
        }
      }
      console.log(`core: done in ${secs(t0)} s`);
    } finally {
      await sink?.stop();
      disposeWg(topo);
    }
  });
});
