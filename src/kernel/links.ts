/**
 * Network interfaces of the current network namespace, read with iproute2
 * (netlink, so it is right under `ip netns exec` and `nsenter --net` alike).
 */
import { execFileSync } from 'node:child_process';

export interface Link {
  ifindex: number;
  name: string;
  /** iproute2 link_type: ether, none (WireGuard, TUN), ppp, loopback, ... */
  linkType: string;
  /** rtnetlink IFLA_INFO_KIND: wireguard, vxlan, geneve, veth, ... */
  kind?: string;
  /** VXLAN/Geneve destination UDP port */
  udpDport?: number;
  up: boolean;
}

interface IpLink {
  ifindex: number;
  ifname: string;
  link_type: string;
  flags?: string[];
  linkinfo?: { info_kind?: string; info_data?: { port?: number } };
}

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 256 << 20 });
}

export function listLinks(): Link[] {
  const list = JSON.parse(run('ip', ['-j', '-d', 'link', 'show'])) as IpLink[];
  return list.map((l) => ({
    ifindex: l.ifindex,
    name: l.ifname,
    linkType: l.link_type,
    kind: l.linkinfo?.info_kind,
    udpDport: l.linkinfo?.info_kind === 'vxlan' || l.linkinfo?.info_kind === 'geneve' ? (l.linkinfo.info_data?.port ?? (l.linkinfo.info_kind === 'vxlan' ? 4789 : 6081)) : undefined,
    up: (l.flags ?? []).includes('UP'),
  }));
}

/** Packets on this device start with an IP header (no link-layer header). */
export function isL3(link: Link): boolean {
  return link.linkType !== 'ether';
}

/** WireGuard listen port from wireguard-tools; undefined if unknown. */
export function wireguardListenPort(ifname: string): number | undefined {
  try {
    const port = Number.parseInt(run('wg', ['show', ifname, 'listen-port']).trim(), 10);
    return Number.isInteger(port) && port > 0 ? port : undefined;
  } catch {
    return undefined;
  }
}
