/**
 * One measurement: capture the outer packets on the uplink of a tunnel pair
 * while sending a set of flows, then pair every flow with the outer packets
 * that carried it.
 */
import { Capture } from './capture.js';
import type { VxlanPair } from './lab.js';
import { type IpInfo, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, type TunnelPacket } from './pcap.js';
import { type Flow, type Kind, kindLabel, ping, sendSockets, Sink } from './traffic.js';

export interface FlowResult {
  flow: Flow;
  label: string;
  innerDscp: number;
  innerEcn: number;
  /** outer packets a -> b that carried this flow */
  packets: TunnelPacket[];
  /** distinct outer DSCPs / ECNs seen, ascending */
  outerDscps: number[];
  outerEcns: number[];
  /** distinct inner DSCPs seen on the wire (should be [innerDscp]) */
  seenInnerDscps: number[];
}

export const TCP_PORT_BASE = 7100;
export const UDP_PORT_BASE = 7200;

/** Builds flows for every kind x family x tclass, with ports that identify each. */
export function flowMatrix(pair: VxlanPair, kinds: Kind[], families: (4 | 6)[], tclasses: number[], count = 2): Flow[] {
  const flows: Flow[] = [];
  let udp = UDP_PORT_BASE;
  let tcp = TCP_PORT_BASE;
  for (const kind of kinds) {
    for (const family of families) {
      for (const tclass of tclasses) {
        const dst = family === 4 ? pair.b.inner4 : pair.b.inner6;
        flows.push({ kind, family, tclass, dst, count, port: kind === 'udp' ? udp++ : kind === 'tcp' ? tcp++ : undefined });
      }
    }
  }
  return flows;
}

const uniq = (xs: number[]) => [...new Set(xs)].sort((a, b) => a - b);

function matches(f: Flow, p: TunnelPacket): boolean {
  const i = p.inner;
  if (!i || i.version !== f.family) return false;
  if (f.kind === 'icmp') {
    const echo = f.family === 4 ? i.proto === PROTO_ICMP && i.icmpType === 8 : i.proto === PROTO_ICMPV6 && i.icmpType === 128;
    // Echo requests keep the whole traffic-class byte ping -Q set: that tells the flows apart.
    return echo && i.tclass === f.tclass;
  }
  // UDP and TCP flows each have their own destination port.
  return i.proto === (f.kind === 'udp' ? PROTO_UDP : PROTO_TCP) && i.dport === f.port;
}

/**
 * WireGuard encrypts the inner packet, so outer and inner are paired by
 * order: data messages (type 4, longer than a keepalive) sorted by their
 * counter are the inner packets B's wg device received, in order.
 */
export function pairWireguard(outer: { ip: IpInfo; payload: Buffer }[], inner: { ip: IpInfo }[]): TunnelPacket[] {
  const data = outer
    .filter((o) => o.ip.proto === PROTO_UDP && o.payload.length > 32 && o.payload[0] === 4)
    .sort((x, y) => (x.payload.readBigUInt64LE(8) < y.payload.readBigUInt64LE(8) ? -1 : 1));
  return data.slice(0, inner.length).map((o, i) => ({ outer: o.ip, inner: inner[i].ip }));
}

/** Sends flows from pair.a to pair.b, one after another, and captures pair.a's uplink (egress). */
export async function measure(pair: VxlanPair, flows: Flow[]): Promise<FlowResult[]> {
  const portsOf = (k: Kind) => [...new Set(flows.filter((f) => f.kind === k).map((f) => f.port as number))];
  const tcp = portsOf('tcp');
  const udp = portsOf('udp');
  const listener = tcp.length || udp.length ? await Sink.start(pair.b.ns, { tcp, udp }) : undefined;
  let cap: Capture | undefined;
  let innerCap: Capture | undefined;
  try {
    cap = await Capture.start(pair.a.ns, pair.uplink, `udp and dst port ${pair.dport}`, { direction: 'out', vxlanPort: pair.dport });
    if (pair.kind === 'wireguard') innerCap = await Capture.start(pair.b.ns, pair.tunnel, '', { direction: 'in' });
    const icmp = flows.filter((f) => f.kind === 'icmp');
    const sockets = flows.filter((f) => f.kind !== 'icmp');
    // One flow at a time: the map carrier is per flow, not per packet, so two
    // packets of one flow (e.g. pings to one host, if the flow hash ignores
    // the echo id) with different DSCPs in flight at once could swap marks.
    for (const f of icmp) {
      const p = await ping(pair.a.ns, f);
      if (!p.ok) throw new Error(`ping failed: ${p.output}`);
    }
    await sendSockets(pair.a.ns, sockets);
    const c = cap;
    cap = undefined;
    let packets: TunnelPacket[];
    if (pair.kind === 'wireguard') {
      const ic = innerCap as Capture;
      innerCap = undefined;
      packets = pairWireguard(await c.stopIp(), await ic.stopIp());
    } else {
      packets = await c.stop();
    }
    packets = packets.filter((p) => p.outer.src === pair.a.under);
    return flows.map((flow) => {
      const mine = packets.filter((p) => matches(flow, p));
      return {
        flow,
        label: kindLabel(flow.kind, flow.family),
        innerDscp: flow.tclass >> 2,
        innerEcn: flow.tclass & 3,
        packets: mine,
        outerDscps: uniq(mine.map((p) => p.outer.dscp)),
        outerEcns: uniq(mine.map((p) => p.outer.ecn)),
        seenInnerDscps: uniq(mine.map((p) => (p.inner as { dscp: number }).dscp)),
      };
    });
  } finally {
    await cap?.abort();
    await innerCap?.abort();
    await listener?.stop();
  }
}
