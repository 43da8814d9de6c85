import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseArgs, UsageError } from '../../src/cli/args.js';

test('tunnel(s) then uplink attaches, reference-tool form', () => {
  const c = parseArgs(['wg0', 'eth0']);
  assert.equal(c.cmd, 'attach');
  if (c.cmd !== 'attach') return;
  assert.deepEqual(c.tunnels, ['wg0']);
  assert.equal(c.uplink, 'eth0');
  assert.equal(c.carrier, 'auto');
  assert.equal(c.outerCheck, true);
});

test('several tunnels and options in any position', () => {
  const c = parseArgs(['--carrier', 'map', 'wg0', 'wg1', '--map-size=65536', 'wg2', 'eth0', '--policy', 'ef,af41']);
  assert.equal(c.cmd, 'attach');
  if (c.cmd !== 'attach') return;
  assert.deepEqual(c.tunnels, ['wg0', 'wg1', 'wg2']);
  assert.equal(c.mapSize, 65536);
  assert.equal(c.carrier, 'map');
  assert.equal(c.policy?.[46], 46);
  assert.equal(c.policy?.[34], 34);
  assert.equal(c.policy?.[8], 0);
});

test('--unload with names, also a lone name', () => {
  assert.deepEqual(parseArgs(['wg1', 'eth0', '--unload']), { cmd: 'unload', names: ['wg1', 'eth0'], verbose: false, json: false });
  assert.deepEqual(parseArgs(['--unload', 'eth0']), { cmd: 'unload', names: ['eth0'], verbose: false, json: false });
});

test('subcommands', () => {
  assert.deepEqual(parseArgs(['status', '--json']), { cmd: 'status', json: true });
  assert.deepEqual(parseArgs(['gc']), { cmd: 'gc', json: false, verbose: false });
  assert.equal(parseArgs(['--help']).cmd, 'help');
  assert.equal(parseArgs(['-V']).cmd, 'version');
  const p = parseArgs(['policy', 'ef,*=keep']);
  assert.equal(p.cmd, 'policy');
  if (p.cmd === 'policy') assert.equal(p.policy?.[10], 10);
});

test('ports', () => {
  const c = parseArgs(['--outer-sport', '51820', 'tun0', 'eth0']);
  assert.equal(c.cmd === 'attach' && c.sport, 51820);
  const d = parseArgs(['--outer-dport=4789', 'vx0', 'eth0']);
  assert.equal(d.cmd === 'attach' && d.dport, 4789);
});

const bad: Array<[string[], RegExp]> = [
  [[], /no interfaces given/],
  [['wg0'], /at least one tunnel/],
  [['--frobnicate', 'wg0', 'eth0'], /unknown option --frobnicate/],
  [['--carrier', 'pigeon', 'wg0', 'eth0'], /--carrier is map, hash or auto/],
  [['--map-size', '0', 'wg0', 'eth0'], /--map-size/],
  [['--map-size', 'lots', 'wg0', 'eth0'], /--map-size/],
  [['--outer-sport', '70000', 'wg0', 'eth0'], /UDP port/],
  [['--policy', 'xx', 'wg0', 'eth0'], /unknown DSCP class/],
  [['--policy', '64', 'wg0', 'eth0'], /out of range/],
  [['--carrier'], /needs a value/],
  [['status', 'wg0'], /status takes no interface/],
  [['status', '--carrier', 'map'], /does not apply/],
  [['--no-outer-check', '--carrier', 'hash', 'wg0', 'eth0'], /always checks/],
  [['--unload', '--carrier', 'map', 'wg0', 'eth0'], /does not apply/],
];
for (const [argv, re] of bad) {
  test(`usage error: ${argv.join(' ') || '(none)'}`, () => {
    assert.throws(() => parseArgs(argv), (e: unknown) => e instanceof UsageError && re.test(e.message));
  });
}
