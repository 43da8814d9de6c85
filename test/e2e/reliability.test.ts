/**
 * Faults, races and bad input: kill -9 at every step, interfaces vanishing
 * mid-operation, many invocations at once, churn without leaks, coexistence
 * with other tc users, and refusals that harm nothing.
 *
 * PDSCP_SOAK=full runs the long forms (50 x 20 concurrency, 1,000 churn cycles).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { runAsync, sh } from '../../src/demo/exec.js';
import { inNetns } from '../../src/demo/lab.js';
import { Capture } from '../../src/demo/capture.js';
import { cli, cliOk, CLI, REPO, requireBuild, tcFilters, tcQdiscs } from './lib/env.js';
import { guardNamespaces, withLab } from './lib/lab.js';
import { makeStar, sendUdp, type Star } from './lib/star.js';

requireBuild();
guardNamespaces();

const FULL = process.env.PDSCP_SOAK === 'full';
const ours = (ns: string, dev: string) => tcFilters(ns, dev).filter((f) => f.progName?.startsWith('pdscp_'));

/** Ids of the BPF programs and maps of preserve-dscp that exist in the kernel (all namespaces). */
function kernelObjects(): { progs: number[]; maps: number[] } {
  const ids = (kind: 'prog' | 'map') =>
    (JSON.parse(sh('bpftool', ['-j', kind, 'show'])) as { id: number; name?: string }[]).filter((o) => o.name?.startsWith('pdscp_')).map((o) => o.id);
  return { progs: ids('prog'), maps: ids('map') };
}

/**
 * Objects created since `before` that still exist. They are freed
 * asynchronously (RCU) after their last user goes, so wait a little.
 */
async function leakedSince(before: { progs: number[]; maps: number[] }): Promise<{ progs: number[]; maps: number[] }> {
  let left = { progs: [] as number[], maps: [] as number[] };
  for (let i = 0; i < 100; i++) {
    const now = kernelObjects();
    left = { progs: now.progs.filter((id) => !before.progs.includes(id)), maps: now.maps.filter((id) => !before.maps.includes(id)) };
    if (left.progs.length + left.maps.length === 0) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return left;
}

interface StatusJson {
  loaded: boolean;
  warnings: string[];
  interfaces: { ifname: string; role: string; attached: boolean }[];
}
async function status(ns: string): Promise<StatusJson> {
  return JSON.parse(await cliOk(ns, ['status', '--json']));
}

/** The requested state holds: exactly these tunnels on up0, one filter each, nothing stale. */
async function assertState(s: Star, tunnels: string[], note: string): Promise<void> {
  const st = await status(s.a);
  if (tunnels.length === 0) {
    assert.equal(st.loaded, false, `${note}: nothing loaded`);
    for (const dev of ['up0', ...s.tunnels]) assert.equal(ours(s.a, dev).length, 0, `${note}: no filter on ${dev}`);
    return;
  }
  assert.deepEqual(st.warnings, [], note);
  assert.deepEqual(st.interfaces.filter((i) => i.role === 'tunnel').map((i) => i.ifname).sort(), [...tunnels].sort(), note);
  assert.ok(st.interfaces.every((i) => i.attached), note);
  for (const t of s.tunnels) assert.equal(ours(s.a, t).length, tunnels.includes(t) ? 1 : 0, `${note}: filters on ${t}`);
  assert.equal(ours(s.a, 'up0').length, 1, `${note}: one uplink filter`);
}

async function actionCount(ns: string, args: string[]): Promise<number> {
  return (JSON.parse(await cliOk(ns, [...args, '--json'])) as { actions: unknown[] }).actions.length;
}

test('kill -9 at every step of attach, add and unload: the next run converges, nothing leaks', async () => {
  const baseline = kernelObjects();
  let faults = 0;
  const scenarios: { name: string; before: string[][]; args: string[]; want: string[] }[] = [
    { name: 'first attach', before: [], args: ['vx0', 'vx1', 'up0'], want: ['vx0', 'vx1'] },
    { name: 'add a tunnel', before: [['vx0', 'up0']], args: ['vx1', 'up0'], want: ['vx0', 'vx1'] },
    { name: 'unload one', before: [['vx0', 'vx1', 'up0']], args: ['vx1', 'up0', '--unload'], want: ['vx0'] },
    { name: 'unload last', before: [['vx0', 'up0']], args: ['vx0', 'up0', '--unload'], want: [] },
  ];
  for (const sc of scenarios) {
    // How many steps the operation has, from a clean run.
    const steps = await withLab(`steps ${sc.name}`, async (lab) => {
      const s = makeStar(lab, 2);
      for (const b of sc.before) await cliOk(s.a, b);
      return actionCount(s.a, sc.args);
    });
    assert.ok(steps >= 1, `${sc.name}: ${steps} steps`);
    for (let i = 0; i < steps; i++) {
      await withLab(`kill ${sc.name} ${i}`, async (lab) => {
        const s = makeStar(lab, 2);
        for (const b of sc.before) await cliOk(s.a, b);
        const killed = await runAsync('ip', ['netns', 'exec', s.a, CLI, ...sc.args], { env: { ...process.env, PRESERVE_DSCP_DEBUG_HOOK: `${i}:kill -9 $PPID` } });
        assert.notEqual(killed.code, 0, `${sc.name} step ${i}: the tool was killed`);
        faults++;
        const again = await cli(s.a, sc.args);
        if (again.code !== 0) await cliOk(s.a, ['gc']); // e.g. unload of a tunnel the killed run had already forgotten
        await cliOk(s.a, ['gc']);
        await assertState(s, sc.want, `${sc.name}, killed before step ${i}`);
      });
    }
  }
  const leaked = await leakedSince(baseline);
  console.log(`kill -9: ${faults} faults injected and survived; leaked: ${leaked.progs.length} programs, ${leaked.maps.length} maps`);
  assert.deepEqual(leaked, { progs: [], maps: [] }, 'no program or map left behind');
});

test('an interface deleted between observe and apply: clean result, gc leaves nothing', async () => {
  for (const [victim, step] of [['vx1', 3], ['up0', 2], ['vx0', 4]] as const) {
    await withLab(`vanish ${victim}`, async (lab) => {
      const s = makeStar(lab, 2);
      const r = await runAsync('ip', ['netns', 'exec', s.a, CLI, 'vx0', 'vx1', 'up0'], {
        env: { ...process.env, PRESERVE_DSCP_DEBUG_HOOK: `${step}:ip link del ${victim}` },
      });
      assert.ok(r.code === 0 || r.code === 1, `exit ${r.code}`);
      if (r.code === 1) assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.doesNotMatch(r.stderr, /at .*\.c?js:\d+/, 'no stack trace');
      await cliOk(s.a, ['gc']);
      const st = await status(s.a);
      assert.deepEqual(st.warnings, []);
      assert.ok(!st.interfaces.some((i) => i.ifname === victim), `${victim} forgotten`);
      if (victim === 'up0') assert.equal(st.loaded, false, 'without the uplink nothing is left');
    });
  }
});

test(`concurrency: 50 invocations at once, ${FULL ? 20 : 2} rounds, end state right every time`, async () => {
  await withLab('concurrency', async (lab) => {
    const s = makeStar(lab, 24);
    for (let round = 0; round < (FULL ? 20 : 2); round++) {
      // Start: vx20-23 attached. Requests: attach vx0-19, unload vx20-23, gc and status.
      await cliOk(s.a, ['vx20', 'vx21', 'vx22', 'vx23', 'up0']);
      const jobs: Promise<{ code: number; stderr: string }>[] = [];
      for (let i = 0; i < 20; i++) jobs.push(cli(s.a, [`vx${i}`, 'up0']));
      for (let i = 20; i < 24; i++) jobs.push(cli(s.a, [`vx${i}`, 'up0', '--unload']));
      for (let i = 0; i < 13; i++) jobs.push(cli(s.a, ['gc']), cli(s.a, ['status', '--json']));
      const res = await Promise.all(jobs);
      res.forEach((r, i) => assert.equal(r.code, 0, `round ${round} job ${i}: ${r.stderr}`));
      await assertState(s, Array.from({ length: 20 }, (_, i) => `vx${i}`), `round ${round}`);
      await cliOk(s.a, ['up0', '--unload']);
      await assertState(s, [], `round ${round} after unload`);
    }
  });
});

test(`churn: ${FULL ? 1000 : Number(process.env.PDSCP_CHURN ?? 25)} attach/unload cycles of 20 tunnels in one process: no growth`, async () => {
  const { attach, unload, status: libStatus } = await import('../../src/index.js');
  await withLab('churn', async (lab) => {
    const s = makeStar(lab, 20);
    const fds = () => readdirSync('/proc/self/fd').length;
    // A real gc() (as with --expose-gc), so live memory can be compared.
    setFlagsFromString('--expose_gc');
    const gc = runInNewContext('gc') as () => void;
    const live = () => {
      gc();
      const m = process.memoryUsage();
      // heapUsed: live JS objects; external memory is native accounting
      // that moves by ~10 MB with allocator timing, not with the cycles.
      return { rss: m.rss, js: m.heapUsed };
    };
    const filters = () => s.tunnels.reduce((n, t) => n + ours(s.a, t).length, 0) + ours(s.a, 'up0').length;
    const cycles = FULL ? 1000 : Number(process.env.PDSCP_CHURN ?? 25);
    let first: { fds: number; rss: number; js: number; objects: { progs: number[]; maps: number[] } } | undefined;
    for (let c = 0; c < cycles; c++) {
      inNetns(s.a, () => {
        attach({ tunnels: s.tunnels, uplink: 'up0' });
        assert.equal(libStatus().interfaces.length, 21);
        unload(['up0']);
      });
      if (c === 4) first = { fds: fds(), ...live(), objects: kernelObjects() };
    }
    const leaked = await leakedSince(first?.objects ?? { progs: [], maps: [] });
    const last = { fds: fds(), ...live() };
    const mb = (x = 0) => (x / 1e6).toFixed(1);
    console.log(`churn: ${cycles} cycles; fds ${first?.fds} -> ${last.fds}; JS heap ${mb(first?.js)} -> ${mb(last.js)} MB; rss ${mb(first?.rss)} -> ${mb(last.rss)} MB; leaked ${leaked.progs.length} programs, ${leaked.maps.length} maps`);
    assert.equal(filters(), 0);
    assert.equal(last.fds, first?.fds, 'file descriptors');
    assert.deepEqual(leaked, { progs: [], maps: [] }, 'BPF programs and maps');
    assert.ok(last.js - (first?.js ?? 0) < 5e6, 'the JS heap does not grow with cycles');
    assert.ok(last.rss - (first?.rss ?? 0) < 40e6, 'process memory does not grow with cycles');
  });
});

const COUNTER_C = `
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, __u64); } seen SEC(".maps");
SEC("tc") int count_udp(struct __sk_buff *skb) {
  __u32 k = 0; __u64 *v = bpf_map_lookup_elem(&seen, &k);
  if (v && skb->len > 100) __sync_fetch_and_add(v, 1);
  return TC_ACT_UNSPEC;
}
char LICENSE[] SEC("license") = "GPL";
`;

test('coexistence: other cls_bpf filters before and after ours and a shaper stay, and see every packet', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pdscp-coexist-'));
  try {
    writeFileSync(join(dir, 'counter.bpf.c'), COUNTER_C);
    execFileSync('clang', ['-O2', '-g', '-target', 'bpf', '-I/usr/include/x86_64-linux-gnu', '-c', join(dir, 'counter.bpf.c'), '-o', join(dir, 'counter.o')]);
    await withLab('coexist', async (lab) => {
      const s = makeStar(lab, 1);
      sh('tc', ['-n', s.a, 'qdisc', 'add', 'dev', 'up0', 'root', 'tbf', 'rate', '500mbit', 'burst', '64kb', 'latency', '50ms']);
      sh('tc', ['-n', s.a, 'qdisc', 'add', 'dev', 'up0', 'clsact']);
      for (const prio of ['1', '60000']) sh('tc', ['-n', s.a, 'filter', 'add', 'dev', 'up0', 'egress', 'prio', prio, 'bpf', 'da', 'obj', join(dir, 'counter.o'), 'sec', 'tc']);
      const snapshot = () => JSON.stringify({ f: tcFilters(s.a, 'up0').filter((f) => !f.progName?.startsWith('pdscp_')), q: tcQdiscs(s.a, 'up0') });
      const before = snapshot();
      await cliOk(s.a, ['vx0', 'up0']);
      const prios = tcFilters(s.a, 'up0').map((f) => f.pref);
      assert.deepEqual(prios, [1, 0xd5c, 60000], 'ours sits between the two');
      const cap = await Capture.start(s.a, 'up0', 'udp and dst port 4789', { direction: 'out' });
      await sendUdp(s.a, [{ family: 4, dst: s.innerB(0), dport: 9600, tclasses: [46 << 2], count: 500 }]);
      const pkts = (await cap.stop()).filter((p) => p.inner?.dport === 9600);
      assert.ok(pkts.length >= 495);
      for (const p of pkts) assert.equal(p.outer.dscp, 46, 'ours still works beside the others');
      const counts = (JSON.parse(sh('bpftool', ['-j', 'map', 'show'])) as { id: number; name: string }[])
        .filter((m) => m.name === 'seen')
        .map((m) => JSON.parse(sh('bpftool', ['-j', 'map', 'lookup', 'id', String(m.id), 'key', '0', '0', '0', '0'])))
        .map((e: { value: string[] | number; formatted?: { value: number } }) =>
          e.formatted ? Number(e.formatted.value) : Array.isArray(e.value) ? e.value.reduce((n, b, i) => n + Number(b) * 256 ** i, 0) : Number(e.value),
        );
      assert.equal(counts.length >= 2, true);
      for (const c of counts.slice(-2)) assert.ok(c >= 500, `the other filter saw ${c} of 500+ packets (before and after ours)`);
      await cliOk(s.a, ['vx0', 'up0', '--unload']);
      assert.equal(snapshot(), before, 'other filters and qdiscs untouched');
      assert.ok(tcQdiscs(s.a, 'up0').includes('clsact'), 'clsact stays: others use it');
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const BROKEN_C = `
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "preserve_dscp.h"
struct { __uint(type, BPF_MAP_TYPE_LRU_HASH); __uint(max_entries, 16384); __type(key, __u32); __type(value, struct pdscp_flow); } pdscp_flows SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, struct pdscp_config); } pdscp_config SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, PDSCP_COUNTER_SLOTS); __type(key, __u32); __type(value, struct pdscp_counters); } pdscp_stats SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 65536); __uint(map_flags, BPF_F_NO_PREALLOC); __type(key, struct pdscp_link_key); __type(value, struct pdscp_link); } pdscp_links SEC(".maps");
#define OK(n) SEC("tc") int n(struct __sk_buff *skb) { return TC_ACT_UNSPEC; }
OK(pdscp_tmap_l2) OK(pdscp_tmap_l3) OK(pdscp_tmapu_l2) OK(pdscp_tmapu_l3) OK(pdscp_thash_l2) OK(pdscp_thash_l3) OK(pdscp_up_l3)
/* reads the packet without a bounds check: the verifier refuses it */
SEC("tc") int pdscp_up_l2(struct __sk_buff *skb) { return *(__u8 *)(long)skb->data; }
char LICENSE[] SEC("license") = "GPL";
`;

test('bad input: one line, the right exit code, nothing installed or harmed', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pdscp-bad-'));
  try {
    writeFileSync(join(dir, 'broken.bpf.c'), BROKEN_C);
    execFileSync('clang', ['-O2', '-g', '-target', 'bpf', '-I/usr/include/x86_64-linux-gnu', `-I${REPO}/bpf`, '-c', join(dir, 'broken.bpf.c'), '-o', join(dir, 'broken.o')]);
    writeFileSync(join(dir, 'garbage.o'), 'not an ELF file');
    await withLab('bad input', async (lab) => {
      const s = makeStar(lab, 2, 2);
      await cliOk(s.a, ['vx0', 'up0']);
      const state = () => JSON.stringify(['up0', 'up1', 'vx0', 'vx1'].map((d) => [tcFilters(s.a, d), tcQdiscs(s.a, d)]));
      const before = state();
      const cases: { args: string[]; code: number; re: RegExp; env?: Record<string, string>; user?: boolean }[] = [
        { args: ['nosuch0', 'up0'], code: 1, re: /nosuch0: no such interface/ },
        { args: ['vx1', 'nosuch1'], code: 1, re: /nosuch1: no such interface/ },
        { args: ['a-name-longer-than-15', 'up0'], code: 2, re: /invalid interface name/ },
        { args: ['vx$1', 'up0'], code: 1, re: /vx\$1: no such interface/ },
        { args: ['vx 1', 'up0'], code: 2, re: /invalid interface name/ },
        { args: ['up0', 'up0'], code: 2, re: /both a tunnel and the uplink/ },
        { args: ['vx1', 'lo'], code: 1, re: /loopback/ },
        { args: ['up0'], code: 2, re: /at least one tunnel/ },
        { args: [], code: 2, re: /no interfaces given/ },
        { args: ['--frob', 'vx1', 'up0'], code: 2, re: /unknown option --frob/ },
        { args: ['up0', 'vx1'], code: 1, re: /up0 is an uplink of preserve-dscp/ },
        { args: ['vx1', 'up0'], code: 1, re: /libbpf\.so\.1 not found/, env: { PRESERVE_DSCP_LIBBPF: '/nonexistent/libbpf.so.1' } },
        { args: ['vx1', 'up0'], code: 1, re: /libbpf 1\.0 or newer/, env: { PRESERVE_DSCP_LIBBPF: 'libc.so.6' } },
        { args: ['vx1', 'up0'], code: 1, re: /BPF object .* is missing/, env: { PRESERVE_DSCP_BPF_OBJECT: join(dir, 'missing.o') } },
        { args: ['vx1', 'up0'], code: 1, re: /not a valid BPF ELF object/, env: { PRESERVE_DSCP_BPF_OBJECT: join(dir, 'garbage.o') } },
        { args: ['vx1', 'up1'], code: 1, re: /rejected BPF program pdscp_up_l2/, env: { PRESERVE_DSCP_BPF_OBJECT: join(dir, 'broken.o') } },
        { args: ['vx1', 'up0'], code: 1, re: /needs root/, user: true },
      ];
      for (const c of cases) {
        const cmd = c.user ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', CLI, ...c.args] : [CLI, ...c.args];
        const r = await runAsync('ip', ['netns', 'exec', s.a, ...cmd], { env: { ...process.env, ...c.env } });
        const what = `preserve-dscp ${c.args.join(' ')} ${JSON.stringify(c.env ?? {})}`;
        assert.equal(r.code, c.code, `${what}: exit ${r.code}, ${r.stderr}`);
        assert.equal(r.stderr.trim().split('\n').length, 1, `${what}: one line: ${r.stderr}`);
        assert.match(r.stderr, c.re, what);
        assert.equal(r.stdout, '', what);
        assert.equal(state(), before, `${what}: nothing changed`);
      }
      // --verbose adds the verifier's log.
      const v = await runAsync('ip', ['netns', 'exec', s.a, CLI, '--verbose', 'vx1', 'up1'], { env: { ...process.env, PRESERVE_DSCP_BPF_OBJECT: join(dir, 'broken.o') } });
      assert.equal(v.code, 1);
      assert.match(v.stderr, /invalid access to packet|R\d .*pkt/);
      assert.equal(state(), before);
      // bpffs absent: `ip netns exec` hides it, and the tool works (the cases above ran that way).
      assert.equal(sh('ip', ['netns', 'exec', s.a, 'sh', '-c', 'grep -c " bpf " /proc/mounts || true']).trim(), '0');
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
