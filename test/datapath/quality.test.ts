/**
 * Hash carrier quality, measured on the real programs:
 *   - spread of the encoded skb->hash over 10,000 flows (top 10 bits, which
 *     fq_codel/XPS/skb_tx_hash read, and low 10 bits, which modulo-based
 *     schedulers and RPS read), as chi-square over 1,024 buckets;
 *   - false-pass rate of the check field for random 32-bit hashes (~2^-14);
 *   - a map-carrier key never passes the hash-carrier check.
 * Figures are printed for quoting.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { KEY, inner, outer, PORT, PORTS } from './common.js';
import { Harness, IFINDEX_LO, prng, TC_ACT_UNSPEC } from './harness.js';
import * as P from './packets.js';

let h: Harness;
before(() => {
  h = new Harness();
  h.setConfig({ key: KEY, ports: PORTS });
});
after(() => h?.close());

/** 95% band of chi-square with 1023 degrees of freedom (Wilson-Hilferty). */
const CHI2_LO = 936.7;
const CHI2_HI = 1113.1;
const FLOWS = 10_000;

function chiSquare(values: number[], bucket: (v: number) => number): number {
  const counts = new Array(1024).fill(0);
  for (const v of values) counts[bucket(v)]++;
  const e = values.length / 1024;
  return counts.reduce((s, c) => s + ((c - e) * (c - e)) / e, 0);
}

/** Encoded hashes of FLOWS distinct inner 5-tuples (hash from scratch: bpf_get_hash_recalc). */
/**
 * Encoded hashes of FLOWS flows. The flows' own hashes come from a seeded
 * generator (the kernel's flow hash is seeded randomly at boot, which would
 * make a 95% band fail one boot in twenty); the encoding is what is tested.
 */
function encodedHashes(dscpOf: (i: number) => number, v: 4 | 6 = 4): number[] {
  const out: number[] = [];
  const seen = new Set<number>();
  const rnd = prng(0xf10e5);
  for (let i = 0; i < FLOWS; i++) {
    const src = v === 4 ? P.ipv4Addr(`10.${(i >> 8) & 255}.${i & 255}.${1 + (i % 200)}`) : undefined;
    const f = P.l2Frame(inner(v, { ds: dscpOf(i) << 2, src, sport: 1024 + ((i * 7919) % 60000), dport: 443 + (i % 7) }));
    const r = h.run('h_thash_l2', f, { hash: rnd() || 1 });
    assert.equal(r.retval, TC_ACT_UNSPEC);
    out.push(r.hash);
    seen.add(r.hash);
  }
  return out;
}

const top10 = (x: number) => x >>> 22;
const low10 = (x: number) => x & 0x3ff;

describe('hash carrier quality', () => {
  const results: Record<string, { top: number; low: number; distinct: number }> = {};
  const cases: [string, (i: number) => number][] = [
    ['DSCP 0 for every flow', () => 0],
    ['EF for every flow', () => 46],
    ['DSCP uniform over 0-63', (i) => (i * 37) % 64],
  ];
  before(() => {
    for (const [name, dscpOf] of cases) {
      const hs = encodedHashes(dscpOf);
      results[name] = { top: chiSquare(hs, top10), low: chiSquare(hs, low10), distinct: new Set(hs).size };
      console.log(
        `chi-square (1023 df, 95% band ${CHI2_LO}-${CHI2_HI}), ${FLOWS} flows, ${name}: ` +
          `top 10 bits ${results[name].top.toFixed(1)}, low 10 bits ${results[name].low.toFixed(1)}, distinct hashes ${results[name].distinct}`,
      );
    }
  });

  for (const [name] of cases) {
    test(`top 10 bits spread evenly: ${name}`, () => {
      const x = results[name].top;
      assert.ok(x > CHI2_LO && x < CHI2_HI, `chi-square ${x.toFixed(1)}`);
    });
    test(`low 10 bits spread evenly: ${name}`, () => {
      const x = results[name].low;
      assert.ok(x > CHI2_LO && x < CHI2_HI, `chi-square ${x.toFixed(1)}`);
    });
  }

  test('false-pass rate of the check for 100,000 random 32-bit hashes is near 2^-14', () => {
    const N = 100_000;
    const rnd = prng(0x5eed);
    const f = P.l2Frame(outer(4, { ds: 0x01, sport: PORT.HASH_WG, dport: 51820 }));
    const c0 = h.counters(IFINDEX_LO);
    for (let i = 0; i < N; i++) h.run('h_up_l2', f, { hash: rnd() || 1 });
    const d = h.delta(IFINDEX_LO, c0);
    const passed = d.rewritten ?? 0;
    assert.equal(d.packets, N);
    assert.equal(passed + (d.checkFailed ?? 0), N);
    const rate = passed / N;
    console.log(`false-pass rate: ${passed}/${N} = ${rate.toExponential(2)} (2^-14 = ${(2 ** -14).toExponential(2)}, expected ${(N / 16384).toFixed(1)} passes)`);
    assert.ok(rate < 4 * 2 ** -14, `false-pass rate ${rate}`);
  });

  test('a map-carrier key never passes the hash-carrier check (port flagged MAP and HASH: DSCP from the map)', () => {
    h.clearFlows();
    const N = 40_000;
    const rnd = prng(0xabc);
    const both = P.l2Frame(outer(6, { ds: 0x02, sport: PORT.BOTH_WG, dport: 1 }));
    const hashOnly = P.l2Frame(outer(6, { ds: 0x02, sport: PORT.HASH_WG, dport: 1 }));
    let flipped = 0;
    for (let i = 0; i < N; i++) {
      const dscp = 1 + (i % 63);
      const f = P.l2Frame(inner(4, { ds: dscp << 2, sport: 1 + (i % 65000) }));
      // preset flow hashes: N different map keys without dissecting N packets' worth of distinct tuples
      const key = h.run('h_tmap_l2', f, { hash: rnd() || 1 }).hash;
      assert.deepEqual(h.flow(key), { dscp, checked: 1 });
      const r = h.run('h_up_l2', both, { hash: key });
      if (P.dsByte(r.data, both.ipOff) !== ((dscp << 2) | 2)) assert.fail(`flow ${i}: key 0x${key.toString(16)} decoded as a hash-carrier mark (DS 0x${P.dsByte(r.data, both.ipOff).toString(16)}, map ${dscp})`);
      const c0 = h.counters(IFINDEX_LO);
      h.run('h_up_l2', hashOnly, { hash: key });
      assert.deepEqual(h.delta(IFINDEX_LO, c0), { packets: 1, checkFailed: 1 }, `flow ${i}: key passes the check`);
      // key ^ 1 passing means the tunnel side flipped a passing key (or a 2^-14 chance)
      const c1 = h.counters(IFINDEX_LO);
      h.run('h_up_l2', hashOnly, { hash: (key ^ 1) >>> 0 });
      if (h.delta(IFINDEX_LO, c1).rewritten) flipped++;
      h.flows.delete(Buffer.from([key & 255, (key >>> 8) & 255, (key >>> 16) & 255, key >>> 24]));
    }
    console.log(`map keys: ${N} flows, none passed the hash-carrier check; ${flipped} keys had been made to fail it (key^1 passes; ~${((2 * N) / 16384).toFixed(1)} expected incl. chance)`);
    assert.ok(flipped > 0, 'the flip path was exercised');
  });
});
