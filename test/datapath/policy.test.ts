/**
 * The policy table of pdscp_config (inner DSCP -> carried DSCP) changes what
 * the tunnel side carries, at once, without reloading the programs.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { IDENTITY_POLICY } from '../../src/layout.js';
import { parsePolicy } from '../../src/policy.js';
import { inner, KEY, outer, PORT, PORTS } from './common.js';
import { Harness, IFINDEX_LO } from './harness.js';
import * as P from './packets.js';

let h: Harness;
before(() => {
  h = new Harness();
});
after(() => h?.close());

const CLASSES = { ef: 46, af41: 34, cs5: 40, af11: 10, cs1: 8, le: 1, df: 0, cs7: 56 };

/** What reaches the outer header for an inner packet with this DSCP, per carrier (null: nothing carried). */
function carried(dscp: number, flow: number): { map: number | null; hash: number } {
  const f = P.l2Frame(inner(6, { ds: (dscp << 2) | 2, sport: 3000 + flow }));
  const key = h.run('h_tmap_l2', f).hash;
  const entry = h.flow(key);
  const up = (hash: number, sport: number) => {
    const of = P.l2Frame(outer(4, { ds: (63 << 2) | 1, sport, dport: 1 }));
    const c0 = h.counters(IFINDEX_LO);
    const r = h.run('h_up_l2', of, { hash });
    if (!h.delta(IFINDEX_LO, c0).rewritten) {
      assert.ok(r.data.equals(of.data));
      return null;
    }
    return P.dsByte(r.data, of.ipOff) >> 2;
  };
  const viaMap = up(key, PORT.MAP_WG);
  assert.equal(viaMap, entry ? entry.dscp : null, 'uplink uses the map entry');
  const hashKey = h.run('h_thash_l2', f).hash;
  const viaHash = up(hashKey, PORT.HASH_WG);
  assert.notEqual(viaHash, null, 'hash carrier always decodes');
  return { map: viaMap, hash: viaHash! };
}

test('policy identity vs "ef,af41": the carried DSCP changes without reloading', () => {
  h.clearFlows();
  h.setConfig({ key: KEY, ports: PORTS, policy: [...IDENTITY_POLICY] });
  for (const [name, d] of Object.entries(CLASSES)) {
    const c = carried(d, d);
    assert.deepEqual(c, { map: d === 0 ? null : d, hash: d }, `identity ${name}`);
  }
  const restricted = parsePolicy('ef,af41');
  h.setConfig({ key: KEY, ports: PORTS, policy: restricted });
  for (const [name, d] of Object.entries(CLASSES)) {
    const want = name === 'ef' || name === 'af41' ? d : 0;
    // Same flows as before: entries of classes now carried as 0 are deleted.
    const c = carried(d, d);
    assert.deepEqual(c, { map: want === 0 ? null : want, hash: want }, `ef,af41: ${name}`);
  }
  assert.equal(h.flows.count(), 2, 'only the EF and AF41 flows keep entries');
  // Remapping and *=keep
  h.setConfig({ key: KEY, ports: PORTS, policy: parsePolicy('cs5=ef,le=df,*=keep') });
  assert.deepEqual(carried(40, 100), { map: 46, hash: 46 });
  assert.deepEqual(carried(1, 101), { map: null, hash: 0 });
  assert.deepEqual(carried(10, 102), { map: 10, hash: 10 });
  // Back to identity: the same flow carries its own DSCP again.
  h.setConfig({ key: KEY, ports: PORTS, policy: [...IDENTITY_POLICY] });
  assert.deepEqual(carried(40, 100), { map: 40, hash: 40 });
});

test('every policy entry is applied: table DSCP -> 63 - DSCP, all 64 inner DSCPs', () => {
  h.clearFlows();
  h.setConfig({ key: KEY, ports: PORTS, policy: IDENTITY_POLICY.map((d) => 63 - d) });
  for (let d = 0; d < 64; d++) {
    const want = 63 - d;
    const c = carried(d, 200 + d);
    assert.deepEqual(c, { map: want === 0 ? null : want, hash: want }, `inner ${d}`);
  }
  h.setConfig({ key: KEY, ports: PORTS });
});
