import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Link } from '../../src/kernel/links.js';
import { IDENTITY_POLICY, type LinkRecord, PORT_HASH, PORT_MAP, PORT_WG, PORT_DST_SHIFT, portTable, CFG_UNCHECKED_MAP } from '../../src/layout.js';
import type { AttachedFilter, Observed } from '../../src/observe.js';
import { type Action, plan, PlanError } from '../../src/plan.js';

const MAPS = { pdscp_flows: 11, pdscp_config: 12, pdscp_stats: 13, pdscp_links: 14 };
const link = (ifindex: number, name: string, extra: Partial<Link> = {}): Link => ({ ifindex, name, linkType: 'ether', up: true, ...extra });
const wg = (ifindex: number, name: string) => link(ifindex, name, { linkType: 'none', kind: 'wireguard' });

function tunnelRec(t: Link, uplink: number, o: Partial<LinkRecord> = {}): LinkRecord {
  return { ifindex: t.ifindex, uplinkIfindex: uplink, role: 'tunnel', sport: 51820 + t.ifindex, dport: 0, carrier: 'hash', createdClsact: false, l3: true, wireguard: true, name: t.name, ...o };
}
function uplinkRec(u: Link, o: Partial<LinkRecord> = {}): LinkRecord {
  return { ifindex: u.ifindex, uplinkIfindex: 0, role: 'uplink', sport: 0, dport: 0, carrier: 'map', createdClsact: true, l3: false, wireguard: false, name: u.name, ...o };
}
function filter(l: { ifindex: number; name: string }, progName: string, flowsMapId = MAPS.pdscp_flows): AttachedFilter {
  return { ifindex: l.ifindex, ifname: l.name, progId: 100 + l.ifindex, progName, flowsMapId };
}

function observed(links: Link[], records: LinkRecord[], filters: AttachedFilter[], ports: Record<string, number> = {}): Observed {
  const { ports: table, uncheckedMap } = portTable(records);
  return {
    links,
    filters,
    foreign: [],
    wireguardPorts: ports,
    instance: records.length || filters.length
      ? { mapIds: MAPS, flowsMaxEntries: 16384, config: { key: 7, flags: uncheckedMap ? CFG_UNCHECKED_MAP : 0, policy: [...IDENTITY_POLICY], ports: table }, records }
      : undefined,
  };
}

const eth0 = link(2, 'eth0');
const eth1 = link(3, 'eth1');
const wg0 = wg(10, 'wg0');
const wg1 = wg(11, 'wg1');
const wg2 = wg(12, 'wg2');
const wg3 = wg(13, 'wg3');
const lo = link(1, 'lo', { linkType: 'loopback' });

/** Three tunnels on eth0, all attached. */
function threeTunnels(extraLinks: Link[] = []): Observed {
  const links = [lo, eth0, eth1, wg0, wg1, wg2, ...extraLinks];
  const recs = [uplinkRec(eth0), tunnelRec(wg0, 2), tunnelRec(wg1, 2), tunnelRec(wg2, 2)];
  const filters = [filter(eth0, 'pdscp_up_l2'), filter(wg0, 'pdscp_thash_l3'), filter(wg1, 'pdscp_thash_l3'), filter(wg2, 'pdscp_thash_l3')];
  return observed(links, recs, filters, { wg0: 51830, wg1: 51831, wg2: 51832, wg3: 51833 });
}

const ops = (a: Action[]) => a.map((x) => `${x.op}${'ifname' in x ? `:${x.ifname}` : ''}${x.op === 'register' ? `:${x.record.name}` : ''}${x.op === 'unregister' ? `:${x.ifindex}/${x.uplinkIfindex}` : ''}`);

test('first attach: load new maps, registry and ports before the uplink, then the tunnel', () => {
  const obs = observed([lo, eth0, wg0], [], [], { wg0: 51820 });
  const p = plan(obs, { op: 'attach', tunnels: ['wg0'], uplink: 'eth0', carrier: 'auto' }, 99);
  assert.deepEqual(ops(p.actions), ['load', 'register:eth0', 'register:wg0', 'config', 'attach:eth0', 'attach:wg0']);
  const load = p.actions[0] as Extract<Action, { op: 'load' }>;
  assert.equal(load.reuse, false);
  assert.equal(load.mapSize, 16384);
  assert.deepEqual(load.programs.sort(), ['pdscp_thash_l3', 'pdscp_up_l2']);
  const cfg = p.actions.find((a) => a.op === 'config') as Extract<Action, { op: 'config' }>;
  assert.equal(cfg.config.key, 99);
  assert.equal(cfg.config.ports[51820], PORT_HASH | PORT_WG);
  const wgReg = p.actions.find((a) => a.op === 'register' && a.record.name === 'wg0') as Extract<Action, { op: 'register' }>;
  assert.equal(wgReg.record.carrier, 'hash');
  assert.equal(wgReg.record.sport, 51820);
});

test('adding a fourth tunnel touches nothing else', () => {
  const obs = threeTunnels([wg3]);
  for (const tunnels of [['wg3'], ['wg0', 'wg1', 'wg2', 'wg3']]) {
    const p = plan(obs, { op: 'attach', tunnels, uplink: 'eth0', carrier: 'auto' }, 5);
    assert.deepEqual(ops(p.actions), ['load', 'register:wg3', 'config', 'attach:wg3'], tunnels.join(','));
    const load = p.actions[0] as Extract<Action, { op: 'load' }>;
    assert.equal(load.reuse, true);
    assert.deepEqual(load.programs, ['pdscp_thash_l3']);
    const cfg = p.actions[2] as Extract<Action, { op: 'config' }>;
    assert.equal(cfg.config.key, 7, 'keeps the existing key');
  }
});

test('the same attach again does nothing', () => {
  const obs = threeTunnels();
  const p = plan(obs, { op: 'attach', tunnels: ['wg0', 'wg1', 'wg2'], uplink: 'eth0', carrier: 'auto' }, 5);
  assert.deepEqual(p.actions, []);
});

test('changing the carrier replaces the filter atomically', () => {
  const p = plan(threeTunnels(), { op: 'attach', tunnels: ['wg1'], uplink: 'eth0', carrier: 'map' }, 5);
  assert.deepEqual(ops(p.actions), ['load', 'register:wg1', 'config', 'attach:wg1']);
  const att = p.actions[3] as Extract<Action, { op: 'attach' }>;
  assert.equal(att.replace, true);
  assert.equal(att.program, 'pdscp_tmap_l3');
  const cfg = p.actions[2] as Extract<Action, { op: 'config' }>;
  assert.equal(cfg.config.ports[51831], PORT_MAP | PORT_WG);
});

test('unload of a deleted tunnel: registry only, uplink stays', () => {
  const obs = threeTunnels();
  obs.links = obs.links.filter((l) => l.name !== 'wg1');
  obs.filters = obs.filters.filter((f) => f.ifname !== 'wg1');
  const p = plan(obs, { op: 'unload', names: ['wg1', 'eth0'] }, 5);
  assert.deepEqual(ops(p.actions), ['unregister:11/2', 'config']);
  const cfg = p.actions[1] as Extract<Action, { op: 'config' }>;
  assert.equal(cfg.config.ports[51831], 0);
  assert.equal(cfg.config.ports[51830], PORT_HASH | PORT_WG);
});

test('unloading the last tunnel removes the uplink, and the clsact it added', () => {
  const obs = observed([lo, eth0, wg0], [uplinkRec(eth0), tunnelRec(wg0, 2)], [filter(eth0, 'pdscp_up_l2'), filter(wg0, 'pdscp_thash_l3')]);
  const p = plan(obs, { op: 'unload', names: ['wg0', 'eth0'] }, 5);
  assert.deepEqual(ops(p.actions), ['detach:wg0', 'unregister:10/2', 'unregister:2/0', 'config', 'detach:eth0', 'cleanupClsact:eth0']);
});

test("unloading a tunnel that is already gone from the registry leaves the uplink's other tunnels", () => {
  const obs = threeTunnels();
  obs.instance!.records = obs.instance!.records.filter((r) => r.name !== 'wg1');
  obs.filters = obs.filters.filter((f) => f.ifname !== 'wg1');
  const p = plan(obs, { op: 'unload', names: ['wg1', 'eth0'] }, 5);
  assert.deepEqual(ops(p.actions), ['config']);
  assert.match(p.notes.join(), /wg1: nothing installed/);
});

test('a lone uplink name removes it with all its tunnels', () => {
  const p = plan(threeTunnels(), { op: 'unload', names: ['eth0'] }, 5);
  assert.deepEqual(ops(p.actions).sort(), ['cleanupClsact:eth0', 'config', 'detach:eth0', 'detach:wg0', 'detach:wg1', 'detach:wg2', 'unregister:10/2', 'unregister:11/2', 'unregister:12/2', 'unregister:2/0'].sort());
});

test('failover: a tunnel on two uplinks keeps its filter until its last pair goes', () => {
  const links = [lo, eth0, eth1, wg0];
  const recs = [uplinkRec(eth0), uplinkRec(eth1), tunnelRec(wg0, 2), tunnelRec(wg0, 3)];
  const filters = [filter(eth0, 'pdscp_up_l2'), filter(eth1, 'pdscp_up_l2'), filter(wg0, 'pdscp_thash_l3')];
  const obs = observed(links, recs, filters, { wg0: 51830 });
  const add = plan(observed(links, [uplinkRec(eth0), tunnelRec(wg0, 2)], filters.filter((f) => f.ifname !== 'eth1'), { wg0: 51830 }), { op: 'attach', tunnels: ['wg0'], uplink: 'eth1', carrier: 'auto' }, 5);
  assert.deepEqual(ops(add.actions), ['load', 'register:eth1', 'register:wg0', 'attach:eth1']);
  const p = plan(obs, { op: 'unload', names: ['wg0', 'eth1'] }, 5);
  assert.deepEqual(ops(p.actions), ['unregister:10/3', 'unregister:3/0', 'detach:eth1', 'cleanupClsact:eth1']);
});

test('gc: deleted tunnel records go; an uplink left without tunnels goes', () => {
  const obs = observed([lo, eth0], [uplinkRec(eth0), tunnelRec(wg0, 2), tunnelRec(wg1, 2)], [filter(eth0, 'pdscp_up_l2')]);
  const p = plan(obs, { op: 'gc' }, 5);
  assert.deepEqual(ops(p.actions), ['unregister:10/2', 'unregister:11/2', 'unregister:2/0', 'config', 'detach:eth0', 'cleanupClsact:eth0']);
});

test('gc with nothing to collect does nothing', () => {
  assert.deepEqual(plan(threeTunnels(), { op: 'gc' }, 5).actions, []);
});

test('gc removes a filter of ours that no record explains', () => {
  const obs = threeTunnels([wg3]);
  obs.filters.push(filter(wg3, 'pdscp_thash_l3'));
  assert.deepEqual(ops(plan(obs, { op: 'gc' }, 5).actions), ['detach:wg3']);
});

test('gc: a tunnel whose uplink vanished loses its pair and, with no pair left, its filter', () => {
  const obs = threeTunnels();
  obs.links = obs.links.filter((l) => l.name !== 'eth0');
  obs.filters = obs.filters.filter((f) => f.ifname !== 'eth0');
  const actions = ops(plan(obs, { op: 'gc' }, 5).actions);
  for (const t of ['wg0', 'wg1', 'wg2']) assert.ok(actions.includes(`detach:${t}`), actions.join(' '));
  assert.ok(actions.includes('unregister:2/0'));
});

test('unknown carrier port: auto picks the map carrier without the port check, with a note', () => {
  const tun = link(20, 'tun0', { linkType: 'none', kind: 'tun' });
  const p = plan(observed([lo, eth0, tun], [], []), { op: 'attach', tunnels: ['tun0'], uplink: 'eth0', carrier: 'auto' }, 5);
  const att = p.actions.find((a) => a.op === 'attach' && a.ifname === 'tun0') as Extract<Action, { op: 'attach' }>;
  assert.equal(att.program, 'pdscp_tmapu_l3');
  const cfg = p.actions.find((a) => a.op === 'config') as Extract<Action, { op: 'config' }>;
  assert.equal(cfg.config.flags, CFG_UNCHECKED_MAP);
  assert.match(p.notes.join(), /outer port unknown/);
});

test('VXLAN: destination port from the device, hash carrier by default', () => {
  const vx = link(30, 'vx0', { kind: 'vxlan', udpDport: 4789 });
  const p = plan(observed([lo, eth0, vx], [], []), { op: 'attach', tunnels: ['vx0'], uplink: 'eth0', carrier: 'auto' }, 5);
  const att = p.actions.find((a) => a.op === 'attach' && a.ifname === 'vx0') as Extract<Action, { op: 'attach' }>;
  assert.equal(att.program, 'pdscp_thash_l2');
  const cfg = p.actions.find((a) => a.op === 'config') as Extract<Action, { op: 'config' }>;
  assert.equal(cfg.config.ports[4789], PORT_HASH << PORT_DST_SHIFT);
});

test('filters of another instance are moved onto the instance', () => {
  const obs = threeTunnels();
  obs.filters[1] = filter(wg0, 'pdscp_thash_l3', 999);
  const p = plan(obs, { op: 'attach', tunnels: ['wg0'], uplink: 'eth0', carrier: 'auto' }, 5);
  assert.deepEqual(ops(p.actions), ['load', 'attach:wg0']);
});

const errors: Array<[string, Parameters<typeof plan>[1], RegExp, number]> = [
  ['unknown interface', { op: 'attach', tunnels: ['wg9'], uplink: 'eth0' }, /wg9: no such interface/, 1],
  ['tunnel is the uplink', { op: 'attach', tunnels: ['eth0'], uplink: 'eth0' }, /both a tunnel and the uplink/, 2],
  ['loopback', { op: 'attach', tunnels: ['wg0'], uplink: 'lo' }, /loopback/, 1],
  ['name too long', { op: 'attach', tunnels: ['a-very-long-interface-name'], uplink: 'eth0' }, /invalid interface name/, 2],
  ['odd characters', { op: 'attach', tunnels: ['wg/0'], uplink: 'eth0' }, /invalid interface name/, 2],
  ['uplink used as tunnel', { op: 'attach', tunnels: ['eth0'], uplink: 'eth1' }, /uplink of preserve-dscp/, 1],
  ['tunnel used as uplink', { op: 'attach', tunnels: ['wg2'], uplink: 'wg0' }, /tunnel of preserve-dscp/, 1],
  ['map size change', { op: 'attach', tunnels: ['wg0'], uplink: 'eth0', mapSize: 1000 }, /--map-size/, 1],
  ['hash carrier without a port', { op: 'attach', tunnels: ['wg0'], uplink: 'eth0', carrier: 'hash', outerCheck: false }, /needs the tunnel's outer UDP port/, 2],
  ['unload of nothing', { op: 'unload', names: ['nope0'] }, /nothing recorded/, 1],
];
for (const [name, req, re, code] of errors) {
  test(`refused: ${name}`, () => {
    assert.throws(() => plan(threeTunnels(), req, 5), (e: unknown) => e instanceof PlanError && re.test(e.message) && e.exitCode === code);
  });
}

test('a foreign program at our handle and priority is refused', () => {
  const obs = threeTunnels([wg3]);
  obs.foreign.push({ ifindex: wg3.ifindex, ifname: 'wg3', progName: 'other' });
  assert.throws(() => plan(obs, { op: 'attach', tunnels: ['wg3'], uplink: 'eth0' }, 5), /another program/);
});
