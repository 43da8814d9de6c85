/**
 * A small packet builder for the datapath tests: Ethernet with VLAN tags,
 * IPv4 (with options), IPv6 (with extension headers), UDP, WireGuard message
 * heads, ARP, and the Internet checksum. Everything is built byte by byte
 * from the RFCs; nothing here knows how the datapath works.
 */

export const ETH_P_IP = 0x0800;
export const ETH_P_ARP = 0x0806;
export const ETH_P_IPV6 = 0x86dd;
export const ETH_P_8021Q = 0x8100;
export const ETH_P_8021AD = 0x88a8;

export const IPPROTO_HOPOPTS = 0;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_ROUTING = 43;
export const IPPROTO_FRAGMENT = 44;
export const IPPROTO_ESP = 50;
export const IPPROTO_DSTOPTS = 60;

/*
 * Default source addresses. BPF_PROG_TEST_RUN of a tc program always treats
 * the first 14 bytes as an Ethernet header (skb->protocol comes from bytes
 * 12-13) and leaves skb->data at byte 0, so an L3 frame is tested by passing
 * the IP packet itself: bytes 12-13 of the IP header must then spell the
 * EtherType. In IPv4 they are the first two bytes of the source address
 * (8.0.x.x -> 0x0800), in IPv6 bytes 4-5 of it (2001:db8:86dd:: -> 0x86dd).
 */
export const V4_SRC = '8.0.2.1';
export const V6_SRC = '2001:db8:86dd::1';

export interface Vlan {
  tpid: number; // 0x8100 or 0x88a8
  vid: number;
  pcp?: number;
}

const MAC_DST = Buffer.from([0x02, 0x00, 0x00, 0x00, 0x00, 0x02]);
const MAC_SRC = Buffer.from([0x02, 0x00, 0x00, 0x00, 0x00, 0x01]);

export function ethernet(ethertype: number, payload: Buffer, vlans: Vlan[] = []): Buffer {
  const h = Buffer.alloc(14 + 4 * vlans.length);
  MAC_DST.copy(h, 0);
  MAC_SRC.copy(h, 6);
  let off = 12;
  for (const v of vlans) {
    h.writeUInt16BE(v.tpid, off);
    h.writeUInt16BE((((v.pcp ?? 0) & 7) << 13) | (v.vid & 0xfff), off + 2);
    off += 4;
  }
  h.writeUInt16BE(ethertype, off);
  return Buffer.concat([h, payload]);
}

/** RFC 1071 Internet checksum of buf (the value to store). */
export function inetChecksum(buf: Buffer, initial = 0): number {
  let sum = initial;
  for (let i = 0; i + 1 < buf.length; i += 2) sum += buf.readUInt16BE(i);
  if (buf.length & 1) sum += buf[buf.length - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return ~sum & 0xffff;
}

/** True when the IPv4 header's checksum field is valid (the one's-complement sum of the header is 0xffff). */
export function ipv4HeaderChecksumValid(ip: Buffer): boolean {
  const ihl = (ip[0] & 0x0f) * 4;
  return inetChecksum(ip.subarray(0, ihl)) === 0;
}

export function ipv4Addr(text: string): Buffer {
  return Buffer.from(text.split('.').map(Number));
}

export function ipv6Addr(text: string): Buffer {
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const hs = head ? head.split(':') : [];
  const ts = tail ? tail.split(':') : [];
  const groups = tail === undefined ? hs : [...hs, ...Array(8 - hs.length - ts.length).fill('0'), ...ts];
  const b = Buffer.alloc(16);
  groups.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), 2 * i));
  return b;
}

export interface Ipv4Opts {
  tos?: number; // whole DS byte (DSCP << 2 | ECN)
  src?: Buffer;
  dst?: Buffer;
  proto?: number;
  id?: number;
  ttl?: number;
  df?: boolean;
  /** raw option bytes; padded to a multiple of 4 with End-of-options */
  options?: Buffer;
  payload: Buffer;
}

export function ipv4(o: Ipv4Opts): Buffer {
  const opt = o.options ?? Buffer.alloc(0);
  const optLen = (opt.length + 3) & ~3;
  const ihl = 20 + optLen;
  const h = Buffer.alloc(ihl);
  h[0] = 0x40 | (ihl / 4);
  h[1] = (o.tos ?? 0) & 0xff;
  h.writeUInt16BE(ihl + o.payload.length, 2);
  h.writeUInt16BE((o.id ?? 0x1234) & 0xffff, 4);
  h.writeUInt16BE(o.df === false ? 0 : 0x4000, 6);
  h[8] = o.ttl ?? 64;
  h[9] = o.proto ?? IPPROTO_UDP;
  (o.src ?? ipv4Addr(V4_SRC)).copy(h, 12);
  (o.dst ?? ipv4Addr('198.51.100.2')).copy(h, 16);
  opt.copy(h, 20);
  h.writeUInt16BE(inetChecksum(h), 10);
  const pkt = Buffer.concat([h, o.payload]);
  if (h[9] === IPPROTO_UDP && o.payload.length >= 8 && !o.payload.readUInt16BE(6)) {
    const pseudo = Buffer.alloc(12);
    h.copy(pseudo, 0, 12, 20);
    pseudo[9] = IPPROTO_UDP;
    pseudo.writeUInt16BE(o.payload.length, 10);
    pkt.writeUInt16BE(udpChecksum(pseudo, o.payload), ihl + 6);
  }
  return pkt;
}

/** IPv4 options: a Router Alert (RFC 2113) and a NOP, 8 bytes. */
export const IPV4_OPTIONS_RA = Buffer.from([0x94, 0x04, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00]);

export interface ExtHeader {
  type: number; // IPPROTO_HOPOPTS, IPPROTO_DSTOPTS, IPPROTO_ROUTING, IPPROTO_FRAGMENT
  /** option / routing data after the first two bytes (padded to 8n - 2 with PadN) */
  body?: Buffer;
}

export interface Ipv6Opts {
  tclass?: number; // whole traffic-class byte (DSCP << 2 | ECN)
  flowLabel?: number;
  src?: Buffer;
  dst?: Buffer;
  /** protocol after the extension headers */
  proto?: number;
  hopLimit?: number;
  ext?: ExtHeader[];
  payload: Buffer;
}

function extHeader(e: ExtHeader, next: number): Buffer {
  if (e.type === IPPROTO_FRAGMENT) {
    const f = Buffer.alloc(8);
    f[0] = next;
    f.writeUInt32BE(0xdecafbad, 4); // identification; offset 0, M=0 (atomic fragment)
    return f;
  }
  let body = e.body ?? Buffer.alloc(0);
  if (e.type === IPPROTO_ROUTING && !e.body) body = Buffer.from([0 /* type 0 */, 0 /* segments left */, 0, 0, 0, 0]);
  const len = Math.max(8, (body.length + 2 + 7) & ~7);
  const h = Buffer.alloc(len);
  h[0] = next;
  h[1] = len / 8 - 1;
  body.copy(h, 2);
  const pad = len - 2 - body.length;
  if (e.type !== IPPROTO_ROUTING && pad > 0) {
    // PadN (or Pad1) to fill the options area
    if (pad === 1) h[2 + body.length] = 0;
    else {
      h[2 + body.length] = 1;
      h[3 + body.length] = pad - 2;
    }
  }
  return h;
}

export function ipv6(o: Ipv6Opts): Buffer {
  const ext = o.ext ?? [];
  const proto = o.proto ?? IPPROTO_UDP;
  const exts = ext.map((e, i) => extHeader(e, i + 1 < ext.length ? ext[i + 1].type : proto));
  const rest = Buffer.concat([...exts, o.payload]);
  const h = Buffer.alloc(40);
  const tc = (o.tclass ?? 0) & 0xff;
  h.writeUInt32BE(((6 << 28) | (tc << 20) | ((o.flowLabel ?? 0) & 0xfffff)) >>> 0, 0);
  h.writeUInt16BE(rest.length, 4);
  h[6] = ext.length ? ext[0].type : proto;
  h[7] = o.hopLimit ?? 64;
  (o.src ?? ipv6Addr(V6_SRC)).copy(h, 8);
  (o.dst ?? ipv6Addr('2001:db8::2')).copy(h, 24);
  const pkt = Buffer.concat([h, rest]);
  if (proto === IPPROTO_UDP && o.payload.length >= 8 && !o.payload.readUInt16BE(6)) {
    const pseudo = Buffer.alloc(40);
    h.copy(pseudo, 0, 8, 40);
    pseudo.writeUInt32BE(o.payload.length, 32);
    pseudo[39] = IPPROTO_UDP;
    const off = pkt.length - o.payload.length;
    pkt.writeUInt16BE(udpChecksum(pseudo, o.payload) || 0xffff, off + 6);
  }
  return pkt;
}

function udpChecksum(pseudo: Buffer, udp: Buffer): number {
  return inetChecksum(Buffer.concat([pseudo, udp]));
}

/** UDP header (checksum 0: filled in by ipv4()/ipv6()) + payload. */
export function udp(sport: number, dport: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt16BE(sport, 0);
  h.writeUInt16BE(dport, 2);
  h.writeUInt16BE(8 + payload.length, 4);
  return Buffer.concat([h, payload]);
}

export function tcp(sport: number, dport: number): Buffer {
  const h = Buffer.alloc(20);
  h.writeUInt16BE(sport, 0);
  h.writeUInt16BE(dport, 2);
  h.writeUInt32BE(1, 4);
  h[12] = 5 << 4;
  h[13] = 0x18; // PSH|ACK
  h.writeUInt16BE(65535, 14);
  return h;
}

/** WireGuard transport data message: type 4, 3 reserved zeros, receiver, counter, ciphertext. */
export function wgData(receiver = 0x11223344, counter = 7n, ciphertextLen = 32): Buffer {
  const b = Buffer.alloc(16 + ciphertextLen, 0xa5);
  b.writeUInt32LE(4, 0);
  b.writeUInt32LE(receiver, 4);
  b.writeBigUInt64LE(counter, 8);
  return b;
}

/** WireGuard handshake initiation (type 1), 148 bytes. */
export function wgHandshakeInit(sender = 0x55667788): Buffer {
  const b = Buffer.alloc(148, 0x5a);
  b.writeUInt32LE(1, 0);
  b.writeUInt32LE(sender, 4);
  return b;
}

/** ARP request payload (Ethernet/IPv4). */
export function arpRequest(): Buffer {
  const b = Buffer.alloc(28);
  b.writeUInt16BE(1, 0); // htype Ethernet
  b.writeUInt16BE(ETH_P_IP, 2);
  b[4] = 6;
  b[5] = 4;
  b.writeUInt16BE(1, 6); // request
  MAC_SRC.copy(b, 8);
  ipv4Addr('192.0.2.1').copy(b, 14);
  ipv4Addr('192.0.2.2').copy(b, 24);
  return b;
}

/**
 * A packet as a tc program sees it: L2 (Ethernet, optionally VLAN-tagged) or
 * L3 (starting at the IP header; ethertype is what skb->protocol says).
 */
export interface Frame {
  l3: boolean;
  data: Buffer;
  /** offset of the IP header in data */
  ipOff: number;
  ethertype: number;
}

export function l2Frame(ip: Buffer, vlans: Vlan[] = [], ethertype = ipEthertype(ip)): Frame {
  return { l3: false, data: ethernet(ethertype, ip, vlans), ipOff: 14 + 4 * vlans.length, ethertype };
}

/** An L3 frame; bytes 12-13 of the packet must be the EtherType (see V4_SRC). */
export function l3Frame(ip: Buffer, ethertype = ipEthertype(ip)): Frame {
  if (ip.length < 14 || ip.readUInt16BE(12) !== ethertype)
    throw new Error(`L3 test frame: bytes 12-13 must be the EtherType 0x${ethertype.toString(16)} (use V4_SRC/V6_SRC) and the frame >= 14 bytes`);
  return { l3: true, data: ip, ipOff: 0, ethertype };
}

export function ipEthertype(ip: Buffer): number {
  return ip.length && ip[0] >> 4 === 6 ? ETH_P_IPV6 : ETH_P_IP;
}

/** Framings used by the matrices: L2 with 0, 1 and 2 tags (both TPIDs), and L3. */
export interface Framing {
  name: string;
  l3: boolean;
  vlans: Vlan[];
}
export const FRAMINGS: Framing[] = [
  { name: 'eth', l3: false, vlans: [] },
  { name: 'eth+8021q', l3: false, vlans: [{ tpid: ETH_P_8021Q, vid: 100, pcp: 5 }] },
  { name: 'eth+8021ad', l3: false, vlans: [{ tpid: ETH_P_8021AD, vid: 200 }] },
  { name: 'eth+qinq(88a8,8100)', l3: false, vlans: [{ tpid: ETH_P_8021AD, vid: 300 }, { tpid: ETH_P_8021Q, vid: 301 }] },
  { name: 'eth+8100,8100', l3: false, vlans: [{ tpid: ETH_P_8021Q, vid: 400 }, { tpid: ETH_P_8021Q, vid: 401 }] },
  { name: 'l3', l3: true, vlans: [] },
];

export function frame(f: Framing, ip: Buffer): Frame {
  return f.l3 ? l3Frame(ip) : l2Frame(ip, f.vlans);
}

/** DS byte (IPv4 TOS / IPv6 traffic class) of the IP header at off. */
export function dsByte(pkt: Buffer, off: number): number {
  return pkt[off] >> 4 === 6 ? ((pkt[off] & 0x0f) << 4) | (pkt[off + 1] >> 4) : pkt[off + 1];
}

export function flowLabel(pkt: Buffer, off: number): number {
  return pkt.readUInt32BE(off) & 0xfffff;
}
