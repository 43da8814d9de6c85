/**
 * Tunnel throughput: iperf3 TCP over a VXLAN `tos 0` tunnel between two
 * namespaces joined by veth, without and with the tool attached by the real
 * CLI (hash carrier, the default for VXLAN, and the map carrier), arms
 * alternating run by run.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { delNetns, median, ns, sh } from './lib.js';

export interface ThroughputResult {
  seconds: number;
  runSeconds: number;
  arms: Record<string, number[]>; // Gbit/s per run
  median: Record<string, number>;
  ratio: Record<string, number>; // median over rounds of (arm run / mean of the round's off run and the next round's off run)
  rewritten: Record<string, number>; // uplink counter after the arm's runs
  target: number;
  pass: boolean;
}

export function runThroughput(cli: string[], env: NodeJS.ProcessEnv, opts: { runs: number; seconds: number; tag: string }): ThroughputResult {
  const t0 = Date.now();
  const A = `pdscpb-a-${opts.tag}`;
  const B = `pdscpb-b-${opts.tag}`;
  let server: ChildProcess | undefined;
  try {
    for (const n of [A, B]) {
      delNetns(n);
      sh('ip', ['netns', 'add', n]);
      ns(n, ['ip', 'link', 'set', 'lo', 'up']);
    }
    sh('ip', ['link', 'add', 'veth0', 'netns', A, 'type', 'veth', 'peer', 'name', 'veth0', 'netns', B]);
    const side = (n: string, me: number, peer: number) => {
      ns(n, ['ip', 'addr', 'add', `192.168.77.${me}/24`, 'dev', 'veth0']);
      ns(n, ['ip', 'link', 'set', 'veth0', 'up']);
      ns(n, ['ip', 'link', 'add', 'vx0', 'type', 'vxlan', 'id', '42', 'remote', `192.168.77.${peer}`, 'local', `192.168.77.${me}`, 'dstport', '4789', 'tos', '0', 'dev', 'veth0']);
      ns(n, ['ip', 'addr', 'add', `10.77.0.${me}/24`, 'dev', 'vx0']);
      ns(n, ['ip', 'link', 'set', 'vx0', 'up']);
    };
    side(A, 1, 2);
    side(B, 2, 1);
    server = spawn('ip', ['netns', 'exec', B, 'iperf3', '-s', '-B', '10.77.0.2'], { stdio: 'ignore' });
    sh('sleep', ['0.5']);
    const client = (): number => {
      for (let attempt = 0; ; attempt++) {
        try {
          const out = ns(A, ['iperf3', '-c', '10.77.0.2', '-t', String(opts.seconds), '-S', '0xb8', '-J']);
          const j = JSON.parse(out) as { end: { sum_received: { bits_per_second: number } } };
          return j.end.sum_received.bits_per_second / 1e9;
        } catch (e) {
          if (attempt >= 3) throw e;
          sh('sleep', ['0.5']); // server still busy with the previous test
        }
      }
    };
    const arms: Record<string, string[] | null> = { off: null, hash: [], map: ['--carrier', 'map'] };
    const res: Record<string, number[]> = { off: [], hash: [], map: [] };
    const rewritten: Record<string, number> = {};
    client(); // warm-up, not recorded
    for (let r = 0; r < opts.runs; r++) {
      for (const [arm, extra] of Object.entries(arms)) {
        if (extra) ns(A, [...cli, ...extra, 'vx0', 'veth0'], { env });
        res[arm].push(client());
        if (extra) {
          const st = JSON.parse(ns(A, [...cli, 'status', '--json'], { env })) as { interfaces: Array<{ ifname: string; role: string; counters?: { rewritten: number } }> };
          rewritten[arm] = st.interfaces.find((i) => i.role === 'uplink')?.counters?.rewritten ?? 0;
          ns(A, [...cli, 'veth0', '--unload'], { env });
        }
      }
    }
    res.off.push(client()); // closing off run: every attached run sits between two off runs
    const med = Object.fromEntries(Object.entries(res).map(([k, v]) => [k, median(v)]));
    // The machine is shared: pair each attached run with the off runs around it.
    const paired = (arm: string) => median(res[arm].map((v, r) => v / ((res.off[r] + res.off[r + 1]) / 2)));
    const ratio = { hash: paired('hash'), map: paired('map') };
    return { seconds: (Date.now() - t0) / 1000, runSeconds: opts.seconds, arms: res, median: med, ratio, rewritten, target: 0.97, pass: ratio.hash >= 0.97 && ratio.map >= 0.97 };
  } finally {
    server?.kill();
    delNetns(A);
    delNetns(B);
  }
}
