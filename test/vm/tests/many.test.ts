/**
 * Many WireGuard interfaces on one uplink (veth0):
 * - a continuous flow on wg0 while wg3 is created and attached and wg1 is
 *   unloaded: no outer data packet of wg0 without its DSCP;
 * - unload after `ip link del` (exit 0, the uplink stays for the others and
 *   goes with the last tunnel), and gc after deleting interfaces;
 * - identical fe80::1 -> fe80::2 UDP flows (same ports) on wg0 and wg1 with
 *   different DSCPs, both carriers: each tunnel's outer packets (told apart
 *   by the outer source port, the tunnel's listen port) carry its own DSCP.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sh } from '../../../src/demo/exec.js';
import { guardNamespaces, withLab } from '../../e2e/lib/lab.js';
import { sendUdp } from '../../e2e/lib/star.js';
import { innerPackets, startAll, wgData, wgPackets } from '../lib/capture.js';
import { addWgTunnel, disposeWg, makeWg, ourFilters, UPLINK, warm, type WgTopo } from '../lib/wg.js';
import { AF41, CS1, EF, pd, pdRun, secs, status, vmOnly } from '../lib/tool.js';

vmOnly();
guardNamespaces();

async function withWg(name: string, n: number, fn: (topo: WgTopo) => Promise<void>): Promise<void> {
  await withLab(name, async (lab) => {
    let topo: WgTopo | undefined;
    try {
      topo = await makeWg(lab, n, 4);
      await fn(topo);
    } finally {
      disposeWg(topo);
    }
  });
}

test('live add and unload: a running flow on wg0 never loses its DSCP', async () => {
  await withWg('wg live', 3, async (topo) => {
    const { a, b } = topo;
    await pd(a, ['wg0', 'wg1', 'wg2', UPLINK]);
    const before = ourFilters(a, 'wg0');
    await warm(topo, [0]);
    const [outerCap, innerCap] = await startAll([
      [a, UPLINK, `udp and src port ${topo.t(0).portA}`, 'out'],
      [b, 'wg0', 'udp and dst port 9000', 'in'],
    ]);
    const t0 = Date.now();
    let flowEnd = 0;
    const flow = sendUdp(a, [{ family: 4, dst: topo.t(0).b4, dport: 9000, tclasses: [EF << 2], count: 4000, gapUs: 1500 }]).then(() => (flowEnd = secs(t0)));
    const changes: string[] = [];
    const step = async (what: string, f: () => Promise<unknown>) => {
      await f();
      changes.push(`${what} @${secs(t0)}s`);
    };
    await step('wg3 created', () => addWgTunnel(topo, 3));
    await step('wg3 attached', () => pd(a, ['wg3', UPLINK]));
    await step('wg1 unloaded', () => pd(a, ['wg1', UPLINK, '--unload']));
    await step('wg0 wg2 wg3 again', () => pd(a, ['wg0', 'wg2', 'wg3', UPLINK]));
    const changesEnd = secs(t0);
    await flow;
    const [o, i] = await Promise.all([outerCap.stop(), innerCap.stop()]);
    const outer = wgData(wgPackets(o), topo.t(0).portA);
    const inner = innerPackets(i);
    const wrong = outer.filter((p) => p.ip.dscp !== EF).length;
    console.log(`live add/unload: ${wrong} of ${outer.length} outer data packets of wg0 without EF (${inner.length} inner received); changes ${changes.join(', ')}; flow ended @${flowEnd}s`);
    assert.ok(changesEnd <= flowEnd, `the changes (until ${changesEnd}s) must happen while the flow runs (until ${flowEnd}s)`);
    assert.ok(outer.length >= 3900, `${outer.length} outer data packets`);
    assert.equal(wrong, 0);
    assert.deepEqual(ourFilters(a, 'wg0'), before, 'wg0 keeps its filter and program');
    assert.equal(ourFilters(a, 'wg1').length, 0, 'wg1 unloaded');
    assert.equal(ourFilters(a, UPLINK).length, 1);
    const st = await status(a);
    assert.deepEqual(st.interfaces.find((x) => x.role === 'uplink')?.tunnels?.sort(), ['wg0', 'wg2', 'wg3']);
    // wg3, added live, works.
    await warm(topo, [3]);
    const [cap3] = await startAll([[a, UPLINK, `udp and src port ${topo.t(3).portA}`, 'out']]);
    await sendUdp(a, [{ family: 6, dst: topo.t(3).b6, dport: 9003, tclasses: [AF41 << 2], count: 100 }]);
    const p3 = wgData(wgPackets(await cap3.stop()), topo.t(3).portA);
    console.log(`live add/unload: wg3 (added live): ${p3.filter((p) => p.ip.dscp !== AF41).length} of ${p3.length} outer data packets without AF41`);
    assert.ok(p3.length >= 95);
    assert.ok(p3.every((p) => p.ip.dscp === AF41));
  });
});

test('unload after ip link del, then the uplink goes with the last tunnel; gc after deleting interfaces', async () => {
  await withWg('wg unload', 3, async (topo) => {
    const { a } = topo;
    await pd(a, ['wg0', 'wg1', UPLINK]);
    sh('ip', ['-n', a, 'link', 'del', 'wg1']);
    const r = await pdRun(a, ['wg1', UPLINK, '--unload']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(ourFilters(a, UPLINK).length, 1, 'the uplink stays for wg0');
    let st = await status(a);
    assert.deepEqual(st.interfaces.map((x) => x.ifname).sort(), ['veth0', 'wg0']);
    sh('ip', ['-n', a, 'link', 'del', 'wg0']);
    const r2 = await pdRun(a, ['wg0', UPLINK, '--unload']);
    assert.equal(r2.code, 0, r2.stderr);
    assert.equal(ourFilters(a, UPLINK).length, 0, 'the uplink filter goes with the last tunnel');
    st = await status(a);
    assert.equal(st.loaded, false);
    console.log(`unload after ip link del: exit ${r.code} (uplink kept for wg0), then exit ${r2.code} (uplink filter removed, status loaded=${st.loaded})`);

    // gc: wg2 plus two new ones, delete without unload.
    await addWgTunnel(topo, 4);
    await addWgTunnel(topo, 5);
    await pd(a, ['wg2', 'wg4', 'wg5', UPLINK]);
    sh('ip', ['-n', a, 'link', 'del', 'wg4']);
    sh('ip', ['-n', a, 'link', 'del', 'wg5']);
    const g = await pdRun(a, ['gc']);
    assert.equal(g.code, 0, g.stderr);
    assert.equal(ourFilters(a, UPLINK).length, 1, 'wg2 still uses the uplink');
    assert.equal(ourFilters(a, 'wg2').length, 1);
    st = await status(a);
    assert.deepEqual(st.interfaces.map((x) => x.ifname).sort(), ['veth0', 'wg2']);
    assert.deepEqual(st.warnings, []);
    sh('ip', ['-n', a, 'link', 'del', 'wg2']);
    const g2 = await pdRun(a, ['gc']);
    assert.equal(g2.code, 0, g2.stderr);
    assert.equal(ourFilters(a, UPLINK).length, 0, 'gc removed the uplink filter with the last tunnel');
    st = await status(a);
    assert.equal(st.loaded, false);
    console.log(`gc: after deleting wg4, wg5: uplink kept for wg2; after deleting wg2: uplink filter removed (status loaded=${st.loaded})`);
  });
});

test('isolation: the same fe80::1 -> fe80::2 UDP flow on wg0 (EF) and wg1 (CS1), both carriers', async (tt) => {
  await withWg('wg iso', 2, async (topo) => {
    const { a } = topo;
    await warm(topo);
    for (const carrier of ['map', 'hash'] as const) {
      await tt.test(`carrier ${carrier}`, async () => {
        await pd(a, ['--carrier', carrier, 'wg0', 'wg1', UPLINK]);
        try {
          const [cap] = await startAll([[a, UPLINK, 'udp', 'out']]);
          await sendUdp(a, [
            { family: 6, src: 'fe80::1', sport: 6696, dst: 'fe80::2', dport: 6696, dev: 'wg0', tclasses: [EF << 2], count: 400, gapUs: 300 },
            { family: 6, src: 'fe80::1', sport: 6696, dst: 'fe80::2', dport: 6696, dev: 'wg1', tclasses: [CS1 << 2], count: 400, gapUs: 300 },
          ]);
          const pkts = wgPackets(await cap.stop());
          for (const [i, want] of [
            [0, EF],
            [1, CS1],
          ] as const) {
            const mine = wgData(pkts, topo.t(i).portA);
            const wrong = mine.filter((p) => p.ip.dscp !== want).length;
            console.log(`isolation ${carrier} wg${i}: ${mine.length} outer data packets, ${wrong} with another DSCP than ${want}`);
            assert.ok(mine.length >= 390, `wg${i}: ${mine.length}`);
            assert.equal(wrong, 0);
          }
        } finally {
          await pd(a, ['wg0', 'wg1', UPLINK, '--unload']);
        }
      });
    }
  });
});
