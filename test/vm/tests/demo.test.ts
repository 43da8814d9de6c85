/**
 * The demo on a kernel with WireGuard: `preserve-dscp demo --json` should
 * build its lab with real WireGuard (the kernel can make WireGuard devices
 * here), say so in its report, and show outer == inner for every flow with
 * the tool (and 0 without).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runAsync } from '../../../src/demo/exec.js';
import { CLI, secs, vmOnly } from '../lib/tool.js';

vmOnly();

interface Row {
  traffic: string;
  inner: number;
  without: number | null;
  with: number | null;
  packets: { without: number; with: number };
}

test('demo --json uses real WireGuard and every with-tool row has outer == inner', async () => {
  const t0 = Date.now();
  const r = await runAsync(CLI, ['demo', '--json'], { timeoutMs: 400_000 });
  const took = secs(t0);
  assert.equal(r.code, 0, `demo exited ${r.code}: ${r.stderr.trim()}`);
  const rep = JSON.parse(r.stdout) as { tunnel: string; underlay?: string; wireguardInKernel?: boolean; rows: Row[]; ok: boolean; seconds?: number };
  const bad = rep.rows.filter((x) => x.with !== x.inner);
  const noPackets = rep.rows.filter((x) => x.packets.with === 0 || x.packets.without === 0);
  console.log(
    `demo: tunnel ${JSON.stringify(rep.tunnel)}, underlay ${rep.underlay}, wireguardInKernel ${rep.wireguardInKernel}, ok ${rep.ok}, ` +
      `${rep.rows.length} rows, ${bad.length} with-tool rows with outer != inner, ${rep.rows.filter((x) => x.without !== 0).length} without-tool rows with outer != 0, ` +
      `${noPackets.length} rows without packets; demo ${rep.seconds ?? '?'} s (process ${took} s)`,
  );
  if (bad.length) console.log(`demo: rows with outer != inner: ${bad.map((x) => `${x.traffic} ${x.inner} -> ${x.with}`).join(', ')}`);
  assert.match(String(rep.tunnel), /wireguard/i, `the demo should use WireGuard on a kernel that has it; its report says tunnel ${JSON.stringify(rep.tunnel)}`);
  assert.ok(rep.rows.length > 0);
  assert.deepEqual(bad, [], 'with the tool, outer DSCP == inner DSCP on every row');
  assert.ok(rep.rows.every((x) => x.without === 0), 'without the tool, outer DSCP 0');
  assert.equal(noPackets.length, 0);
  assert.equal(rep.ok, true);
});
