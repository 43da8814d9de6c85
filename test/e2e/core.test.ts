/**
 * End-to-end: the command line as a user runs it, on throwaway namespaces
 * joined by a VXLAN `tos 0` tunnel; the outer packets are captured on the
 * uplink and each one's DSCP/ECN is compared with its inner packet's.
 *
 * Run after `npm run build`:
 *   node --import tsx --test --test-concurrency=1 test/e2e/*.test.ts
 */
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { sh } from '../../src/demo/exec.js';
import { flowMatrix, measure } from '../../src/demo/measure.js';
import type { TunnelPacket } from '../../src/demo/pcap.js';
import { ECN_ECT0, type Flow, type Kind, ping, sendSockets } from '../../src/demo/traffic.js';
import { expectOuterZero, expectPreserved, expectSomeEct0 } from './lib/check.js';
import { addForeignFilter, cli, cliOk, requireBuild, tcFilters, tcQdiscs } from './lib/env.js';
import { guardNamespaces, makeVxlanPair, withLab } from './lib/lab.js';
import { makeTunUplink } from './lib/tun.js';

const DSCPS = [0, 8, 10, 34, 46, 48];
/** Every DSCP plain, plus ECT(0) on two of them. */
const TCLASSES = [...DSCPS.map((d) => d << 2), (34 << 2) | ECN_ECT0, (46 << 2) | ECN_ECT0];
const KINDS: Kind[] = ['icmp', 'udp', 'tcp'];
const T = { timeout: 90_000 };

before(() => requireBuild());
guardNamespaces();

describe('outer DSCP follows inner DSCP (VXLAN tos 0, veth uplink)', () => {
  for (const underlay of [4, 6] as const) {
    for (const carrier of ['hash', 'map'] as const) {
      const name = `IPv${underlay} underlay, --carrier ${carrier}`;
      test(`${name}: ICMP, UDP, TCP over IPv4 and IPv6 inner; ECN kept; 0 without the tool`, T, () =>
        withLab(`u${underlay}-${carrier}`, async (lab) => {
          const pair = makeVxlanPair(lab, underlay);
          const flows = flowMatrix(pair, KINDS, [4, 6], TCLASSES);

          // Baseline: without the tool the outer DSCP is 0 (the test can fail).
          const without = await measure(pair, flows);
          expectOuterZero(without);
          expectSomeEct0(without);

          const out = await cliOk(pair.a.ns, ['--carrier', carrier, pair.tunnel, pair.uplink]);
          assert.match(out, /attached/);
          const filters = tcFilters(pair.a.ns, pair.tunnel);
          assert.equal(filters.length, 1);
          assert.match(filters[0].progName ?? '', carrier === 'hash' ? /thash/ : /tmap/);

          const withTool = await measure(pair, flows);
          expectPreserved(withTool);
          expectSomeEct0(withTool);
          // Every DSCP of every traffic type really left with its own mark.
          for (const k of KINDS) {
            for (const f of [4, 6]) {
              const seen = new Set(withTool.filter((r) => r.flow.kind === k && r.flow.family === f).flatMap((r) => r.outerDscps));
              assert.deepEqual([...seen].sort((a, b) => a - b), DSCPS, `${k}/IPv${f}: outer DSCPs`);
            }
          }
        }),
      );
    }
  }
});

describe('L3 uplink: a TUN device', () => {
  test('outer packets routed into a TUN device carry the inner DSCP', T, () =>
    withLab('tun', async (lab) => {
      const tun = await makeTunUplink(lab);
      try {
        const flows: Flow[] = [];
        let port = 7300;
        for (const family of [4, 6] as const) {
          for (const tclass of TCLASSES) {
            flows.push({ kind: 'udp', family, tclass, dst: family === 4 ? tun.peer4 : tun.peer6, port: port++, count: 1 });
          }
        }
        const pings: Flow[] = [46 << 2, 10 << 2].flatMap((tclass) => [
          { kind: 'icmp' as const, family: 4 as const, tclass, dst: tun.peer4 },
          { kind: 'icmp' as const, family: 6 as const, tclass, dst: tun.peer6 },
        ]);
        const send = async () => {
          // Nobody answers: the pings time out, which is fine, their requests are what counts.
          await Promise.all([sendSockets(tun.ns, flows), ...pings.map((p) => ping(tun.ns, p, 1))]);
        };
        const check = (pkts: TunnelPacket[], withTool: boolean) => {
          const data = pkts.filter((p) => p.inner && (p.inner.proto === 17 || p.inner.proto === 1 || (p.inner.proto === 58 && p.inner.icmpType === 128)));
          assert.ok(data.length >= flows.length + pings.length, `expected ${flows.length + pings.length} outer packets, read ${data.length}`);
          for (const p of data) {
            const inner = p.inner as NonNullable<TunnelPacket['inner']>;
            assert.equal(p.outer.dscp, withTool ? inner.dscp : 0, `outer DSCP for inner ${inner.dscp} (${withTool ? 'with' : 'without'} the tool)`);
            assert.equal(p.outer.ecn, inner.ecn === 3 ? 2 : inner.ecn, 'outer ECN');
          }
          const dscps = new Set(data.map((p) => (p.inner as { dscp: number }).dscp));
          for (const d of DSCPS) assert.ok(dscps.has(d), `inner DSCP ${d} captured`);
        };

        let n = tun.outer().length;
        await send();
        check(await tun.settle(n, flows.length + pings.length), false);

        const out = await cliOk(tun.ns, [tun.tunnel, tun.tun]);
        assert.match(out, /_l3 on tun0/, 'the TUN uplink gets the l3 program');
        n = tun.outer().length;
        await send();
        check(await tun.settle(n, flows.length + pings.length), true);
      } finally {
        await tun.reader.stop();
      }
    }),
  );
});

describe('namespaces: ip netns exec and nsenter', () => {
  for (const via of ['ip-netns-exec', 'nsenter'] as const) {
    test(`attach, status and unload under ${via === 'nsenter' ? 'nsenter --net=/run/netns/X' : 'ip netns exec'}`, T, () =>
      withLab(via, async (lab) => {
        const pair = makeVxlanPair(lab, 4);
        await cliOk(pair.a.ns, [pair.tunnel, pair.uplink], via);
        const st = JSON.parse(await cliOk(pair.a.ns, ['status', '--json'], via));
        assert.equal(st.loaded, true);
        assert.deepEqual(
          st.interfaces.map((i: { ifname: string; role: string }) => `${i.ifname}:${i.role}`).sort(),
          [`${pair.tunnel}:tunnel`, `${pair.uplink}:uplink`].sort(),
        );
        const flows = flowMatrix(pair, ['icmp', 'udp', 'tcp'], [4, 6], [46 << 2, 10 << 2]);
        expectPreserved(await measure(pair, flows));
        await cliOk(pair.a.ns, [pair.tunnel, pair.uplink, '--unload'], via);
        assert.equal(tcFilters(pair.a.ns, pair.tunnel).length, 0);
        assert.equal(tcFilters(pair.a.ns, pair.uplink).length, 0);
        expectOuterZero(await measure(pair, flows));
        // The other namespace and the host were never touched.
        assert.equal(tcFilters(pair.b.ns, pair.peerIf).length, 0);
      }),
    );
  }
});

describe('tc state', () => {
  test('attaching twice keeps one filter per interface', T, () =>
    withLab('idem', async (lab) => {
      const pair = makeVxlanPair(lab, 4);
      await cliOk(pair.a.ns, [pair.tunnel, pair.uplink]);
      const first = { t: tcFilters(pair.a.ns, pair.tunnel), u: tcFilters(pair.a.ns, pair.uplink) };
      const again = await cliOk(pair.a.ns, [pair.tunnel, pair.uplink]);
      assert.match(again, /already attached/);
      const second = { t: tcFilters(pair.a.ns, pair.tunnel), u: tcFilters(pair.a.ns, pair.uplink) };
      assert.equal(second.t.length, 1, sh('tc', ['-n', pair.a.ns, 'filter', 'show', 'dev', pair.tunnel, 'egress']));
      assert.equal(second.u.length, 1, sh('tc', ['-n', pair.a.ns, 'filter', 'show', 'dev', pair.uplink, 'egress']));
      assert.deepEqual(second, first, 'the second attach changed nothing');
      expectPreserved(await measure(pair, flowMatrix(pair, ['udp'], [4, 6], [34 << 2])));
    }),
  );

  test('unload removes only our filters: another filter and the clsact qdisc stay', T, () =>
    withLab('unload', async (lab) => {
      const pair = makeVxlanPair(lab, 4);
      await cliOk(pair.a.ns, [pair.tunnel, pair.uplink]);
      const kind = addForeignFilter(pair.a.ns, pair.uplink);
      assert.equal(tcFilters(pair.a.ns, pair.uplink).length, 2);
      // Ours still works next to the other filter.
      expectPreserved(await measure(pair, flowMatrix(pair, ['udp'], [4], [46 << 2])));

      await cliOk(pair.a.ns, [pair.tunnel, pair.uplink, '--unload']);
      const left = tcFilters(pair.a.ns, pair.uplink);
      assert.equal(left.length, 1, 'exactly the foreign filter is left');
      assert.equal(left[0].kind, kind);
      assert.equal(left[0].pref, 100);
      assert.ok(tcQdiscs(pair.a.ns, pair.uplink).includes('clsact'), 'clsact stays while another filter uses it');
      assert.equal(tcFilters(pair.a.ns, pair.tunnel).length, 0);
      // Traffic still flows, unmarked.
      expectOuterZero(await measure(pair, flowMatrix(pair, ['icmp', 'udp'], [4], [46 << 2])));
    }),
  );
});

describe('command line errors and output', () => {
  test('unknown interface: exit 1, one line on stderr', T, () =>
    withLab('badif', async (lab) => {
      const pair = makeVxlanPair(lab, 4);
      const r = await cli(pair.a.ns, ['nosuch0', pair.uplink]);
      assert.equal(r.code, 1);
      assert.equal(r.stdout, '');
      const lines = r.stderr.trimEnd().split('\n');
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0], /nosuch0/);
      assert.equal(tcFilters(pair.a.ns, pair.uplink).length, 0, 'nothing attached on failure');
    }),
  );

  test('no options: exit 2 (usage)', T, async () => {
    const r = await cli(undefined, []);
    assert.equal(r.code, 2);
    assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
  });

  test('status --json: an object with an interfaces array of {ifname, role}', T, () =>
    withLab('status', async (lab) => {
      const pair = makeVxlanPair(lab, 6);
      const empty = JSON.parse(await cliOk(pair.a.ns, ['status', '--json']));
      assert.equal(typeof empty, 'object');
      assert.ok(Array.isArray(empty.interfaces));
      assert.equal(empty.interfaces.length, 0);
      await cliOk(pair.a.ns, [pair.tunnel, pair.uplink]);
      const st = JSON.parse(await cliOk(pair.a.ns, ['status', '--json']));
      assert.ok(st && typeof st === 'object' && !Array.isArray(st));
      assert.ok(Array.isArray(st.interfaces));
      assert.equal(st.interfaces.length, 2);
      for (const i of st.interfaces) {
        assert.equal(typeof i.ifname, 'string');
        assert.ok(['tunnel', 'uplink'].includes(i.role), `role ${i.role}`);
      }
      const byName = Object.fromEntries(st.interfaces.map((i: { ifname: string; role: string }) => [i.ifname, i.role]));
      assert.deepEqual(byName, { [pair.tunnel]: 'tunnel', [pair.uplink]: 'uplink' });
    }),
  );
});
