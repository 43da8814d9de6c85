/**
 * An L3 uplink: a VXLAN `tos 0` tunnel whose outer packets are routed into a
 * TUN device; the TUN reader (a child process) sees each outer packet as it
 * left, starting at the IP header.
 */
import { sh, sleep } from '../../../src/demo/exec.js';
import type { Lab } from '../../../src/demo/lab.js';
import { decodeTunnel, type TunnelPacket } from '../../../src/demo/pcap.js';
import { TunReader } from '../../../src/demo/traffic.js';

export interface TunSetup {
  ns: string;
  tun: string;
  tunnel: string;
  reader: TunReader;
  inner4: string;
  inner6: string;
  peer4: string;
  peer6: string;
  /** outer packets read so far (VXLAN ones) */
  outer(): TunnelPacket[];
  /** waits until the reader has at least n packets more than before (or the timeout) */
  settle(before: number, atLeast: number, timeoutMs?: number): Promise<TunnelPacket[]>;
}

export async function makeTunUplink(lab: Lab): Promise<TunSetup> {
  const ns = lab.netns('tun');
  const tun = 'tun0';
  const tunnel = 'vx0';
  const reader = await TunReader.start(ns, tun);
  try {
    sh('ip', ['-n', ns, 'addr', 'add', '10.210.0.1/24', 'dev', tun]);
    sh('ip', ['-n', ns, 'link', 'set', tun, 'up']);
    sh('ip', ['-n', ns, 'link', 'add', tunnel, 'address', '02:00:00:20:01:01', 'type', 'vxlan', 'id', '42', 'local', '10.210.0.1', 'remote', '10.210.0.2', 'dstport', '4789', 'tos', '0', 'ttl', '64']);
    sh('ip', ['-n', ns, 'addr', 'add', '10.201.0.1/24', 'dev', tunnel]);
    sh('ip', ['-n', ns, 'addr', 'add', 'fd00:201::1/64', 'dev', tunnel, 'nodad']);
    sh('ip', ['-n', ns, 'link', 'set', tunnel, 'up']);
    // Nobody answers ARP/ND behind the TUN device: static neighbours.
    sh('ip', ['-n', ns, 'neigh', 'replace', '10.201.0.2', 'lladdr', '02:00:00:20:01:02', 'dev', tunnel, 'nud', 'permanent']);
    sh('ip', ['-n', ns, 'neigh', 'replace', 'fd00:201::2', 'lladdr', '02:00:00:20:01:02', 'dev', tunnel, 'nud', 'permanent']);
  } catch (e) {
    await reader.stop();
    throw e;
  }
  const outer = () =>
    reader
      .packets()
      .map((b) => decodeTunnel(b, 0))
      .filter((p): p is TunnelPacket => !!p && p.vni !== undefined);
  return {
    ns,
    tun,
    tunnel,
    reader,
    inner4: '10.201.0.1',
    inner6: 'fd00:201::1',
    peer4: '10.201.0.2',
    peer6: 'fd00:201::2',
    outer,
    async settle(before, atLeast, timeoutMs = 3000) {
      const end = Date.now() + timeoutMs;
      while (outer().length < before + atLeast && Date.now() < end) await sleep(50);
      await sleep(100);
      return outer().slice(before);
    },
  };
}
