/**
 * Datapath fuzzing: random and mutated packets through both programs with
 * BPF_PROG_TEST_RUN. The uplink program may change nothing but the DS field
 * (and the IPv4 checksum, which stays valid, or stays invalid if it came in
 * corrupt); the tunnel side stores only
 * DSCP 1-63, only for IP packets.
 *
 *   PDSCP_FUZZ_N=1000000 PDSCP_FUZZ_SEED=1234 npm run test:datapath
 * The seed is printed so a failure can be replayed.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { inner, KEY, outer, PORT, PORTS } from './common.js';
import { Harness, prng, TC_ACT_UNSPEC, tunnelProg, uplinkProg } from './harness.js';
import * as P from './packets.js';

const N = Number(process.env.PDSCP_FUZZ_N ?? 100_000);
const SEED = Number(process.env.PDSCP_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));

let h: Harness;
before(() => {
  console.log(`fuzz seed ${SEED} (replay: PDSCP_FUZZ_SEED=${SEED} PDSCP_FUZZ_N=${N})`);
  h = new Harness();
  h.setConfig({ key: KEY, ports: PORTS });
});
after(() => h?.close());

const PORTS_TO_TRY = [PORT.MAP_WG, PORT.HASH_WG, PORT.BOTH_WG, PORT.MAP_DST, PORT.HASH_DST, PORT.UNMANAGED, 443, 53];

/** A packet generator: valid headers with random fields, then maybe mutated, truncated, or plain random bytes. */
function generator(seed: number) {
  const rnd = prng(seed);
  const int = (n: number) => rnd() % n;
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
  const bytes = (n: number) => Buffer.from(Array.from({ length: n }, () => int(256)));
  return function next(side: 'uplink' | 'tunnel'): P.Frame {
    const fr = pick(P.FRAMINGS);
    const v = pick([4, 6] as const);
    let ip: Buffer;
    if (side === 'uplink') {
      ip = outer(v, {
        ds: int(256),
        sport: pick(PORTS_TO_TRY),
        dport: pick(PORTS_TO_TRY),
        payload: int(3) === 0 ? bytes(int(64)) : int(2) ? P.wgData(rnd(), BigInt(int(1e6)), 16 + int(64)) : P.wgHandshakeInit(rnd()),
        id: int(65536),
        flowLabel: int(1 << 20),
        options: int(8) === 0 ? P.IPV4_OPTIONS_RA : undefined,
        ext: int(8) === 0 ? [{ type: P.IPPROTO_DSTOPTS }] : undefined,
        proto: int(10) === 0 ? P.IPPROTO_TCP : undefined,
      } as Parameters<typeof outer>[1]);
    } else {
      ip = inner(v, { ds: int(256), sport: 1 + int(65535), dport: 1 + int(65535) });
    }
    let f = P.frame(fr, ip);
    const mode = int(10);
    let data = Buffer.from(f.data);
    if (mode < 4) {
      // flip 1-4 random bytes anywhere (headers included)
      for (let k = 1 + int(4); k > 0; k--) data[int(data.length)] = int(256);
    } else if (mode < 6) {
      data = data.subarray(0, int(data.length + 1));
    } else if (mode === 6) {
      data = bytes(14 + int(120));
      // some random frames should look like IP to the parser
      if (int(2)) data.writeUInt16BE(pick([0x0800, 0x86dd, 0x8100, 0x88a8, 0x0806]), 12);
    }
    f = { ...f, data: Buffer.from(data) };
    return f;
  };
}

/** Where an IP header may start for the programs (L3: 0; L2: after 0-2 VLAN tags). */
const IP_OFFSETS = [0, 14, 18, 22];

/** Checks that before -> after changed at most the DS field (+ a valid IPv4 checksum) of one IP header. */
function assertOnlyDs(before: Buffer, after: Buffer, what: string): boolean {
  assert.equal(after.length, before.length, `${what}: length changed`);
  const diff: number[] = [];
  for (let i = 0; i < before.length; i++) if (before[i] !== after[i]) diff.push(i);
  if (diff.length === 0) return false;
  const ok = IP_OFFSETS.some((o) => {
    if (after.length < o + 20) return false;
    const ver = before[o] >> 4;
    if (ver === 4 && (before[o] & 0x0f) === 5) {
      if (!diff.every((i) => i === o + 1 || i === o + 10 || i === o + 11)) return false;
      // A valid checksum stays valid; a corrupt one stays corrupt (incremental update).
      const wasValid = P.ipv4HeaderChecksumValid(before.subarray(o, o + 20));
      return (after[o + 1] & 3) === (before[o + 1] & 3) && P.ipv4HeaderChecksumValid(after.subarray(o, o + 20)) === wasValid;
    }
    if (ver === 6 && after.length >= o + 40) {
      if (!diff.every((i) => i === o || i === o + 1)) return false;
      return (after[o] & 0xf0) === (before[o] & 0xf0) && (after[o + 1] & 0x0f) === (before[o + 1] & 0x0f) && (((after[o + 1] >> 4) & 3) === ((before[o + 1] >> 4) & 3));
    }
    return false;
  });
  assert.ok(ok, `${what}: bytes ${diff.join(',')} changed beyond the DS field`);
  return true;
}

test(`uplink program: ${N} random and mutated packets change nothing but the DS field`, () => {
  const next = generator(SEED);
  const rnd = prng(SEED ^ 0x55aa);
  let ran = 0;
  let refused = 0;
  let rewritten = 0;
  h.clearFlows();
  // Some map entries for hashes the fuzzer uses, checked and not.
  const hashes = Array.from({ length: 64 }, (_, i) => (rnd() | 1) >>> 0);
  hashes.forEach((x, i) => h.setFlow(x, i, i % 2));
  for (let i = 0; i < N; i++) {
    const f = next('uplink');
    const hash = rnd() % 3 === 0 ? hashes[rnd() % 64] : rnd() % 5 === 0 ? 0 : rnd() >>> 0;
    const r = h.runOrRefused(uplinkProg(f.l3), f, { hash });
    if (r === 'refused') {
      refused++;
      continue;
    }
    ran++;
    assert.equal(r.retval, TC_ACT_UNSPEC);
    if (assertOnlyDs(f.data, r.data, `seed ${SEED} packet ${i}`)) rewritten++;
  }
  console.log(`uplink fuzz: ${ran} packets run (${refused} refused by the kernel's test-run checks), ${rewritten} rewritten, 0 bad`);
  assert.ok(ran > N * 0.8);
});

test(`tunnel side: ${N} random and mutated packets store only DSCP 1-63, only for IP packets`, () => {
  const next = generator(SEED + 1);
  const rnd = prng(SEED ^ 0x1234);
  let ran = 0;
  let stored = 0;
  h.clearFlows();
  for (let i = 0; i < N; i++) {
    const f = next('tunnel');
    const checked = rnd() % 2 === 0;
    const prog = tunnelProg(rnd() % 4 === 0 ? 'hash' : 'map', f.l3, checked);
    const r = h.runOrRefused(prog, f, { hash: (rnd() | 1) >>> 0 });
    if (r === 'refused') continue;
    ran++;
    assert.equal(r.retval, TC_ACT_UNSPEC);
    assert.deepEqual(r.data, f.data, 'the tunnel side never changes the packet');
    if (!prog.startsWith('h_tmap')) continue;
    const entry = h.flow(r.hash);
    if (!entry) continue;
    stored++;
    assert.ok(entry.dscp >= 1 && entry.dscp <= 63, `seed ${SEED} packet ${i}: stored DSCP ${entry.dscp}`);
    // The stored DSCP is the DS field of an IP header where the program looks.
    const candidates = IP_OFFSETS.filter((o) => f.data.length >= o + 20 && [4, 6].includes(f.data[o] >> 4) && (f.l3 ? o === 0 : o > 0)).map((o) => P.dsByte(f.data, o) >> 2);
    assert.ok(candidates.includes(entry.dscp), `seed ${SEED} packet ${i}: stored ${entry.dscp}, packet DSCPs ${candidates}`);
    if (!f.l3) assert.ok([0x0800, 0x86dd, 0x8100, 0x88a8].includes(f.data.readUInt16BE(12)), 'an entry for a non-IP frame');
    h.flows.delete(Buffer.from(Uint32Array.of(r.hash).buffer));
  }
  for (const k of h.flows.keys()) assert.fail(`entry left for ${k.toString('hex')}`);
  console.log(`tunnel fuzz: ${ran} packets run, ${stored} entries stored, all DSCP 1-63 of IP headers`);
});
