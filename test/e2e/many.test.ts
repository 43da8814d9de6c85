/**
 * Many tunnels on one uplink (the access-concentrator case): one shared
 * state, live add and remove under a running flow, unload after the
 * interface is gone, gc, the lock, isolation of identical inner flows,
 * failover to a second uplink, the DSCP policy and status.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sh } from '../../src/demo/exec.js';
import { Capture } from '../../src/demo/capture.js';
import { cli, cliOk, requireBuild, tcFilters } from './lib/env.js';
import { guardNamespaces, withLab } from './lib/lab.js';
import { addStarTunnel, makeStar, sendUdp } from './lib/star.js';

requireBuild();
guardNamespaces();

const EF = 46 << 2;
const CS1 = 8 << 2;
const AF41 = 34 << 2;

interface StatusJson {
  loaded: boolean;
  flows?: { entries: number; capacity: number };
  policy?: string;
  interfaces: { ifname: string; role: string; present: boolean; attached: boolean; carrier?: string; uplinks?: string[]; tunnels?: string[]; counters?: Record<string, number> }[];
}
async function status(ns: string): Promise<StatusJson> {
  return JSON.parse(await cliOk(ns, ['status', '--json']));
}
function ours(ns: string, dev: string) {
  return tcFilters(ns, dev).filter((f) => f.progName?.startsWith('pdscp_'));
}

test('live add and remove: a running flow on vx0 never loses its DSCP', async () => {
  await withLab('live add', async (lab) => {
    const s = makeStar(lab, 4);
    await cliOk(s.a, ['vx0', 'vx1', 'vx2', 'up0']);
    const before = ours(s.a, 'vx0')[0];
    const cap = await Capture.start(s.a, 'up0', 'udp and dst port 4789', { direction: 'out' });
    const flow = sendUdp(s.a, [{ family: 4, dst: s.innerB(0), dport: 9000, tclasses: [EF], count: 3000, gapUs: 700 }]);
    // Changes while the flow runs: add vx3 (two forms), unload vx1, add it back.
    await cliOk(s.a, ['vx3', 'up0']);
    await cliOk(s.a, ['vx0', 'vx1', 'vx2', 'vx3', 'up0']);
    await cliOk(s.a, ['vx1', 'up0', '--unload']);
    await cliOk(s.a, ['vx1', 'up0']);
    await flow;
    const pkts = (await cap.stop()).filter((p) => p.vni === s.vni(0) && p.inner?.dport === 9000);
    const wrong = pkts.filter((p) => p.outer.dscp !== 46).length;
    console.log(`live add/remove: ${wrong} of ${pkts.length} outer packets of vx0 without their DSCP`);
    assert.ok(pkts.length >= 2900, `captured ${pkts.length} packets`);
    assert.equal(wrong, 0);
    const after = ours(s.a, 'vx0')[0];
    assert.equal(after.progName, before.progName);
    assert.deepEqual(ours(s.a, 'up0').length, 1);
    const st = await status(s.a);
    assert.deepEqual(st.interfaces.find((i) => i.role === 'uplink')?.tunnels?.sort(), ['vx0', 'vx1', 'vx2', 'vx3']);
  });
});

test('one shared state: every tunnel program uses the same maps', async () => {
  await withLab('shared maps', async (lab) => {
    const s = makeStar(lab, 3);
    await cliOk(s.a, ['--carrier', 'map', 'vx0', 'vx1', 'up0']);
    await cliOk(s.a, ['--carrier', 'map', 'vx2', 'up0']);
    const ids = (dev: string) => {
      const id = ours(s.a, dev)[0] as unknown as { progName: string };
      const info = sh('tc', ['-n', s.a, 'filter', 'show', 'dev', dev, 'egress']);
      const progId = /id (\d+)/.exec(info)?.[1];
      assert.ok(progId, `${dev}: ${id.progName}`);
      const show = JSON.parse(sh('bpftool', ['-j', 'prog', 'show', 'id', progId]));
      return (show.map_ids as number[]).slice().sort((x, y) => x - y);
    };
    const up = ids('up0');
    for (const t of ['vx0', 'vx1', 'vx2']) assert.deepEqual(ids(t), up, `${t} shares the uplink's maps`);
  });
});

test('unload after ip link del, and the uplink goes with the last tunnel', async () => {
  await withLab('unload gone', async (lab) => {
    const s = makeStar(lab, 2);
    await cliOk(s.a, ['vx0', 'vx1', 'up0']);
    sh('ip', ['-n', s.a, 'link', 'del', 'vx1']);
    const r = await cli(s.a, ['vx1', 'up0', '--unload']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(ours(s.a, 'up0').length, 1, 'uplink stays: vx0 still uses it');
    let st = await status(s.a);
    assert.deepEqual(st.interfaces.map((i) => i.ifname).sort(), ['up0', 'vx0']);
    sh('ip', ['-n', s.a, 'link', 'del', 'vx0']);
    assert.equal((await cli(s.a, ['vx0', 'up0', '--unload'])).code, 0);
    assert.equal(ours(s.a, 'up0').length, 0, 'uplink program removed with the last tunnel');
    st = await status(s.a);
    assert.equal(st.loaded, false);
  });
});

test('gc removes what deleted tunnels left behind, and nothing else', async () => {
  await withLab('gc', async (lab) => {
    const s = makeStar(lab, 3, 2);
    await cliOk(s.a, ['vx0', 'vx1', 'up0']);
    await cliOk(s.a, ['vx2', 'up1']);
    assert.equal((await cli(s.a, ['gc'])).code, 0);
    assert.equal(ours(s.a, 'up0').length, 1, 'gc with nothing to do changes nothing');
    sh('ip', ['-n', s.a, 'link', 'del', 'vx0']);
    sh('ip', ['-n', s.a, 'link', 'del', 'vx1']);
    await cliOk(s.a, ['gc']);
    assert.equal(ours(s.a, 'up0').length, 0, 'up0 lost its last tunnel');
    assert.equal(ours(s.a, 'up1').length, 1, 'up1 still serves vx2');
    assert.equal(ours(s.a, 'vx2').length, 1);
    const st = await status(s.a);
    assert.deepEqual(st.interfaces.map((i) => i.ifname).sort(), ['up1', 'vx2']);
    // gc is safe to repeat.
    await cliOk(s.a, ['gc']);
    assert.equal(ours(s.a, 'vx2').length, 1);
  });
});

test('20 invocations at once end in the requested state', async () => {
  await withLab('lock', async (lab) => {
    const s = makeStar(lab, 12);
    await cliOk(s.a, ['vx10', 'vx11', 'up0']);
    const jobs: Promise<{ code: number; stderr: string }>[] = [];
    for (let i = 0; i < 10; i++) jobs.push(cli(s.a, [`vx${i}`, 'up0']));
    jobs.push(cli(s.a, ['vx10', 'up0', '--unload']), cli(s.a, ['vx11', 'up0', '--unload']));
    for (let i = 0; i < 4; i++) jobs.push(cli(s.a, ['gc']), cli(s.a, ['status']));
    const results = await Promise.all(jobs);
    results.forEach((r, i) => assert.equal(r.code, 0, `job ${i}: ${r.stderr}`));
    for (let i = 0; i < 10; i++) assert.equal(ours(s.a, `vx${i}`).length, 1, `vx${i} has exactly one filter`);
    assert.equal(ours(s.a, 'vx10').length + ours(s.a, 'vx11').length, 0, 'unloaded tunnels have none');
    assert.equal(ours(s.a, 'up0').length, 1);
    const st = await status(s.a);
    assert.deepEqual(
      st.interfaces.filter((i) => i.role === 'tunnel').map((i) => i.ifname).sort(),
      Array.from({ length: 10 }, (_, i) => `vx${i}`).sort(),
    );
    assert.ok(st.interfaces.every((i) => i.attached), 'no orphan record');
  });
});

for (const carrier of ['map', 'hash'] as const) {
  test(`isolation (${carrier} carrier): identical fe80::1 -> fe80::2 flows on two tunnels keep their own DSCP`, async () => {
    await withLab(`iso ll ${carrier}`, async (lab) => {
      const s = makeStar(lab, 2);
      await cliOk(s.a, ['--carrier', carrier, 'vx0', 'vx1', 'up0']);
      const cap = await Capture.start(s.a, 'up0', 'udp and dst port 4789', { direction: 'out' });
      await sendUdp(s.a, [
        { family: 6, src: 'fe80::1', sport: 6696, dst: 'fe80::2', dport: 6696, dev: 'vx0', tclasses: [EF], count: 400, gapUs: 300 },
        { family: 6, src: 'fe80::1', sport: 6696, dst: 'fe80::2', dport: 6696, dev: 'vx1', tclasses: [CS1], count: 400, gapUs: 300 },
      ]);
      const pkts = (await cap.stop()).filter((p) => p.inner?.dport === 6696);
      for (const [i, want] of [[0, 46], [1, 8]] as const) {
        const mine = pkts.filter((p) => p.vni === s.vni(i));
        const wrong = mine.filter((p) => p.outer.dscp !== want).length;
        console.log(`isolation ${carrier} vx${i}: ${mine.length} packets, ${wrong} with another DSCP than ${want}`);
        assert.ok(mine.length >= 390);
        assert.equal(wrong, 0);
      }
    });
  });
}

test('isolation: a router forwards the same 5-tuple from two clients into two tunnels', async () => {
  await withLab('iso router', async (lab) => {
    const s = makeStar(lab, 2);
    // Two clients with the same address behind the router (namespace a).
    const clients = [lab.netns('c'), lab.netns('c')];
    clients.forEach((c, i) => {
      sh('ip', ['-n', c, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', `lan${i}`, 'netns', s.a]);
      sh('ip', ['-n', c, 'addr', 'add', '192.168.1.2/24', 'dev', 'eth0']);
      sh('ip', ['-n', c, 'link', 'set', 'eth0', 'up']);
      sh('ip', ['-n', c, 'route', 'add', 'default', 'via', '192.168.1.1']);
      sh('ip', ['-n', s.a, 'addr', 'add', '192.168.1.1/24', 'dev', `lan${i}`]);
      sh('ip', ['-n', s.a, 'link', 'set', `lan${i}`, 'up']);
      // Each LAN is routed into its own tunnel (policy routing by input interface).
      sh('ip', ['-n', s.a, 'rule', 'add', 'iif', `lan${i}`, 'table', String(100 + i)]);
      sh('ip', ['-n', s.a, 'route', 'add', '172.31.0.0/16', 'via', s.innerB(i), 'dev', `vx${i}`, 'table', String(100 + i)]);
    });
    sh('ip', ['netns', 'exec', s.a, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    const mac0 = JSON.parse(sh('ip', ['-n', s.a, '-j', 'link', 'show', 'lan0']))[0].address;
    const mac1 = JSON.parse(sh('ip', ['-n', s.a, '-j', 'link', 'show', 'lan1']))[0].address;
    sh('ip', ['-n', clients[0], 'neigh', 'replace', '192.168.1.1', 'lladdr', mac0, 'dev', 'eth0', 'nud', 'permanent']);
    sh('ip', ['-n', clients[1], 'neigh', 'replace', '192.168.1.1', 'lladdr', mac1, 'dev', 'eth0', 'nud', 'permanent']);
    for (const carrier of ['map', 'hash']) {
      await cliOk(s.a, ['--carrier', carrier, 'vx0', 'vx1', 'up0']);
      const cap = await Capture.start(s.a, 'up0', 'udp and dst port 4789', { direction: 'out' });
      await Promise.all([
        sendUdp(clients[0], [{ family: 4, src: '192.168.1.2', sport: 5000, dst: '172.31.0.9', dport: 6000, tclasses: [EF], count: 300, gapUs: 500 }]),
        sendUdp(clients[1], [{ family: 4, src: '192.168.1.2', sport: 5000, dst: '172.31.0.9', dport: 6000, tclasses: [AF41], count: 300, gapUs: 500 }]),
      ]);
      const pkts = (await cap.stop()).filter((p) => p.inner?.dport === 6000);
      for (const [i, want] of [[0, 46], [1, 34]] as const) {
        const mine = pkts.filter((p) => p.vni === s.vni(i));
        const wrong = mine.filter((p) => p.outer.dscp !== want).length;
        console.log(`router isolation ${carrier} vx${i}: ${mine.length} packets, ${wrong} wrong`);
        assert.ok(mine.length >= 290, `vx${i}: ${mine.length} packets`);
        assert.equal(wrong, 0);
      }
    }
  });
});

test('failover: the tunnel keeps its DSCP when routing moves it to the second uplink', async () => {
  await withLab('failover', async (lab) => {
    const s = makeStar(lab, 1, 2);
    await cliOk(s.a, ['vx0', 'up0']);
    await cliOk(s.a, ['vx0', 'up1']);
    for (const [uplink, via] of [['up0', s.underB[0]], ['up1', s.underB[1]]] as const) {
      if (uplink === 'up1') sh('ip', ['-n', s.a, 'route', 'replace', `${s.underB[0]}/32`, 'via', via, 'dev', 'up1']);
      const cap = await Capture.start(s.a, uplink, 'udp and dst port 4789', { direction: 'out' });
      await sendUdp(s.a, [{ family: 4, dst: s.innerB(0), dport: 9100, tclasses: [EF, CS1], count: 200, gapUs: 300 }]);
      const pkts = (await cap.stop()).filter((p) => p.inner?.dport === 9100);
      const wrong = pkts.filter((p) => p.outer.dscp !== p.inner?.dscp).length;
      console.log(`failover via ${uplink}: ${pkts.length} packets, ${wrong} wrong`);
      assert.ok(pkts.length >= 190, `${uplink}: ${pkts.length}`);
      assert.equal(wrong, 0);
    }
    // Unloading the pair with up1 leaves the tunnel on up0.
    await cliOk(s.a, ['vx0', 'up1', '--unload']);
    assert.equal(ours(s.a, 'up1').length, 0);
    assert.equal(ours(s.a, 'vx0').length, 1);
    assert.equal(ours(s.a, 'up0').length, 1);
  });
});

test('policy: carry only EF and AF41, then all, without reattaching', async () => {
  await withLab('policy', async (lab) => {
    const s = makeStar(lab, 1);
    await cliOk(s.a, ['--policy', 'ef,af41', 'vx0', 'up0']);
    const progs = () => sh('tc', ['-n', s.a, 'filter', 'show', 'dev', 'vx0', 'egress']) + sh('tc', ['-n', s.a, 'filter', 'show', 'dev', 'up0', 'egress']);
    const before = progs();
    const run = async (port: number) => {
      const cap = await Capture.start(s.a, 'up0', 'udp and dst port 4789', { direction: 'out' });
      await sendUdp(s.a, [{ family: 4, dst: s.innerB(0), dport: port, tclasses: [EF, AF41, CS1, 10 << 2], count: 200, gapUs: 200 }]);
      return (await cap.stop()).filter((p) => p.inner?.dport === port);
    };
    let pkts = await run(9200);
    for (const p of pkts) assert.equal(p.outer.dscp, [46, 34].includes(p.inner?.dscp ?? -1) ? p.inner?.dscp : 0, `inner ${p.inner?.dscp}`);
    assert.match(JSON.stringify(await status(s.a)), /"policy": ?"AF41,EF,\*=0"/);
    await cliOk(s.a, ['policy', 'all']);
    pkts = await run(9201);
    assert.ok(pkts.length >= 190);
    for (const p of pkts) assert.equal(p.outer.dscp, p.inner?.dscp);
    assert.equal(progs(), before, 'same filters and programs');
  });
});

test('capacity and status: map size, LRU, tunnels per uplink, counters', async () => {
  await withLab('status', async (lab) => {
    const s = makeStar(lab, 2);
    await cliOk(s.a, ['--carrier', 'map', '--map-size', '1000', 'vx0', 'vx1', 'up0']);
    await sendUdp(s.a, [{ family: 4, dst: s.innerB(0), dport: 9300, tclasses: [EF], newSocketPerPacket: true, count: 1500 }]);
    const st = await status(s.a);
    assert.equal(st.flows?.capacity, 1000);
    assert.ok((st.flows?.entries ?? 0) <= 1000 && (st.flows?.entries ?? 0) > 900, `LRU keeps the map full but bounded: ${st.flows?.entries}`);
    const vx0 = st.interfaces.find((i) => i.ifname === 'vx0');
    const up = st.interfaces.find((i) => i.ifname === 'up0');
    assert.equal(vx0?.carrier, 'map');
    assert.deepEqual(vx0?.uplinks, ['up0']);
    assert.deepEqual(up?.tunnels?.sort(), ['vx0', 'vx1']);
    assert.ok((vx0?.counters?.stored ?? 0) >= 1500, JSON.stringify(vx0?.counters));
    assert.ok((up?.counters?.rewritten ?? 0) >= 1500, JSON.stringify(up?.counters));
    const human = await cliOk(s.a, ['status']);
    assert.match(human, /flows in map: \d+ \/ 1000/);
    assert.match(human, /up0\s+uplink\s+attached/);
    // A different map size while loaded is refused, and changes nothing.
    const r = await cli(s.a, ['--map-size', '5000', 'vx0', 'up0']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--map-size/);
    assert.equal((await status(s.a)).flows?.capacity, 1000);
  });
});

test('per-packet marks: one 5-tuple cycling EF/AF41/CS1/0 behind a queue', async () => {
  await withLab('per packet', async (lab) => {
    const s = makeStar(lab, 2);
    // A tbf queue on the tunnel devices holds packets between the two hooks.
    for (const t of ['vx0', 'vx1']) sh('tc', ['-n', s.a, 'qdisc', 'add', 'dev', t, 'root', 'tbf', 'rate', '8mbit', 'burst', '4kb', 'limit', '2mb']);
    await cliOk(s.a, ['--carrier', 'hash', 'vx0', 'up0']);
    await cliOk(s.a, ['--carrier', 'map', 'vx1', 'up0']);
    const cap = await Capture.start(s.a, 'up0', 'udp and dst port 4789', { direction: 'out' });
    await Promise.all([0, 1].map((i) => sendUdp(s.a, [{ family: 4, dst: s.innerB(i), dport: 9400, sport: 9401, tclasses: [EF, AF41, CS1, 0], count: 3000 }])));
    await new Promise((r) => setTimeout(r, 1500)); // drain the queues
    const pkts = (await cap.stop()).filter((p) => p.inner?.dport === 9400);
    const wrong = (i: number) => {
      const mine = pkts.filter((p) => p.vni === s.vni(i));
      return { n: mine.length, wrong: mine.filter((p) => p.outer.dscp !== p.inner?.dscp).length };
    };
    const hash = wrong(0);
    const map = wrong(1);
    console.log(`per-packet marks behind tbf: hash carrier ${hash.wrong} wrong of ${hash.n}; map carrier ${map.wrong} wrong of ${map.n}`);
    assert.ok(hash.n >= 2900, `hash carrier: ${hash.n} packets captured`);
    assert.equal(hash.wrong, 0);
  });
});

test('safety: 10,000 unrelated flows on the uplink are never remarked', async () => {
  await withLab('safety', async (lab) => {
    const s = makeStar(lab, 1);
    await cliOk(s.a, ['vx0', 'up0']);
    // Unrelated UDP from connected sockets (their hashes are set), DSCP 0,
    // straight over the uplink to B.
    const cap = await Capture.start(s.a, 'up0', 'udp and dst port 7777', { direction: 'out' });
    await sendUdp(s.a, [{ family: 4, dst: s.underB[0], dport: 7777, tclasses: [0], newSocketPerPacket: true, count: 10000 }]);
    const pkts = await cap.stop(300);
    const st = await status(s.a);
    console.log(`safety: ${pkts.length} unrelated packets captured, ${pkts.filter((p) => p.outer.dscp !== 0).length} remarked`);
    assert.ok(pkts.length >= 9900, `${pkts.length}`);
    assert.equal(pkts.filter((p) => p.outer.dscp !== 0).length, 0);
    const up = st.interfaces.find((i) => i.ifname === 'up0');
    assert.ok((up?.counters?.notTunnel ?? 0) >= 9900, JSON.stringify(up?.counters));
  });
});

test('a tunnel added later (new device) joins without touching the others', async () => {
  await withLab('new device', async (lab) => {
    const s = makeStar(lab, 1);
    await cliOk(s.a, ['vx0', 'up0']);
    const before = sh('tc', ['-n', s.a, 'filter', 'show', 'dev', 'up0', 'egress']);
    addStarTunnel(s, 1);
    await cliOk(s.a, ['vx1', 'up0']);
    assert.equal(sh('tc', ['-n', s.a, 'filter', 'show', 'dev', 'up0', 'egress']), before);
    const cap = await Capture.start(s.a, 'up0', 'udp and dst port 4789', { direction: 'out' });
    await sendUdp(s.a, [{ family: 4, dst: s.innerB(1), dport: 9500, tclasses: [AF41], count: 50 }]);
    const pkts = (await cap.stop()).filter((p) => p.inner?.dport === 9500);
    assert.ok(pkts.length >= 45);
    for (const p of pkts) assert.equal(p.outer.dscp, 34);
  });
});
