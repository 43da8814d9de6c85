/**
 * Shared setup for the datapath tests: the port plan of the test tunnels,
 * outer/inner packet makers and the assertions on a rewritten outer packet.
 */
import assert from 'node:assert/strict';
import { portTable, type Carrier, type LinkRecord } from '../../src/layout.js';
import { type Harness, TC_ACT_UNSPEC, tunnelProg } from './harness.js';
import * as P from './packets.js';

export const KEY = 0x5eed_c0de;

/** Outer UDP ports of the test tunnels (roles built with layout.portTable). */
export const PORT = {
  MAP_WG: 51820, // WireGuard, map carrier, as source port
  HASH_WG: 51821, // WireGuard, hash carrier, as source port
  BOTH_WG: 51822, // WireGuard, both carriers on one port (two tunnels)
  MAP_DST: 4789, // map carrier, as destination port (no WireGuard check)
  HASH_DST: 4790, // hash carrier, as destination port
  UNMANAGED: 51830,
  UNMANAGED2: 53,
} as const;

function tunnel(name: string, carrier: Carrier, sport: number, dport: number, wireguard: boolean): LinkRecord {
  return { ifindex: 100, role: 'tunnel', uplinkIfindex: 4, sport, dport, carrier, createdClsact: false, l3: true, wireguard, name };
}

export const TUNNELS: LinkRecord[] = [
  tunnel('wg-map', 'map', PORT.MAP_WG, 0, true),
  tunnel('wg-hash', 'hash', PORT.HASH_WG, 0, true),
  tunnel('wg-both-m', 'map', PORT.BOTH_WG, 0, true),
  tunnel('wg-both-h', 'hash', PORT.BOTH_WG, 0, true),
  tunnel('vx-map', 'map', 0, PORT.MAP_DST, false),
  tunnel('vx-hash', 'hash', 0, PORT.HASH_DST, false),
];
export const PORTS = portTable(TUNNELS).ports;

export interface OuterOpts {
  ds?: number; // whole DS byte
  sport: number;
  dport: number;
  payload?: Buffer; // default: WireGuard data message
  id?: number;
  flowLabel?: number;
  options?: Buffer; // IPv4 options
  ext?: P.ExtHeader[]; // IPv6 extension headers
  proto?: number;
}

export function outer(v: 4 | 6, o: OuterOpts): Buffer {
  const l4 = o.proto === undefined || o.proto === P.IPPROTO_UDP ? P.udp(o.sport, o.dport, o.payload ?? P.wgData()) : (o.payload ?? P.tcp(o.sport, o.dport));
  return v === 4
    ? P.ipv4({ tos: o.ds ?? 0, id: o.id, options: o.options, proto: o.proto, dst: P.ipv4Addr('203.0.113.9'), payload: l4 })
    : P.ipv6({ tclass: o.ds ?? 0, flowLabel: o.flowLabel ?? 0xabcde, ext: o.ext, proto: o.proto, dst: P.ipv6Addr('2001:db8:ffff::9'), payload: l4 });
}

/**
 * Inner packet. The IPv6 flow label defaults to one per source port: with a
 * flow label the kernel's flow hash covers addresses and label, not ports.
 */
export interface InnerOpts {
  ds: number;
  sport?: number;
  dport?: number;
  src?: Buffer;
  options?: Buffer;
  ext?: P.ExtHeader[];
  flowLabel?: number;
}

export function inner(v: 4 | 6, o: InnerOpts): Buffer {
  const l4 = P.udp(o.sport ?? 40000, o.dport ?? 443, Buffer.from('inner payload'));
  return v === 4
    ? P.ipv4({ tos: o.ds, src: o.src, options: o.options, dst: P.ipv4Addr('10.9.0.2'), payload: l4 })
    : P.ipv6({ tclass: o.ds, src: o.src, ext: o.ext, flowLabel: o.flowLabel ?? (0x10000 + (o.sport ?? 40000)) & 0xfffff, dst: P.ipv6Addr('fd00::2'), payload: l4 });
}

/**
 * Asserts out is `before` with only the DS field set to dscp (ECN kept) and,
 * for IPv4, a valid checksum.
 */
export function assertRewritten(f: P.Frame, out: Buffer, dscp: number, what: string): void {
  const a = f.data;
  const o = f.ipOff;
  assert.equal(out.length, a.length, `${what}: length changed`);
  const v4 = a[o] >> 4 === 4;
  for (let i = 0; i < a.length; i++) {
    if (v4 && (i === o + 1 || i === o + 10 || i === o + 11)) continue;
    if (!v4 && i === o) {
      assert.equal(out[i] & 0xf0, a[i] & 0xf0, `${what}: IPv6 version nibble changed`);
      continue;
    }
    if (!v4 && i === o + 1) {
      assert.equal(out[i] & 0x0f, a[i] & 0x0f, `${what}: IPv6 flow label nibble changed`);
      continue;
    }
    if (out[i] !== a[i]) assert.fail(`${what}: byte ${i} changed from 0x${a[i].toString(16)} to 0x${out[i].toString(16)}`);
  }
  const ecn = P.dsByte(a, o) & 3;
  assert.equal(P.dsByte(out, o), (dscp << 2) | ecn, `${what}: DS field 0x${P.dsByte(out, o).toString(16)}, want DSCP ${dscp} ECN ${ecn}`);
  if (v4) {
    assert.ok(P.ipv4HeaderChecksumValid(out.subarray(o)), `${what}: IPv4 header checksum invalid (0x${out.readUInt16BE(o + 10).toString(16)})`);
  } else assert.equal(P.flowLabel(out, o), P.flowLabel(a, o), `${what}: flow label changed`);
}

export function assertUnchanged(f: P.Frame, r: { retval: number; data: Buffer }, what: string): void {
  assert.equal(r.retval, TC_ACT_UNSPEC, `${what}: return value`);
  assert.ok(r.data.equals(f.data), `${what}: packet changed\n in  ${f.data.toString('hex')}\n out ${r.data.toString('hex')}`);
}

/**
 * The hash-carrier flow hash that carries `dscp`, made by the real tunnel
 * side (h_thash_*) from an inner packet with that DSCP.
 */
export function encodedHash(h: Harness, dscp: number, flow = 0, v: 4 | 6 = 4): number {
  const f = P.l2Frame(inner(v, { ds: dscp << 2, sport: 1024 + (flow % 60000), src: v === 4 ? P.ipv4Addr(`10.${(flow >> 16) & 255}.${(flow >> 8) & 255}.1`) : undefined }));
  const r = h.run(tunnelProg('hash', false), f);
  assert.equal(r.retval, TC_ACT_UNSPEC);
  assert.notEqual(r.hash, 0);
  return r.hash;
}
