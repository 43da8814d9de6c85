/**
 * The outer check on real WireGuard: the tool reads wg0's listen port
 * (`wg show wg0 listen-port`) and rewrites only data messages from it.
 * - status --json shows the listen port as the tunnel's outer source port;
 * - handshake initiation and response leaving A keep WireGuard's TOS 0x88;
 * - unrelated UDP on the uplink (thousands of connected sockets to B's
 *   underlay address, also to B's WireGuard port, DSCP 0) is never remarked,
 *   with either carrier.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { guardNamespaces, withLab } from '../../e2e/lib/lab.js';
import { sendUdp } from '../../e2e/lib/star.js';
import { startAll, WG_DATA, WG_INIT, WG_RESPONSE, wgData, wgPackets } from '../lib/capture.js';
import { bash, disposeWg, makeWg, resetPeers, UNDER, UPLINK, warm, type WgTopo } from '../lib/wg.js';
import { EF, pd, status, vmOnly } from '../lib/tool.js';

vmOnly();
guardNamespaces();

test('outer check: listen port in status, handshakes keep 0x88, unrelated UDP never remarked', async (tt) => {
  await withLab('wg outer', async (lab) => {
    let topo: WgTopo | undefined;
    try {
      topo = await makeWg(lab, 1, 4);
      const tp = topo;
      const { a, b } = tp;
      const t = tp.t(0);
      await pd(a, ['wg0', UPLINK]);

      await tt.test('status --json shows the WireGuard listen port', async () => {
        const st = await status(a);
        const wg0 = st.interfaces.find((x) => x.ifname === 'wg0');
        console.log(`outer: status wg0: carrier ${wg0?.carrier}, wireguard ${wg0?.wireguard}, outerSport ${wg0?.outerSport} (listen port ${t.portA})`);
        assert.equal(wg0?.outerSport, t.portA);
        assert.equal(wg0?.wireguard, true);
        assert.equal(wg0?.carrier, 'hash');
      });

      await tt.test('handshake packets keep TOS 0x88', async () => {
        const [cap] = await startAll([[a, UPLINK, 'udp', 'inout']]);
        // A initiates (its initiation leaves through veth0) ...
        await resetPeers(tp, 0);
        await bash(`nsenter --net=/run/netns/${a} ping -n -q -c 3 -i 0.1 -W 5 -Q 0xb8 ${t.b4} >/dev/null`);
        // ... then B initiates (A's response leaves through veth0).
        await resetPeers(tp, 0);
        await bash(`nsenter --net=/run/netns/${b} ping -n -q -c 3 -i 0.1 -W 5 -Q 0xb8 ${t.a4} >/dev/null`);
        const pkts = wgPackets(await cap.stop());
        const fromA = pkts.filter((p) => p.sport === t.portA);
        const hs = fromA.filter((p) => p.type === WG_INIT || p.type === WG_RESPONSE);
        const inits = hs.filter((p) => p.type === WG_INIT).length;
        const responses = hs.filter((p) => p.type === WG_RESPONSE).length;
        const bad = hs.filter((p) => p.ip.tclass !== 0x88);
        const data = wgData(pkts, t.portA);
        const dataEf = data.filter((p) => p.ip.dscp === EF).length;
        const fromB = pkts.filter((p) => p.sport === t.portB && p.type !== WG_DATA);
        console.log(
          `outer: handshakes from A: ${inits} initiation(s), ${responses} response(s), TOS ${[...new Set(hs.map((p) => `0x${p.ip.tclass.toString(16)}`))].join('/')}, ${bad.length} changed; ` +
            `from B: ${fromB.length} handshake packet(s) TOS ${[...new Set(fromB.map((p) => `0x${p.ip.tclass.toString(16)}`))].join('/')}; A's data packets: ${dataEf} of ${data.length} with EF`,
        );
        assert.ok(inits >= 1, 'A sent a handshake initiation');
        assert.ok(responses >= 1, 'A sent a handshake response');
        assert.equal(bad.length, 0, 'handshake packets keep 0x88');
        assert.ok(data.length >= 6 && dataEf === data.length, `A's data packets carry EF: ${dataEf} of ${data.length}`);
      });

      await warm(tp);
      for (const carrier of ['hash', 'map'] as const) {
        await tt.test(`unrelated UDP is never remarked (carrier ${carrier})`, async () => {
          if (carrier === 'map') {
            await pd(a, ['wg0', UPLINK, '--unload']);
            await pd(a, ['--carrier', 'map', 'wg0', UPLINK]);
          }
          const [cap] = await startAll([[a, UPLINK, `udp and (dst port 7777 or dst port ${t.portB}) and not src port ${t.portA}`, 'out']]);
          await sendUdp(a, [
            { family: 4, dst: UNDER[4].b, dport: 7777, tclasses: [0], newSocketPerPacket: true, count: 2000 },
            { family: 6, dst: UNDER[6].b, dport: 7777, tclasses: [0], newSocketPerPacket: true, count: 1000 },
            // to the peer's WireGuard port, from other ports
            { family: 4, dst: UNDER[4].b, dport: t.portB, tclasses: [0], newSocketPerPacket: true, count: 500 },
          ]);
          const pkts = wgPackets(await cap.stop(500));
          const remarked = pkts.filter((p) => p.ip.tclass !== 0).length;
          const st = await status(a);
          const up = st.interfaces.find((x) => x.ifname === UPLINK);
          console.log(`outer: unrelated UDP (${carrier}): ${pkts.length} packets captured (2000 IPv4 + 1000 IPv6 to port 7777, 500 to the peer's WireGuard port), ${remarked} remarked; uplink counters ${JSON.stringify(up?.counters)}`);
          assert.ok(pkts.length >= 3450, `${pkts.length} captured`);
          assert.equal(remarked, 0);
        });
      }
    } finally {
      disposeWg(topo);
    }
  });
});
