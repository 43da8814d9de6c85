/**
 * Deployment paths: the watch daemon reacting to links, the OpenWrt hotplug
 * and UCI translation run with netifd's environment, the systemd template
 * unit's command lines, and the npm package installed from its tarball.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseConfig } from '../../src/config.js';
import { runAsync, sh } from '../../src/demo/exec.js';
import { cliOk, CLI, REPO, requireBuild, tcFilters } from './lib/env.js';
import { guardNamespaces, withLab } from './lib/lab.js';
import { addStarTunnel, makeStar } from './lib/star.js';

requireBuild();
guardNamespaces();

const FIXTURE = join(REPO, 'test/e2e/fixtures/openwrt');
const ours = (ns: string, dev: string) => tcFilters(ns, dev).filter((f) => f.progName?.startsWith('pdscp_'));

async function until(what: string, cond: () => boolean, ms: number): Promise<number> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return Date.now() - t0;
}

test('watch: attaches matching tunnels, reacts to a link added and deleted within 1 s, reloads on SIGHUP', async () => {
  await withLab('watch', async (lab) => {
    const s = makeStar(lab, 2);
    const dir = mkdtempSync(join(tmpdir(), 'pdscp-watch-'));
    const conf = join(dir, 'conf.json');
    writeFileSync(conf, JSON.stringify({ tunnels: [{ match: 'vx*', uplinks: ['up0'] }] }));
    const child = spawn('ip', ['netns', 'exec', s.a, CLI, 'watch', '--config', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    child.stdout.on('data', (d) => (log += d));
    child.stderr.on('data', (d) => (log += d));
    try {
      await until('initial attach', () => ours(s.a, 'vx1').length === 1 && ours(s.a, 'up0').length === 1, 10_000);
      addStarTunnel(s, 2);
      const added = await until('attach of new vx2', () => ours(s.a, 'vx2').length === 1, 1000);
      sh('ip', ['-n', s.a, 'link', 'del', 'vx0']);
      const forgotten = await until('gc of vx0', () => /gc: forgot vx0/.test(log), 1000);
      console.log(`watch: new link attached after ${added} ms, deleted link collected after ${forgotten} ms`);
      writeFileSync(conf, JSON.stringify({ tunnels: [{ match: 'vx*', uplinks: ['up0'] }], policy: 'ef' }));
      child.kill('SIGHUP');
      await until('reload', () => /reloaded/.test(log), 3000);
      await until('policy applied', () => /"policy": "EF,\*=0"/.test(sh('ip', ['netns', 'exec', s.a, CLI, 'status', '--json'])), 3000);
      child.kill('SIGTERM');
      const code = await new Promise<number | null>((r) => child.on('exit', r));
      assert.equal(code, 0, log);
      assert.equal(ours(s.a, 'vx1').length, 1, 'the datapath stays after SIGTERM');
      assert.match(log, /stopped/);
    } finally {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

test('watch: uplinks "auto" follow the route to the tunnel remote; --cleanup-on-exit removes what it attached', async () => {
  await withLab('watch auto', async (lab) => {
    const s = makeStar(lab, 1, 2);
    const dir = mkdtempSync(join(tmpdir(), 'pdscp-watch-'));
    const conf = join(dir, 'conf.json');
    writeFileSync(conf, JSON.stringify({ tunnels: [{ match: 'vx*', uplinks: 'auto' }] }));
    const child = spawn('ip', ['netns', 'exec', s.a, CLI, 'watch', '--config', conf, '--cleanup-on-exit'], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      await until('attach via the routed uplink', () => ours(s.a, 'vx0').length === 1 && ours(s.a, 'up0').length === 1, 10_000);
      assert.equal(ours(s.a, 'up1').length, 0, 'up1 carries no route to the remote');
      child.kill('SIGTERM');
      assert.equal(await new Promise<number | null>((r) => child.on('exit', r)), 0);
      assert.equal(ours(s.a, 'vx0').length + ours(s.a, 'up0').length, 0, 'removed on exit');
    } finally {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

test('doctor: reports what is there, and what is missing with exit 1', async () => {
  const ok = await runAsync(CLI, ['doctor', '--json']);
  assert.equal(ok.code, 0, ok.stdout + ok.stderr);
  const checks = JSON.parse(ok.stdout).checks as { name: string; ok: boolean; required: boolean }[];
  for (const name of ['privileges', 'libbpf', 'BPF object', 'BPF programs', 'tc clsact + cls_bpf']) {
    assert.ok(checks.find((c) => c.name === name)?.ok, `${name}: ${JSON.stringify(checks)}`);
  }
  const missing = await runAsync(CLI, ['doctor'], { env: { ...process.env, PRESERVE_DSCP_LIBBPF: '/nonexistent/libbpf.so.1' } });
  assert.equal(missing.code, 1);
  assert.match(missing.stdout, /libbpf\s+MISSING\s+libbpf\.so\.1 not found/);
});

test('watch: a configuration error names the line and field, exit 2', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pdscp-conf-'));
  try {
    const conf = join(dir, 'bad.json');
    writeFileSync(conf, '{\n  "tunnels": [\n    { "match": "wg*",\n      "carrier": "pigeon" }\n  ]\n}\n');
    const r = await runAsync(CLI, ['watch', '--config', conf]);
    assert.equal(r.code, 2);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    assert.match(r.stderr, /line 4: tunnels\[0\]\.carrier/);
    writeFileSync(conf, '{ "tunnels": [ ');
    const r2 = await runAsync(CLI, ['watch', '--config', conf]);
    assert.equal(r2.code, 2);
    assert.match(r2.stderr, /invalid JSON/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

function uciDir(network: string, pd?: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'pdscp-uci-'));
  writeFileSync(join(dir, 'network'), network);
  if (pd) writeFileSync(join(dir, 'preserve-dscp'), pd);
  return dir;
}

const NETWORK = `
config interface 'wan'
	option device 'up0'
	option proto 'dhcp'

config interface 'vx0'
	option proto 'wireguard'
	option preserve_dscp '1'
	option preserve_dscp_uplink 'wan'

config interface 'vx1'
	option proto 'wireguard'

config interface 'lan'
	option proto 'static'
`;

test('OpenWrt hotplug: ifup attaches, ifdown unloads (also after the device is gone), others untouched', async () => {
  await withLab('openwrt hotplug', async (lab) => {
    const s = makeStar(lab, 2);
    const uci = uciDir(NETWORK);
    const logFile = join(uci, 'log');
    const env = {
      ...process.env,
      IPKG_INSTROOT: FIXTURE,
      UCI_CONFIG_DIR: uci,
      NET_DEVICE_wan: 'up0',
      PRESERVE_DSCP: CLI,
      LOGGER_FILE: logFile,
      PATH: `${FIXTURE}/usr/bin:${process.env.PATH}`,
    };
    const hotplug = (action: string, iface: string) =>
      runAsync('ip', ['netns', 'exec', s.a, 'sh', join(REPO, 'packaging/openwrt/preserve-dscp.hotplug')], { env: { ...env, ACTION: action, INTERFACE: iface, DEVICE: iface } });
    try {
      assert.equal((await hotplug('ifup', 'vx0')).code, 0);
      assert.equal(ours(s.a, 'vx0').length, 1);
      assert.equal(ours(s.a, 'up0').length, 1);
      assert.equal((await hotplug('ifup', 'vx1')).code, 0);
      assert.equal(ours(s.a, 'vx1').length, 0, 'vx1 has no preserve_dscp option');
      assert.equal((await hotplug('ifup', 'lan')).code, 0);
      sh('ip', ['-n', s.a, 'link', 'del', 'vx0']);
      assert.equal((await hotplug('ifdown', 'vx0')).code, 0);
      assert.equal(ours(s.a, 'up0').length, 0, 'uplink program removed with its last tunnel');
      const log = readFileSync(logFile, 'utf8');
      assert.match(log, /attached pdscp_thash_l2 on vx0/);
      assert.match(log, /forgot vx0/);
    } finally {
      rmSync(uci, { recursive: true, force: true });
    }
  });
});

test('OpenWrt UCI translation gives a valid watch configuration', async () => {
  const uci = uciDir(NETWORK, `
config preserve-dscp 'global'
	option enabled '1'
	option policy 'ef,af41'
	option map_size '32768'

config tunnel
	option match 'wg*'
	list uplink 'wan'
	list uplink 'wwan'
	option carrier 'map'
`);
  try {
    const r = await runAsync('sh', ['-c', `. ${REPO}/packaging/openwrt/uci2json.sh; preserve_dscp_uci2json`], {
      env: { ...process.env, IPKG_INSTROOT: FIXTURE, UCI_CONFIG_DIR: uci, NET_DEVICE_wan: 'eth0.2', NET_DEVICE_wwan: 'wwan0' },
    });
    assert.equal(r.code, 0, r.stderr);
    const cfg = parseConfig(r.stdout, 'generated');
    assert.deepEqual(cfg.tunnels.map((t) => [t.match, t.uplinks, t.carrier]), [
      ['vx0', ['eth0.2'], 'auto'],
      ['wg*', ['eth0.2', 'wwan0'], 'map'],
    ]);
    assert.equal(cfg.mapSize, 32768);
    assert.equal(cfg.policy?.[46], 46);
    assert.equal(cfg.policy?.[8], 0);
  } finally {
    rmSync(uci, { recursive: true, force: true });
  }
});

test('systemd template unit: ExecStart/ExecStop of preserve-dscp@vx0:up0 attach and unload', async () => {
  await withLab('systemd', async (lab) => {
    const s = makeStar(lab, 1);
    const unit = readFileSync(join(REPO, 'packaging/systemd/preserve-dscp@.service'), 'utf8');
    const line = (key: string) => {
      const raw = unit.split('\n').find((l) => l.startsWith(`${key}=`))?.slice(key.length + 1) ?? '';
      // systemd's %I is the unescaped instance name; its argument quoting is the shell's here.
      return raw.replace(/%I/g, 'vx0:up0');
    };
    const bin = mkdtempSync(join(tmpdir(), 'pdscp-bin-'));
    try {
      sh('ln', ['-s', CLI, join(bin, 'preserve-dscp')]);
      const env = { ...process.env, PATH: `${bin}:${process.env.PATH}` };
      const start = await runAsync('ip', ['netns', 'exec', s.a, 'sh', '-c', line('ExecStart').replace(/^\/bin\/sh -c /, 'exec sh -c ')], { env });
      assert.equal(start.code, 0, start.stderr);
      assert.equal(ours(s.a, 'vx0').length, 1);
      const stop = await runAsync('ip', ['netns', 'exec', s.a, 'sh', '-c', line('ExecStop').replace(/^\/bin\/sh -c /, 'exec sh -c ')], { env });
      assert.equal(stop.code, 0, stop.stderr);
      assert.equal(ours(s.a, 'vx0').length + ours(s.a, 'up0').length, 0);
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });
});

test('npm package: installed from its tarball into a clean prefix, CLI and library API work', async () => {
  await withLab('package', async (lab) => {
    const s = makeStar(lab, 1);
    const dir = mkdtempSync(join(tmpdir(), 'pdscp-pkg-'));
    try {
      const tgz = sh('npm', ['pack', '--silent', '--pack-destination', dir], { timeoutMs: 120_000 }).trim().split('\n').pop() as string;
      const files = sh('tar', ['tzf', join(dir, tgz)]);
      for (const f of ['package/dist/cli.cjs', 'package/dist/preserve_dscp.bpf.o', 'package/dist/index.mjs', 'package/dist/types/index.d.ts', 'package/bin/preserve-dscp']) {
        assert.ok(files.includes(f), `${f} in the tarball`);
      }
      assert.ok(!files.includes('package/node_modules'), 'no bundled node_modules');
      const prefix = join(dir, 'prefix');
      sh('npm', ['install', '-g', '--no-audit', '--no-fund', '--prefix', prefix, join(dir, tgz)], { timeoutMs: 300_000 });
      const bin = join(prefix, 'bin', 'preserve-dscp');
      assert.match(sh(bin, ['--version']), /^preserve-dscp \d+\.\d+\.\d+/);
      await cliOk(s.a, ['vx0', 'up0']).catch(() => undefined);
      sh('ip', ['netns', 'exec', s.a, bin, 'vx0', 'up0', '--unload']);
      assert.equal(ours(s.a, 'vx0').length, 0);
      sh('ip', ['netns', 'exec', s.a, bin, 'vx0', 'up0']);
      assert.equal(ours(s.a, 'vx0').length, 1, 'attached by the installed CLI');
      // The library API, imported by package name.
      const proj = join(dir, 'app');
      sh('mkdir', ['-p', proj]);
      writeFileSync(join(proj, 'package.json'), '{"type":"module"}');
      sh('ln', ['-s', join(prefix, 'lib', 'node_modules'), join(proj, 'node_modules')]);
      writeFileSync(
        join(proj, 'app.mjs'),
        `import { attach, unload, status } from 'preserve-dscp';
const before = status();
unload(['vx0', 'up0']);
const after = status();
attach({ tunnels: ['vx0'], uplink: 'up0', carrier: 'map' });
const again = status();
console.log(JSON.stringify({ before: before.interfaces.length, after: after.loaded, again: again.interfaces.find((i) => i.ifname === 'vx0')?.carrier }));
`,
      );
      const out = JSON.parse(sh('ip', ['netns', 'exec', s.a, process.execPath, join(proj, 'app.mjs')]));
      assert.deepEqual(out, { before: 2, after: false, again: 'map' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
