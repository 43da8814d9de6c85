/** Packet capture with tcpdump inside a namespace, read back with the pcap decoder. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { liveTempDirs, sleep, stopChild, track, waitFor } from './exec.js';
import { type IpInfo, ipPackets, PROTO_UDP, type TunnelPacket, tunnelPackets } from './pcap.js';

export class Capture {
  private constructor(
    private readonly child: ChildProcess,
    private readonly dir: string,
    readonly file: string,
    private readonly vxlanPort: number,
  ) {}

  /**
   * Starts `tcpdump -i ifname -w file` in ns and resolves once it listens.
   * filter: a pcap filter expression, e.g. "udp port 4789".
   */
  static async start(ns: string, ifname: string, filter: string, opts: { vxlanPort?: number; direction?: 'in' | 'out' | 'inout' } = {}): Promise<Capture> {
    const dir = mkdtempSync(join(tmpdir(), 'pdscp-cap-'));
    liveTempDirs.add(dir);
    const file = join(dir, 'outer.pcap');
    const args = ['netns', 'exec', ns, 'tcpdump', '-i', ifname, '-n', '-U', '--immediate-mode', '-s', '512', '-Z', 'root', '-w', file];
    if (opts.direction) args.push('-Q', opts.direction);
    args.push(...filter.split(' ').filter(Boolean));
    const child = track(spawn('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] }));
    try {
      await waitFor(child, 'stderr', 'listening on', 10_000);
    } catch (e) {
      await stopChild(child, 'SIGKILL');
      removeDir(dir);
      throw e;
    }
    return new Capture(child, dir, file, opts.vxlanPort ?? 4789);
  }

  /** Stops tcpdump (after settleMs for packets in flight) and returns the decoded packets. */
  async stop(settleMs = 150): Promise<TunnelPacket[]> {
    await sleep(settleMs);
    await stopChild(this.child, 'SIGINT');
    try {
      return tunnelPackets(readFileSync(this.file), this.vxlanPort);
    } finally {
      removeDir(this.dir);
    }
  }

  /** Stops and returns every IP packet with its L4 payload (for WireGuard, whose payload is encrypted). */
  async stopIp(settleMs = 150): Promise<{ ip: IpInfo; payload: Buffer }[]> {
    await sleep(settleMs);
    await stopChild(this.child, 'SIGINT');
    try {
      return ipPackets(readFileSync(this.file)).map(({ ip, data }) => ({ ip, payload: data.subarray(ip.proto === PROTO_UDP ? ip.l4 + 8 : ip.l4) }));
    } finally {
      rmSync(this.dir, { recursive: true, force: true });
    }
  }

  /** Stops without reading (cleanup path). */
  async abort(): Promise<void> {
    await stopChild(this.child, 'SIGKILL');
    removeDir(this.dir);
  }
}

function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  liveTempDirs.delete(dir);
}
