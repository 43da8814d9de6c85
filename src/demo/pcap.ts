/**
 * A small pcap reader and a decoder of tunnel packets: outer IPv4/IPv6 + UDP
 * (+ VXLAN + inner Ethernet) + inner IP, so each outer packet's DSCP/ECN can
 * be paired with the inner packet's.
 */

export const LINKTYPE_ETHERNET = 1;
export const LINKTYPE_RAW = 101;
export const LINKTYPE_LINUX_SLL = 113;
export const LINKTYPE_IPV4 = 228;
export const LINKTYPE_IPV6 = 229;
export const LINKTYPE_LINUX_SLL2 = 276;

export interface PcapRecord {
  ts: number;
  data: Buffer;
}

export interface Pcap {
  linktype: number;
  records: PcapRecord[];
}

/** Parses a classic pcap file (either byte order, µs or ns timestamps). */
export function parsePcap(buf: Buffer): Pcap {
  if (buf.length < 24) throw new Error('pcap: file too short');
  const magicLE = buf.readUInt32LE(0);
  let le: boolean;
  let nanos = false;
  if (magicLE === 0xa1b2c3d4 || magicLE === 0xa1b23c4d) {
    le = true;
    nanos = magicLE === 0xa1b23c4d;
  } else {
    const magicBE = buf.readUInt32BE(0);
    if (magicBE !== 0xa1b2c3d4 && magicBE !== 0xa1b23c4d) throw new Error(`pcap: bad magic 0x${magicLE.toString(16)}`);
    le = false;
    nanos = magicBE === 0xa1b23c4d;
  }
  const u32 = (o: number) => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  const linktype = u32(20) & 0x0fffffff;
  const records: PcapRecord[] = [];
  let off = 24;
  while (off + 16 <= buf.length) {
    const sec = u32(off);
    const frac = u32(off + 4);
    const incl = u32(off + 8);
    off += 16;
    if (off + incl > buf.length) break; // truncated last record (capture stopped mid-write)
    records.push({ ts: sec + frac / (nanos ? 1e9 : 1e6), data: buf.subarray(off, off + incl) });
    off += incl;
  }
  return { linktype, records };
}

export interface IpInfo {
  version: 4 | 6;
  /** the whole IPv4 TOS / IPv6 traffic-class byte */
  tclass: number;
  dscp: number;
  ecn: number;
  src: string;
  dst: string;
  /** IPv4 protocol / IPv6 next header (after skipping extension headers) */
  proto: number;
  sport?: number;
  dport?: number;
  icmpType?: number;
  /** offset of the L4 header within the buffer given to parseIp */
  l4: number;
}

export interface TunnelPacket {
  outer: IpInfo;
  /** VXLAN network identifier, when the payload was VXLAN */
  vni?: number;
  /** the encapsulated IP packet, when there is one */
  inner?: IpInfo;
}

export const PROTO_ICMP = 1;
export const PROTO_TCP = 6;
export const PROTO_UDP = 17;
export const PROTO_ICMPV6 = 58;

function ip4str(b: Buffer, o: number): string {
  return `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;
}

/** Canonical (RFC 5952) text of an IPv6 address. */
export function ip6str(b: Buffer, o: number): string {
  const w: number[] = [];
  for (let i = 0; i < 8; i++) w.push(b.readUInt16BE(o + i * 2));
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (a: number[]) => a.map((x) => x.toString(16)).join(':');
  if (bestStart < 0) return hex(w);
  return `${hex(w.slice(0, bestStart))}::${hex(w.slice(bestStart + bestLen))}`;
}

/** Parses IPv6 text (with ::, no embedded IPv4) into 16 bytes. */
export function ip6bytes(text: string): Buffer {
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const fill = tail === undefined ? 0 : 8 - h.length - t.length;
  const words = [...h, ...Array(fill).fill('0'), ...t];
  if (words.length !== 8) throw new Error(`bad IPv6 address ${text}`);
  const out = Buffer.alloc(16);
  words.forEach((x, i) => out.writeUInt16BE(parseInt(x, 16), i * 2));
  return out;
}

export function ip4bytes(text: string): Buffer {
  const p = text.split('.').map(Number);
  if (p.length !== 4 || p.some((x) => !(x >= 0 && x <= 255))) throw new Error(`bad IPv4 address ${text}`);
  return Buffer.from(p);
}

const IPV6_EXT = new Set([0, 43, 60]); // hop-by-hop, routing, destination options

/** Decodes an IP header at offset o; undefined if it is not IPv4/IPv6. */
export function parseIp(b: Buffer, o: number): IpInfo | undefined {
  if (b.length < o + 1) return undefined;
  const version = b[o] >> 4;
  let info: IpInfo;
  if (version === 4) {
    if (b.length < o + 20) return undefined;
    const ihl = (b[o] & 0x0f) * 4;
    const tclass = b[o + 1];
    info = { version: 4, tclass, dscp: tclass >> 2, ecn: tclass & 3, src: ip4str(b, o + 12), dst: ip4str(b, o + 16), proto: b[o + 9], l4: o + ihl };
  } else if (version === 6) {
    if (b.length < o + 40) return undefined;
    const tclass = ((b[o] & 0x0f) << 4) | (b[o + 1] >> 4);
    let proto = b[o + 6];
    let l4 = o + 40;
    while (IPV6_EXT.has(proto) && b.length >= l4 + 8) {
      proto = b[l4];
      l4 += (b[l4 + 1] + 1) * 8;
    }
    info = { version: 6, tclass, dscp: tclass >> 2, ecn: tclass & 3, src: ip6str(b, o + 8), dst: ip6str(b, o + 24), proto, l4 };
  } else {
    return undefined;
  }
  if ((info.proto === PROTO_TCP || info.proto === PROTO_UDP) && b.length >= info.l4 + 4) {
    info.sport = b.readUInt16BE(info.l4);
    info.dport = b.readUInt16BE(info.l4 + 2);
  } else if ((info.proto === PROTO_ICMP || info.proto === PROTO_ICMPV6) && b.length > info.l4) {
    info.icmpType = b[info.l4];
  }
  return info;
}

/** Offset of the IP header in a frame of the given link type, or -1. */
export function ipOffset(frame: Buffer, linktype: number): number {
  switch (linktype) {
    case LINKTYPE_RAW:
    case LINKTYPE_IPV4:
    case LINKTYPE_IPV6:
      return 0;
    case LINKTYPE_ETHERNET:
      return etherPayload(frame, 0);
    case LINKTYPE_LINUX_SLL:
      return frame.length >= 16 && isIpType(frame.readUInt16BE(14)) ? 16 : -1;
    case LINKTYPE_LINUX_SLL2:
      return frame.length >= 20 && isIpType(frame.readUInt16BE(0)) ? 20 : -1;
    default:
      return -1;
  }
}

function isIpType(t: number): boolean {
  return t === 0x0800 || t === 0x86dd;
}

/** Offset of the IP packet inside an Ethernet frame at o (VLAN tags skipped), or -1. */
export function etherPayload(b: Buffer, o: number): number {
  let p = o + 12;
  for (let i = 0; i < 3 && b.length >= p + 2; i++) {
    const t = b.readUInt16BE(p);
    if (t === 0x8100 || t === 0x88a8) {
      p += 4;
      continue;
    }
    return isIpType(t) ? p + 2 : -1;
  }
  return -1;
}

/**
 * Decodes an outer packet starting at the IP header. VXLAN (UDP to vxlanPort)
 * carries Ethernet; WireGuard payload is encrypted, so inner stays undefined.
 */
export function decodeTunnel(b: Buffer, ipOff: number, vxlanPort = 4789): TunnelPacket | undefined {
  const outer = parseIp(b, ipOff);
  if (!outer) return undefined;
  const pkt: TunnelPacket = { outer };
  if (outer.proto === PROTO_UDP && outer.dport === vxlanPort && b.length >= outer.l4 + 16) {
    const vx = outer.l4 + 8;
    pkt.vni = b.readUIntBE(vx + 4, 3);
    const innerIp = etherPayload(b, vx + 8);
    if (innerIp >= 0) pkt.inner = parseIp(b, innerIp);
  }
  return pkt;
}

/** Every IP packet of a pcap file's content, with its frame and the IP header's offset. */
export function ipPackets(pcapFile: Buffer): { ip: IpInfo; data: Buffer; off: number }[] {
  const { linktype, records } = parsePcap(pcapFile);
  const out: { ip: IpInfo; data: Buffer; off: number }[] = [];
  for (const r of records) {
    const off = ipOffset(r.data, linktype);
    const ip = off < 0 ? undefined : parseIp(r.data, off);
    if (ip) out.push({ ip, data: r.data, off });
  }
  return out;
}

/** Every tunnel packet of a pcap file's content. */
export function tunnelPackets(pcapFile: Buffer, vxlanPort = 4789): TunnelPacket[] {
  return ipPackets(pcapFile).map((p) => decodeTunnel(p.data, p.off, vxlanPort)).filter((p): p is TunnelPacket => !!p);
}
