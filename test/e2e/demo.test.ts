/** End-to-end: `preserve-dscp demo --json` as a user runs it. */
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { runAsync } from '../../src/demo/exec.js';
import { leftoverNamespaces } from '../../src/demo/lab.js';
import { CLI, requireBuild } from './lib/env.js';

before(() => requireBuild());

test('demo --json: outer DSCP equals inner with the tool, 0 without, and nothing is left behind', { timeout: 60_000 }, async () => {
  const started = Date.now();
  const r = await runAsync(CLI, ['demo', '--json'], { timeoutMs: 60_000 });
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.ok(Date.now() - started < 20_000, 'the demo takes under 20 s');
  assert.ok(Array.isArray(report.rows));
  const traffic = new Set(report.rows.map((x: { traffic: string }) => x.traffic));
  assert.deepEqual([...traffic].sort(), ['ICMPv4', 'ICMPv6', 'TCP/IPv4', 'TCP/IPv6', 'UDP/IPv4', 'UDP/IPv6']);
  const dscps = new Set(report.rows.map((x: { inner: number }) => x.inner));
  assert.ok(dscps.size >= 4, 'several DSCPs');
  for (const row of report.rows) {
    assert.ok(row.packets.with > 0 && row.packets.without > 0, `${row.traffic} ${row.inner}: packets captured`);
    assert.equal(row.with, row.inner, `${row.traffic} DSCP ${row.inner}: outer with preserve-dscp`);
    assert.equal(row.without, 0, `${row.traffic} DSCP ${row.inner}: outer without preserve-dscp`);
  }
  assert.equal(report.ok, true);
  assert.equal(report.namespaces.length, 2);
  for (const ns of report.namespaces) assert.deepEqual(leftoverNamespaces(ns), [], `${ns} removed`);
});
