/**
 * Map carrier capacity: hit ratio with many concurrent flows, and memory.
 * The tunnel-side wrapper b_tmap_key runs the real tunnel logic for one
 * packet of each flow (distinct skb->hash from skb->mark) and returns the
 * flow key it used in skb->mark; the uplink wrapper b_up_l2 then presents an
 * outer packet with that hash and we read the outer DSCP it leaves.
 */
import { readFileSync } from 'node:fs';
import { BpfMap } from '../src/kernel/bpf.js';
import { ALL_MAPS, MAP_CONFIG, MAP_FLOWS, MAP_STATS, u32Key } from '../src/layout.js';
import { dscpAt, eth, ipv4, mix32, nowNs, tcp, udp } from './lib.js';
import { benchConfig, ctxWithMark, loadBench, MAP_PORT, testRunRetry } from './perpacket.js';

const EF = 46;

export interface MapHitRow {
  store: string;
  size: number;
  flows: number;
  /** tunnel pass over all flows, then uplink pass over all flows */
  hitAfterFullPass: number;
  /** second tunnel pass: share of packets whose entry was still current (no write needed) */
  currentOnSecondPass: number;
  /** tunnel then uplink for each packet, flows round-robin */
  hitPerPacket: number;
  /** bytes charged to the flows map (memlock in fdinfo) */
  flowsMemlock: number;
  /** all four maps of the instance */
  instanceMemlock: number;
  seconds: number;
}

export function memlock(fd: number): number {
  const m = /memlock:\s*(\d+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  return m ? Number(m[1]) : Number.NaN;
}

function counter(stats: BpfMap, which: number): number {
  const v = stats.lookup(u32Key(1)); // test_run skbs are on the loopback device, ifindex 1
  if (!v) return 0;
  let n = 0;
  for (let off = which * 8; off < v.length; off += 16 * 8) n += Number(v.readBigUInt64LE(off));
  return n;
}
const C_STORED = 2;
const C_CURRENT = 3;

export function runMapHit(objPath: string, storeName: string, size: number, flows: number): MapHitRow {
  const t0 = nowNs();
  const inner = eth(0x0800, ipv4(EF << 2, 6, tcp(40000, 5201, 64)));
  const outerPkt = eth(0x0800, ipv4(0, 17, udp(50000, MAP_PORT, Buffer.concat([Buffer.from([8, 0, 0, 0, 0, 0, 42, 0]), inner]))));
  const obj = loadBench(objPath, ['b_tmap_key', 'b_up_l2'], size);
  try {
    const cfg = new BpfMap(obj.mapFd(MAP_CONFIG));
    const stats = new BpfMap(obj.mapFd(MAP_STATS));
    cfg.update(u32Key(0), benchConfig());
    const tFd = obj.progFd('b_tmap_key');
    const uFd = obj.progFd('b_up_l2');
    const hashOf = (i: number) => mix32(i * 2654435761 + 0x1234567) || 1;
    const keys = new Uint32Array(flows);
    const tunnel = (i: number) => {
      const r = testRunRetry(tFd, inner, { repeat: 1, ctx: ctxWithMark(hashOf(i)) });
      keys[i] = r.ctx!.readUInt32LE(8);
    };
    const uplinkHit = (i: number) => dscpAt(testRunRetry(uFd, outerPkt, { repeat: 1, ctx: ctxWithMark(keys[i]) }).data, 14) === EF;

    // 1. tunnel pass over all flows, then uplink pass
    for (let i = 0; i < flows; i++) tunnel(i);
    let hits = 0;
    for (let i = 0; i < flows; i++) if (uplinkHit(i)) hits++;
    // 2. second tunnel pass: how many entries are still current
    const s0 = counter(stats, C_STORED);
    const c0 = counter(stats, C_CURRENT);
    for (let i = 0; i < flows; i++) tunnel(i);
    const stored = counter(stats, C_STORED) - s0;
    const current = counter(stats, C_CURRENT) - c0;
    // 3. steady state, per packet: tunnel side then uplink, flows round-robin
    let hits2 = 0;
    for (let i = 0; i < flows; i++) {
      tunnel(i);
      if (uplinkHit(i)) hits2++;
    }
    let total = 0;
    for (const m of ALL_MAPS) total += memlock(obj.mapFd(m));
    return {
      store: storeName,
      size,
      flows,
      hitAfterFullPass: hits / flows,
      currentOnSecondPass: current / Math.max(1, current + stored),
      hitPerPacket: hits2 / flows,
      flowsMemlock: memlock(obj.mapFd(MAP_FLOWS)),
      instanceMemlock: total,
      seconds: Number(nowNs() - t0) / 1e9,
    };
  } finally {
    obj.close();
  }
}
