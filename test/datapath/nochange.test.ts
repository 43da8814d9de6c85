/**
 * Packets the datapath must pass unchanged (TC_ACT_UNSPEC, not a byte
 * different), with the counter that says why.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { CFG_UNCHECKED_MAP, type Counters } from '../../src/layout.js';
import { assertRewritten, assertUnchanged, encodedHash, inner, KEY, outer, PORT, PORTS } from './common.js';
import { Harness, IFINDEX_LO, prng, TC_ACT_UNSPEC, tunnelProg, uplinkProg } from './harness.js';
import * as P from './packets.js';

let h: Harness;
before(() => {
  // pdscp_up_l2/l3 themselves: skb->hash is 0 in a test run.
  h = new Harness(['pdscp_up_l2', 'pdscp_up_l3']);
  h.setConfig({ key: KEY, ports: PORTS });
});
after(() => h?.close());

const MAP_HASH = 0x600dcafe;

/** Runs the uplink wrapper and asserts no change and the counter delta. */
function upUnchanged(f: P.Frame, hash: number, want: Partial<Counters>, what: string): void {
  const c0 = h.counters(IFINDEX_LO);
  const r = h.runOrRefused(uplinkProg(f.l3), f, { hash });
  if (r === 'refused') {
    // the kernel's test run needs a complete IP header after byte 14 (L3 frames under 34/54 bytes)
    assert.ok(f.l3 && f.data.length < 54, `${what}: test run refused the frame`);
    return;
  }
  assertUnchanged(f, r, what);
  assert.deepEqual(h.delta(IFINDEX_LO, c0), { packets: 1, ...want }, `${what}: counters`);
}

function withConfig(flags: number, fn: () => void): void {
  h.setConfig({ key: KEY, ports: PORTS, flags });
  try {
    fn();
  } finally {
    h.setConfig({ key: KEY, ports: PORTS });
  }
}

describe('no change, pass', () => {
  test('non-IP (ARP), L2 and L3, uplink and tunnel side', () => {
    h.clearFlows();
    h.setFlow(MAP_HASH, 46, 0);
    // L3: an ARP payload whose bytes 12-13 are the ARP EtherType (skb->protocol).
    const arp3 = Buffer.alloc(28, 0x11);
    arp3.writeUInt16BE(P.ETH_P_ARP, 12);
    const frames = [
      P.l2Frame(P.arpRequest(), [], P.ETH_P_ARP),
      P.l2Frame(P.arpRequest(), [{ tpid: P.ETH_P_8021Q, vid: 5 }], P.ETH_P_ARP),
      P.l3Frame(arp3, P.ETH_P_ARP),
      // skb->protocol and the IP version disagree
      P.l3Frame(P.ipv6({ src: P.ipv6Addr('2001:db8:800::1'), payload: P.udp(PORT.MAP_WG, 1, P.wgData()) }), P.ETH_P_IP),
      P.l3Frame(P.ipv4({ src: P.ipv4Addr('134.221.0.1'), payload: P.udp(PORT.MAP_WG, 1, P.wgData()) }), P.ETH_P_IPV6),
      P.l2Frame(P.ipv4({ payload: P.udp(PORT.MAP_WG, 1, P.wgData()) }), [], P.ETH_P_IPV6),
    ];
    withConfig(CFG_UNCHECKED_MAP, () => {
      for (const [i, f] of frames.entries()) {
        upUnchanged(f, MAP_HASH, { notIp: 1 }, `uplink non-IP #${i}`);
        for (const carrier of ['map', 'hash'] as const) {
          const c0 = h.counters(IFINDEX_LO);
          const r = h.run(tunnelProg(carrier, f.l3), f, { hash: 0x4242 });
          assertUnchanged(f, r, `tunnel ${carrier} non-IP #${i}`);
          assert.equal(r.hash, 0x4242, 'flow hash untouched');
          assert.deepEqual(h.delta(IFINDEX_LO, c0), { packets: 1, notIp: 1 });
        }
      }
    });
    assert.equal(h.flows.count(), 1);
  });

  test('truncated packets at every length shorter than the needed headers', () => {
    h.clearFlows();
    h.setFlow(MAP_HASH, 46, 0);
    let tested = 0;
    let refused = 0;
    for (const v of [4, 6] as const)
      for (const fr of P.FRAMINGS)
        for (const wg of [true, false]) {
          const ip = outer(v, { ds: 0, sport: wg ? PORT.MAP_WG : 1000, dport: wg ? 1 : PORT.MAP_DST, payload: wg ? P.wgData() : Buffer.alloc(0) });
          const full = P.frame(fr, ip);
          // Uplink needs IP + UDP (+ 4 bytes of WireGuard message type on a WireGuard port).
          const need = full.ipOff + (v === 4 ? 20 : 40) + 8 + (wg ? 4 : 0);
          const ok = h.runOrRefused(uplinkProg(fr.l3), { ...full, data: full.data.subarray(0, need) }, { hash: MAP_HASH });
          if (ok !== 'refused') assertRewritten({ ...full, data: full.data.subarray(0, need) }, ok.data, 46, `IPv${v} ${fr.name} wg=${wg}: complete headers are rewritten`);
          for (let len = 0; len < need; len++) {
            const f: P.Frame = { ...full, data: Buffer.from(full.data.subarray(0, len)) };
            const what = `uplink IPv${v} ${fr.name} wg=${wg} truncated to ${len}/${need}`;
            const c0 = h.counters(IFINDEX_LO);
            const r = h.runOrRefused(uplinkProg(fr.l3), f, { hash: MAP_HASH });
            if (r === 'refused') {
              refused++;
              continue;
            }
            assertUnchanged(f, r, what);
            const d = h.delta(IFINDEX_LO, c0);
            assert.ok(d.notIp === 1 || d.notTunnel === 1, `${what}: counters ${JSON.stringify(d)}`);
            assert.equal(d.rewritten, undefined, what);
            tested++;
          }
          // Tunnel side needs the IP header.
          const inn = P.frame(fr, inner(v, { ds: 46 << 2 }));
          const needIn = inn.ipOff + (v === 4 ? 20 : 40);
          for (let len = 0; len < needIn; len++) {
            const f: P.Frame = { ...inn, data: Buffer.from(inn.data.subarray(0, len)) };
            for (const carrier of ['map', 'hash'] as const) {
              const c0 = h.counters(IFINDEX_LO);
              const r = h.runOrRefused(tunnelProg(carrier, fr.l3), f, { hash: 0x4343 });
              if (r === 'refused') {
                refused++;
                continue;
              }
              assertUnchanged(f, r, `tunnel ${carrier} IPv${v} ${fr.name} truncated to ${len}`);
              assert.equal(r.hash, 0x4343);
              assert.deepEqual(h.delta(IFINDEX_LO, c0), { packets: 1, notIp: 1 });
              tested++;
            }
          }
        }
    assert.equal(h.flows.count(), 1, 'no flow entry from a truncated packet');
    // The kernel refuses test frames under 14 bytes, and untagged frames whose
    // IPv4/IPv6 header (after the first 14 bytes) is incomplete.
    console.log(`truncated: ${tested} frames run, ${refused} refused by BPF_PROG_TEST_RUN itself`);
    assert.ok(tested > 1000);
  });

  test('IPv4 options and IPv6 extension headers on the outer packet: no change', () => {
    h.clearFlows();
    h.setFlow(MAP_HASH, 46, 1);
    const hc = encodedHash(h, 46);
    const cases: [string, Buffer, number][] = [
      ['IPv4 options, map port', outer(4, { ds: 1, sport: PORT.MAP_WG, dport: 1, options: P.IPV4_OPTIONS_RA }), MAP_HASH],
      ['IPv4 options, hash port', outer(4, { ds: 1, sport: PORT.HASH_WG, dport: 1, options: P.IPV4_OPTIONS_RA }), hc],
      ['IPv6 hop-by-hop, map port', outer(6, { ds: 1, sport: PORT.MAP_WG, dport: 1, ext: [{ type: P.IPPROTO_HOPOPTS }] }), MAP_HASH],
      ['IPv6 dstopts, hash port', outer(6, { ds: 1, sport: PORT.HASH_WG, dport: 1, ext: [{ type: P.IPPROTO_DSTOPTS }] }), hc],
      ['IPv6 fragment, map dst port', outer(6, { ds: 1, sport: 1, dport: PORT.MAP_DST, ext: [{ type: P.IPPROTO_FRAGMENT }] }), MAP_HASH],
      ['IPv6 routing, hash dst port', outer(6, { ds: 1, sport: 1, dport: PORT.HASH_DST, ext: [{ type: P.IPPROTO_ROUTING }] }), hc],
    ];
    for (const [what, ip, hash] of cases)
      for (const fr of P.FRAMINGS) {
        upUnchanged(P.frame(fr, ip), hash, { notTunnel: 1 }, `${what} ${fr.name}`);
      }
    // IPv4 options stay untouched even where any map entry would do.
    h.setFlow(MAP_HASH, 46, 0);
    withConfig(CFG_UNCHECKED_MAP, () => {
      for (const fr of P.FRAMINGS)
        upUnchanged(P.frame(fr, outer(4, { ds: 1, sport: PORT.MAP_WG, dport: 1, options: P.IPV4_OPTIONS_RA })), MAP_HASH, { notTunnel: 1 }, `IPv4 options, unchecked ${fr.name}`);
    });
  });

  test('hash 0: no change (wrapper with hash 0 and the real pdscp_up_l2/l3, whose test-run skb has no hash)', () => {
    h.clearFlows();
    h.setFlow(0, 46, 0);
    withConfig(CFG_UNCHECKED_MAP, () => {
      for (const v of [4, 6] as const)
        for (const fr of P.FRAMINGS)
          for (const sport of [PORT.MAP_WG, PORT.HASH_WG, PORT.BOTH_WG, PORT.UNMANAGED]) {
            const f = P.frame(fr, outer(v, { ds: 2, sport, dport: 1 }));
            upUnchanged(f, 0, { hashZero: 1 }, `IPv${v} ${fr.name} port ${sport}`);
            const c0 = h.counters(IFINDEX_LO);
            assertUnchanged(f, h.run(fr.l3 ? 'pdscp_up_l3' : 'pdscp_up_l2', f), 'real uplink program');
            assert.deepEqual(h.delta(IFINDEX_LO, c0), { packets: 1, hashZero: 1 });
          }
    });
  });

  test('unmanaged ports: no change, even with a map entry or a valid hash-carrier hash', () => {
    h.clearFlows();
    h.setFlow(MAP_HASH, 46, 0);
    const hc = encodedHash(h, 46);
    for (const v of [4, 6] as const)
      for (const fr of P.FRAMINGS)
        for (const [sport, dport] of [
          [PORT.UNMANAGED, PORT.UNMANAGED2],
          [PORT.MAP_DST, PORT.UNMANAGED], // a destination-port role does not apply to the source port
          [PORT.UNMANAGED, PORT.MAP_WG], // ... nor a source-port role to the destination port
          [PORT.UNMANAGED, PORT.HASH_WG],
        ])
          for (const hash of [MAP_HASH, hc]) upUnchanged(P.frame(fr, outer(v, { ds: 2, sport, dport })), hash, { notTunnel: 1 }, `IPv${v} ${fr.name} ${sport}->${dport}`);
    // Not UDP at all
    for (const proto of [P.IPPROTO_TCP, P.IPPROTO_ESP])
      upUnchanged(P.l2Frame(outer(4, { ds: 2, sport: PORT.MAP_WG, dport: PORT.MAP_DST, proto })), MAP_HASH, { notTunnel: 1 }, `proto ${proto}`);
  });

  test('WireGuard handshake (type 1), cookie (3), non-data messages on a WireGuard port: no change', () => {
    h.clearFlows();
    h.setFlow(MAP_HASH, 46, 1);
    const hc = encodedHash(h, 46);
    const bad = (b0: number, b1 = 0) => {
      const m = P.wgData();
      m[0] = b0;
      m[1] = b1;
      return m;
    };
    const payloads: [string, Buffer][] = [
      ['handshake initiation', P.wgHandshakeInit()],
      ['handshake response (2)', bad(2)],
      ['cookie reply (3)', bad(3)],
      ['type 4 with a reserved byte set', bad(4, 1)],
      ['3-byte payload', Buffer.from([4, 0, 0])],
      ['empty payload', Buffer.alloc(0)],
    ];
    for (const v of [4, 6] as const)
      for (const fr of P.FRAMINGS)
        for (const [what, payload] of payloads) {
          upUnchanged(P.frame(fr, outer(v, { ds: 2, sport: PORT.MAP_WG, dport: 1, payload })), MAP_HASH, { notTunnel: 1 }, `map ${what} IPv${v} ${fr.name}`);
          upUnchanged(P.frame(fr, outer(v, { ds: 2, sport: PORT.HASH_WG, dport: 1, payload })), hc, { notTunnel: 1 }, `hash ${what} IPv${v} ${fr.name}`);
        }
  });

  test('hash-carrier check failure: flipped check/DSCP bits of valid hashes and random hashes', () => {
    h.clearFlows();
    let flips = 0;
    for (let dscp = 0; dscp < 64; dscp += 3) {
      const hc = encodedHash(h, dscp, 500 + dscp);
      for (const fr of [P.FRAMINGS[0], P.FRAMINGS[5]]) {
        const f = P.frame(fr, outer(4, { ds: (63 - dscp) << 2, sport: PORT.HASH_WG, dport: 1 }));
        assertRewritten(f, h.run(uplinkProg(fr.l3), f, { hash: hc }).data, dscp, 'valid hash');
        // bits 0-13: check field, 14-19: DSCP field; changing only those can never pass
        for (let bit = 0; bit < 20; bit++) {
          upUnchanged(f, (hc ^ (1 << bit)) >>> 0, { checkFailed: 1 }, `dscp ${dscp} bit ${bit} flipped`);
          flips++;
        }
      }
    }
    const rnd = prng(99);
    const c0 = h.counters(IFINDEX_LO);
    let passed = 0;
    const f = P.l2Frame(outer(6, { ds: 0x03, sport: PORT.HASH_WG, dport: 1 }));
    for (let i = 0; i < 2000; i++) {
      const r = h.run('h_up_l2', f, { hash: rnd() || 1 });
      assert.equal(r.retval, TC_ACT_UNSPEC);
      if (!r.data.equals(f.data)) passed++;
    }
    const d = h.delta(IFINDEX_LO, c0);
    assert.equal(d.packets, 2000);
    assert.equal((d.checkFailed ?? 0) + (d.rewritten ?? 0), 2000);
    assert.ok((d.rewritten ?? 0) <= 2, `${d.rewritten} of 2000 random hashes passed the check`);
    console.log(`check failure: ${flips} flipped hashes rejected; random: ${d.rewritten ?? 0}/2000 passed (${passed} changed the packet)`);
  });

  test('map entry with checked=1 but the port not managed (PDSCP_CFG_UNCHECKED_MAP): no change', () => {
    h.clearFlows();
    h.setFlow(MAP_HASH, 46, 1);
    withConfig(CFG_UNCHECKED_MAP, () => {
      for (const v of [4, 6] as const)
        for (const fr of P.FRAMINGS) upUnchanged(P.frame(fr, outer(v, { ds: 2, sport: PORT.UNMANAGED, dport: PORT.UNMANAGED2 })), MAP_HASH, { miss: 1 }, `IPv${v} ${fr.name}`);
    });
    // The same entry on a managed port is used.
    const f = P.l2Frame(outer(4, { ds: 2, sport: PORT.MAP_WG, dport: 1 }));
    assertRewritten(f, h.run('h_up_l2', f, { hash: MAP_HASH }).data, 46, 'managed port');
  });

  test('checked=0 entry without PDSCP_CFG_UNCHECKED_MAP, or no entry at all: no change', () => {
    h.clearFlows();
    h.setFlow(MAP_HASH, 46, 0);
    for (const fr of P.FRAMINGS) {
      upUnchanged(P.frame(fr, outer(4, { ds: 2, sport: PORT.UNMANAGED, dport: 1 })), MAP_HASH, { notTunnel: 1 }, `unchecked entry, no flag ${fr.name}`);
      upUnchanged(P.frame(fr, outer(6, { ds: 2, sport: PORT.MAP_WG, dport: 1 })), MAP_HASH + 1, { miss: 1 }, `no entry ${fr.name}`);
      // A map entry does not help on a hash-carrier-only port.
      upUnchanged(P.frame(fr, outer(6, { ds: 2, sport: PORT.HASH_WG, dport: 1 })), MAP_HASH, { checkFailed: 1 }, `map entry on hash port ${fr.name}`);
    }
  });
});
