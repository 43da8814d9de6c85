/**
 * Tunnel side (inner packets): the DSCP is read from any IPv4/IPv6 header
 * (options, extension headers, VLAN tags, L2 or L3) and carried: stored in
 * pdscp_flows (map carrier) or encoded into skb->hash (hash carrier, decoded
 * here by the real uplink program). The packet itself is never changed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Carrier, type Counters, u32Key } from '../../src/layout.js';
import { assertRewritten, inner, KEY, outer, PORT, PORTS } from './common.js';
import os from 'node:os';
import { possibleCpus } from '../../src/kernel/bpf.js';
import { Harness, IFINDEX_ETH700, IFINDEX_LO, pinCpu, prng, TC_ACT_UNSPEC, tunnelProg } from './harness.js';
import * as P from './packets.js';

let h: Harness;
before(() => {
  h = new Harness();
  h.setConfig({ key: KEY, ports: PORTS });
});
after(() => h?.close());

interface Variant {
  name: string;
  v: 4 | 6;
  options?: Buffer;
  ext?: P.ExtHeader[];
}
const VARIANTS: Variant[] = [
  { name: 'IPv4', v: 4 },
  { name: 'IPv4+options', v: 4, options: P.IPV4_OPTIONS_RA },
  { name: 'IPv6', v: 6 },
  { name: 'IPv6+hbh+dstopts', v: 6, ext: [{ type: P.IPPROTO_HOPOPTS, body: Buffer.from([0x05, 0x02, 0, 0]) }, { type: P.IPPROTO_DSTOPTS }] },
  { name: 'IPv6+routing+fragment', v: 6, ext: [{ type: P.IPPROTO_ROUTING }, { type: P.IPPROTO_FRAGMENT }] },
];

function delta(before: Counters): Partial<Counters> {
  return h.delta(IFINDEX_LO, before);
}

/** The outer DS byte the uplink gives a hash-carrier packet with this hash (orig DSCP 63, ECN 1). */
function decode(hash: number): number {
  const f = P.l2Frame(outer(4, { ds: (63 << 2) | 1, sport: PORT.HASH_WG, dport: 51820 }));
  const r = h.run('h_up_l2', f, { hash });
  assert.equal(r.retval, TC_ACT_UNSPEC);
  return P.dsByte(r.data, f.ipOff);
}

describe('tunnel side matrix', () => {
  const carriers: { carrier: Carrier; checked: boolean }[] = [
    { carrier: 'map', checked: true },
    { carrier: 'map', checked: false },
    { carrier: 'hash', checked: true },
  ];
  for (const { carrier, checked } of carriers) {
    const label = carrier === 'hash' ? 'hash carrier' : `map carrier (checked=${checked ? 1 : 0})`;
    test(`${label}: ${VARIANTS.map((x) => x.name).join('/')} × 64 DSCP × 4 ECN × every framing`, () => {
      h.clearFlows();
      const rnd = prng(carrier === 'hash' ? 11 : checked ? 12 : 13);
      let n = 0;
      for (const va of VARIANTS)
        for (const fr of P.FRAMINGS)
          for (let dscp = 0; dscp < 64; dscp++)
            for (let ecn = 0; ecn < 4; ecn++) {
              n++;
              const what = `${label} ${va.name} ${fr.name} dscp ${dscp} ecn ${ecn}`;
              const mk = (ds: number) =>
                P.frame(
                  fr,
                  inner(va.v, {
                    ds,
                    sport: 1024 + n,
                    src: fr.l3 ? undefined : va.v === 4 ? P.ipv4Addr(`10.1.${n >> 8}.${n & 255}`) : undefined,
                    options: va.options,
                    ext: va.ext,
                  }),
                );
              const f = mk((dscp << 2) | ecn);
              // L2: hash from scratch (bpf_get_hash_recalc dissects the packet);
              // L3: a preset flow hash (the test run dissects L3 frames from byte 14).
              const hash = fr.l3 ? (rnd() | 0x100) >>> 0 : 0;
              const prog = tunnelProg(carrier, fr.l3, checked);
              const run = () => {
                const r = h.run(prog, f, { hash });
                assert.equal(r.retval, TC_ACT_UNSPEC, `${what}: return value`);
                assert.ok(r.data.equals(f.data), `${what}: packet changed`);
                assert.notEqual(r.hash, 0, `${what}: no flow hash set`);
                return r;
              };
              if (carrier === 'hash') {
                const c0 = h.counters(IFINDEX_LO);
                const r = run();
                assert.deepEqual(delta(c0), { packets: 1, encoded: 1 }, what);
                assert.equal(decode(r.hash), (dscp << 2) | 1, `${what}: uplink decoded 0x${decode(r.hash).toString(16)} from hash 0x${r.hash.toString(16)}`);
                continue;
              }
              if (dscp === 0) {
                // The flow had a DSCP before: DSCP 0 deletes its entry.
                const pre = h.run(prog, mk((46 << 2) | ecn), { hash });
                assert.deepEqual(h.flow(pre.hash), { dscp: 46, checked: checked ? 1 : 0 }, `${what}: entry before`);
                const c0 = h.counters(IFINDEX_LO);
                const r = run();
                assert.equal(r.hash, pre.hash, `${what}: same flow, same key`);
                assert.deepEqual(delta(c0), { packets: 1, removed: 1 }, what);
                assert.equal(h.flow(r.hash), undefined, `${what}: entry not deleted`);
                const c1 = h.counters(IFINDEX_LO);
                run();
                assert.deepEqual(delta(c1), { packets: 1, current: 1 }, `${what}: DSCP 0 without an entry`);
                continue;
              }
              const c0 = h.counters(IFINDEX_LO);
              const r = run();
              assert.deepEqual(delta(c0), { packets: 1, stored: 1 }, what);
              assert.deepEqual(h.flow(r.hash), { dscp, checked: checked ? 1 : 0 }, `${what}: entry`);
              const c1 = h.counters(IFINDEX_LO);
              assert.equal(run().hash, r.hash, `${what}: same flow, same key`);
              assert.deepEqual(delta(c1), { packets: 1, current: 1 }, `${what}: second packet`);
              h.flows.delete(u32Key(r.hash));
            }
      console.log(`tunnel ${label}: ${n} inner packets checked`);
    });
  }

  test('a flow whose DSCP changes gets its entry rewritten; a checked flag change rewrites too', () => {
    h.clearFlows();
    const f = (ds: number) => P.l2Frame(inner(4, { ds, sport: 5555 }));
    const key = h.run('h_tmap_l2', f(10 << 2)).hash;
    assert.deepEqual(h.flow(key), { dscp: 10, checked: 1 });
    let c0 = h.counters(IFINDEX_LO);
    assert.equal(h.run('h_tmap_l2', f(34 << 2)).hash, key);
    assert.deepEqual(delta(c0), { packets: 1, stored: 1 });
    assert.deepEqual(h.flow(key), { dscp: 34, checked: 1 });
    c0 = h.counters(IFINDEX_LO);
    assert.equal(h.run('h_tmapu_l2', f(34 << 2)).hash, key);
    assert.deepEqual(delta(c0), { packets: 1, stored: 1 });
    assert.deepEqual(h.flow(key), { dscp: 34, checked: 0 });
    assert.equal(h.flows.count(), 1);
  });

  test('EF over IPv6 is stored as DSCP 46 and reaches the outer header as 0xb8 (not the traffic-class byte 0xb8 -> 0xe0)', () => {
    h.clearFlows();
    for (const ecn of [0, 1, 2, 3]) {
      const key = h.run('h_tmap_l2', P.l2Frame(inner(6, { ds: 0xb8 | ecn, sport: 7000 + ecn }))).hash;
      assert.deepEqual(h.flow(key), { dscp: 46, checked: 1 });
      for (const v of [4, 6] as const) {
        const of = P.l2Frame(outer(v, { ds: 0, sport: PORT.MAP_WG, dport: 51820 }));
        const r = h.run('h_up_l2', of, { hash: key });
        assert.equal(P.dsByte(r.data, of.ipOff), 0xb8, `IPv6 EF inner, ECN ${ecn}, IPv${v} outer`);
        assertRewritten(of, r.data, 46, `EF IPv${v} outer`);
      }
      const hk = h.run('h_thash_l2', P.l2Frame(inner(6, { ds: 0xb8 | ecn, sport: 7100 + ecn }))).hash;
      assert.equal(decode(hk), 0xb9);
    }
  });

  test('counters go to slot ifindex % 512 (ifindex 700 -> slot 188), per-CPU values summed', () => {
    h.clearFlows();
    assert.equal(IFINDEX_ETH700, 700);
    const lo0 = h.counters(IFINDEX_LO);
    const s0 = h.counters(188);
    const f = (ds: number) => P.l2Frame(inner(4, { ds, sport: 9000 }));
    h.run('h_tmap_l2', f(46 << 2), { ifindex: 700 }); // stored
    h.run('h_tmap_l2', f(46 << 2), { ifindex: 700 }); // current
    h.run('h_tmap_l2', f(0), { ifindex: 700 }); // removed
    h.run('h_thash_l2', f(46 << 2), { ifindex: 700 }); // encoded
    h.run('h_tmap_l2', P.l2Frame(P.arpRequest(), [], P.ETH_P_ARP), { ifindex: 700 }); // not IP
    assert.deepEqual(h.delta(188, s0), { packets: 5, stored: 1, current: 1, removed: 1, encoded: 1, notIp: 1 });
    assert.deepEqual(h.delta(IFINDEX_LO, lo0), {});
    // Run on each CPU in turn: every CPU's value moves, the summed counter has them all.
    const cpus = Math.min(possibleCpus(), os.availableParallelism());
    const p0 = h.perCpu(188, 'encoded');
    const s1 = h.counters(188);
    try {
      for (let cpu = 0; cpu < cpus; cpu++) {
        pinCpu(cpu);
        for (let i = 0; i <= cpu; i++) h.run('h_thash_l2', f(10 << 2), { ifindex: 700 });
      }
    } finally {
      pinCpu(null);
    }
    const p1 = h.perCpu(188, 'encoded');
    for (let cpu = 0; cpu < cpus; cpu++) assert.equal(p1[cpu] - p0[cpu], cpu + 1, `CPU ${cpu}`);
    assert.deepEqual(h.delta(188, s1), { packets: (cpus * (cpus + 1)) / 2, encoded: (cpus * (cpus + 1)) / 2 });
  });

  test('the same inner flow on two tunnels (ifindex 1 and 700) gets different keys', () => {
    h.clearFlows();
    let same = 0;
    for (let i = 0; i < 200; i++) {
      const f = P.l2Frame(inner(6, { ds: 46 << 2, sport: 20000 + i, src: P.ipv6Addr('fe80::1') }));
      const a = h.run('h_tmap_l2', f, { ifindex: IFINDEX_LO }).hash;
      const b = h.run('h_tmap_l2', f, { ifindex: 700 }).hash;
      if (a === b) same++;
      const ha = h.run('h_tmap_l2', f, { ifindex: IFINDEX_LO, hash: 0x1234 + i }).hash;
      const hb = h.run('h_tmap_l2', f, { ifindex: 700, hash: 0x1234 + i }).hash;
      if (ha === hb) same++;
    }
    assert.equal(same, 0);
    h.clearFlows();
  });
});
