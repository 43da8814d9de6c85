/**
 * Uplink program (outer packets): the DS field gets the carried DSCP, nothing
 * else changes, for IPv4/IPv6 × 64 DSCPs × 4 ECN × every framing, with the
 * DSCP coming from the flow map and from the hash carrier.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { CFG_UNCHECKED_MAP } from '../../src/layout.js';
import { assertRewritten, encodedHash, KEY, outer, PORT, PORTS } from './common.js';
import { Harness, IFINDEX_LO, prng, TC_ACT_UNSPEC, uplinkProg } from './harness.js';
import * as P from './packets.js';

let h: Harness;
before(() => {
  h = new Harness();
  h.setConfig({ key: KEY, ports: PORTS });
});
after(() => h?.close());

const FAMILIES = [4, 6] as const;


describe('uplink packet matrix', () => {
  for (const carrier of ['map', 'hash'] as const) {
    test(`${carrier} carrier: IPv4/IPv6 × 64 DSCP × 4 ECN × ${P.FRAMINGS.map((f) => f.name).join('/')}`, () => {
      h.clearFlows();
      const rnd = prng(carrier === 'map' ? 1 : 2);
      // One flow hash per carried DSCP.
      const hashes: number[] = [];
      for (let dscp = 0; dscp < 64; dscp++) {
        if (carrier === 'hash') hashes.push(encodedHash(h, dscp, dscp));
        else {
          const hash = (rnd() | 1) >>> 0;
          h.setFlow(hash, dscp, 1);
          hashes.push(hash);
        }
      }
      const c0 = h.counters(IFINDEX_LO);
      let runs = 0;
      for (const v of FAMILIES)
        for (const fr of P.FRAMINGS)
          for (let dscp = 0; dscp < 64; dscp++)
            for (let ecn = 0; ecn < 4; ecn++) {
              // Alternate the tunnel's port role: WireGuard source port / destination port.
              const viaDst = (dscp + ecn) % 2 === 1;
              const sport = viaDst ? 33000 + dscp : carrier === 'map' ? PORT.MAP_WG : PORT.HASH_WG;
              const dport = viaDst ? (carrier === 'map' ? PORT.MAP_DST : PORT.HASH_DST) : 51000 + ecn;
              const origDscp = (dscp * 5 + 3 + ecn) % 64;
              const ip = outer(v, {
                ds: (origDscp << 2) | ecn,
                sport,
                dport,
                payload: viaDst ? Buffer.from('not wireguard, any payload') : undefined,
                id: (dscp * 1031 + ecn * 7919 + runs) & 0xffff,
                flowLabel: 0x80000 | (dscp << 8) | ecn,
              });
              const f = P.frame(fr, ip);
              const what = `${carrier} IPv${v} ${fr.name} dscp ${dscp} ecn ${ecn} orig ${origDscp}`;
              const r = h.run(uplinkProg(fr.l3), f, { hash: hashes[dscp] });
              assert.equal(r.retval, TC_ACT_UNSPEC, `${what}: return value`);
              assertRewritten(f, r.data, dscp, what);
              runs++;
            }
      const d = h.delta(IFINDEX_LO, c0);
      assert.deepEqual(d, { packets: runs, rewritten: runs });
      console.log(`uplink ${carrier} matrix: ${runs} packets rewritten and checked`);
    });
  }

  test('a port flagged for both carriers reads the hash carrier first and the map otherwise', () => {
    h.clearFlows();
    for (let dscp = 0; dscp < 64; dscp++) {
      const hashCarried = encodedHash(h, dscp, 1000 + dscp);
      const f = P.l2Frame(outer(4, { ds: 0x03, sport: PORT.BOTH_WG, dport: 51820 }));
      assertRewritten(f, h.run('h_up_l2', f, { hash: hashCarried }).data, dscp, `hash carrier dscp ${dscp} on MAP|HASH port`);
      const mapKey = 0x0bad0000 + dscp;
      h.setFlow(mapKey, 63 - dscp, 1);
      assertRewritten(f, h.run('h_up_l2', f, { hash: mapKey }).data, 63 - dscp, `map entry ${63 - dscp} on MAP|HASH port`);
    }
  });

  for (const l3 of [false, true])
  test(`${l3 ? 'L3' : 'L2'}: IPv4 header checksum stays valid for every starting checksum value (65,536 IDs)`, () => {
    h.clearFlows();
    const hash = 0x13572468;
    h.setFlow(hash, 46, 1);
    const c0 = h.counters(IFINDEX_LO);
    const base = outer(4, { ds: 0x01, sport: PORT.MAP_WG, dport: 51820 });
    const bad: string[] = [];
    {
      for (let id = 0; id < 0x10000; id++) {
        const ip = Buffer.from(base);
        ip.writeUInt16BE(id, 4);
        ip.writeUInt16BE(0, 10);
        ip.writeUInt16BE(P.inetChecksum(ip.subarray(0, 20)), 10);
        const f = l3 ? P.l3Frame(ip) : P.l2Frame(ip);
        const r = h.run(uplinkProg(l3), f, { hash });
        const out = r.data.subarray(f.ipOff);
        if (out[1] !== 0xb9 || !P.ipv4HeaderChecksumValid(out)) {
          if (bad.length < 3) bad.push(`${l3 ? 'L3' : 'L2'} id 0x${id.toString(16)}: tos 0x${out[1].toString(16)} check 0x${out.readUInt16BE(10).toString(16)} (before 0x${ip.readUInt16BE(10).toString(16)})`);
          else bad.push('');
        }
      }
    }
    assert.deepEqual(h.delta(IFINDEX_LO, c0), { packets: 0x10000, rewritten: 0x10000 });
    assert.equal(bad.length, 0, `${bad.length} packets with a wrong DS byte or an invalid checksum, e.g.\n${bad.slice(0, 3).join('\n')}`);
  });

  test('outer DSCP already equal to the carried one: packet byte for byte unchanged, still counted', () => {
    h.clearFlows();
    for (const v of FAMILIES)
      for (const fr of P.FRAMINGS)
        for (const dscp of [0, 10, 46, 63]) {
          const hash = 0x2000 + dscp;
          h.setFlow(hash, dscp, 1);
          const f = P.frame(fr, outer(v, { ds: (dscp << 2) | 2, sport: PORT.MAP_WG, dport: 1 }));
          const c0 = h.counters(IFINDEX_LO);
          const r = h.run(uplinkProg(fr.l3), f, { hash });
          assert.ok(r.data.equals(f.data), `IPv${v} ${fr.name} dscp ${dscp}`);
          assert.deepEqual(h.delta(IFINDEX_LO, c0), { packets: 1, rewritten: 1 });
        }
  });

  test('checked=0 map entry with PDSCP_CFG_UNCHECKED_MAP: rewritten without a managed port', () => {
    h.clearFlows();
    h.setConfig({ key: KEY, ports: PORTS, flags: CFG_UNCHECKED_MAP });
    try {
      const cases: [string, Buffer][] = [
        ['IPv4 UDP unmanaged ports', outer(4, { ds: 0x02, sport: PORT.UNMANAGED, dport: PORT.UNMANAGED2 })],
        ['IPv6 UDP unmanaged ports', outer(6, { ds: 0x02, sport: PORT.UNMANAGED, dport: PORT.UNMANAGED2 })],
        ['IPv4 TCP', outer(4, { ds: 0x02, sport: PORT.MAP_WG, dport: 80, proto: P.IPPROTO_TCP })],
        ['IPv6 ESP', outer(6, { ds: 0x02, sport: 0, dport: 0, proto: P.IPPROTO_ESP, payload: Buffer.alloc(40, 7) })],
        ['IPv4 UDP header cut off', outer(4, { ds: 0x02, sport: 1, dport: 2 }).subarray(0, 24)],
      ];
      for (const [what, ip] of cases)
        for (const fr of P.FRAMINGS) {
          // The kernel's test run refuses an L3 IPv4 frame shorter than 34 bytes.
          if (fr.l3 && ip.length < 34) continue;
          const pkt = Buffer.from(ip);
          const hash = 0x7000 + pkt.length;
          h.setFlow(hash, 34, 0);
          const f = P.frame(fr, pkt);
          const r = h.run(uplinkProg(fr.l3), f, { hash });
          assert.equal(r.retval, TC_ACT_UNSPEC);
          assertRewritten(f, r.data, 34, `${what} ${fr.name}`);
        }
    } finally {
      h.setConfig({ key: KEY, ports: PORTS });
    }
  });
});
