/**
 * Per-packet marks on real WireGuard: one UDP 5-tuple whose traffic class
 * cycles EF/AF41/CS1/0 on every packet, 3,000 packets, on wg0 (hash carrier)
 * and at the same time on wg1 (map carrier). WireGuard's encryption workers
 * queue packets between the two hooks; the hash carrier travels with each
 * packet, the map carrier keeps one mark per flow. Outer data packets (A's
 * veth0, by source port) are paired with the inner packets received on B's
 * wg0/wg1 by order.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { guardNamespaces, withLab } from '../../e2e/lib/lab.js';
import { sendUdp } from '../../e2e/lib/star.js';
import { innerPackets, pairByOrder, startAll, wgData, wgPackets } from '../lib/capture.js';
import { disposeWg, makeWg, UPLINK, warm, type WgTopo } from '../lib/wg.js';
import { AF41, CS1, EF, pd, vmOnly } from '../lib/tool.js';

vmOnly();
guardNamespaces();

const COUNT = 3000;
const CYCLE = [EF << 2, AF41 << 2, CS1 << 2, 0];

test('per-packet marks: one 5-tuple cycling EF/AF41/CS1/0, hash carrier exact, map carrier reported', async () => {
  await withLab('wg per packet', async (lab) => {
    let topo: WgTopo | undefined;
    try {
      topo = await makeWg(lab, 2, 4);
      const { a, b } = topo;
      await pd(a, ['--carrier', 'hash', 'wg0', UPLINK]);
      await pd(a, ['--carrier', 'map', 'wg1', UPLINK]);
      await warm(topo);
      const [outerCap, in0, in1] = await startAll([
        [a, UPLINK, 'udp', 'out'],
        [b, 'wg0', 'udp and dst port 9400', 'in'],
        [b, 'wg1', 'udp and dst port 9400', 'in'],
      ]);
      const tp = topo;
      await Promise.all([0, 1].map((i) => sendUdp(a, [{ family: 4, dst: tp.t(i).b4, dport: 9400, sport: 9401, tclasses: CYCLE, count: COUNT }])));
      const [o, i0, i1] = await Promise.all([outerCap.stop(800), in0.stop(800), in1.stop(800)]);
      const outer = wgPackets(o);
      const results = [i0, i1].map((inPcap, i) => {
        const inner = innerPackets(inPcap);
        const r = pairByOrder(wgData(outer, tp.t(i).portA), inner);
        // The sender writes the sequence number first in each datagram: the
        // inner packets show whether any was lost or reordered.
        const seqs = inner.map((p) => p.udp?.readUInt32BE(0) ?? -1);
        const inOrder = seqs.every((s, k) => k === 0 || s > seqs[k - 1]);
        const wrong = r.pairs.filter((p) => p.outer.ip.dscp !== p.inner.ip.dscp).length;
        const innerWrongTos = inner.filter((p, k) => p.ip.tclass !== CYCLE[seqs[k] % CYCLE.length]).length;
        return { ...r, wrong, inOrder, innerWrongTos, lost: COUNT - inner.length };
      });
      const [hash, map] = results;
      console.log(
        `per-packet marks (${COUNT} packets each, EF/AF41/CS1/0): hash carrier ${hash.wrong} wrong of ${hash.pairs.length} ` +
          `(outer ${hash.outerCount}, inner ${hash.innerCount}, misaligned ${hash.misaligned}); ` +
          `map carrier ${map.wrong} wrong of ${map.pairs.length} (outer ${map.outerCount}, inner ${map.innerCount}, misaligned ${map.misaligned})`,
      );
      for (const [name, r] of [
        ['hash', hash],
        ['map', map],
      ] as const) {
        assert.equal(r.outerCount, r.innerCount, `${name}: outer and inner counts differ, pairing by order is impossible`);
        assert.equal(r.misaligned, 0, `${name}: misaligned pairs`);
        assert.ok(r.inOrder, `${name}: inner packets out of order`);
        assert.equal(r.innerWrongTos, 0, `${name}: inner packets with another TOS than sent`);
        assert.ok(r.innerCount >= COUNT * 0.95, `${name}: ${r.innerCount} of ${COUNT} packets arrived`);
      }
      assert.equal(hash.wrong, 0, 'hash carrier: every outer packet carries its own inner DSCP');
    } finally {
      disposeWg(topo);
    }
  });
});
