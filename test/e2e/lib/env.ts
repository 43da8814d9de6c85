/** Running the command line as a user would, and reading tc state. */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runAsync, type RunResult, sh, shQuiet } from '../../../src/demo/exec.js';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const CLI = join(REPO, 'bin', 'preserve-dscp');

/** Fails early with a clear message when `npm run build` was not run. */
export function requireBuild(): void {
  for (const f of ['dist/cli.cjs', 'dist/preserve_dscp.bpf.o']) {
    if (!existsSync(join(REPO, f))) throw new Error(`${f} is missing: run npm run build first`);
  }
}

export type Via = 'ip-netns-exec' | 'nsenter' | 'none';

/**
 * Runs bin/preserve-dscp with args in namespace ns:
 * `ip netns exec NS bin/preserve-dscp ...` (default) or
 * `nsenter --net=/run/netns/NS bin/preserve-dscp ...`.
 */
export function cli(ns: string | undefined, args: string[], via: Via = 'ip-netns-exec'): Promise<RunResult> {
  if (!ns || via === 'none') return runAsync(CLI, args, { timeoutMs: 60_000 });
  if (via === 'nsenter') return runAsync('nsenter', [`--net=/run/netns/${ns}`, CLI, ...args], { timeoutMs: 60_000 });
  return runAsync('ip', ['netns', 'exec', ns, CLI, ...args], { timeoutMs: 60_000 });
}

/** cli() that must succeed (exit 0); returns stdout. */
export async function cliOk(ns: string | undefined, args: string[], via: Via = 'ip-netns-exec'): Promise<string> {
  const r = await cli(ns, args, via);
  if (r.code !== 0) throw new Error(`preserve-dscp ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}

export interface TcFilter {
  kind: string;
  pref: number;
  handle?: string;
  progName?: string;
}

/** The filters on a device's hook (one entry per filter, not per chain header). */
export function tcFilters(ns: string, dev: string, hook: 'egress' | 'ingress' = 'egress'): TcFilter[] {
  const out = sh('tc', ['-n', ns, '-j', 'filter', 'show', 'dev', dev, hook]).trim();
  const rows = (out ? JSON.parse(out) : []) as { kind: string; pref: number; options?: Record<string, unknown> }[];
  return rows
    // u32 lists its hash table as an entry of its own: count only the filters (keys).
    .filter((r) => r.options && !(r.kind === 'u32' && 'ht_divisor' in (r.options as object)))
    .map((r) => {
      const o = r.options as { handle?: string; fh?: string; prog?: { name?: string } };
      return { kind: r.kind, pref: r.pref, handle: o.handle ?? o.fh, progName: o.prog?.name };
    });
}

export function tcQdiscs(ns: string, dev: string): string[] {
  const out = sh('tc', ['-n', ns, '-j', 'qdisc', 'show', 'dev', dev]).trim();
  return ((out ? JSON.parse(out) : []) as { kind: string }[]).map((q) => q.kind);
}

/**
 * Adds a filter that is not ours on dev's egress hook at prio 100. matchall
 * with `action pass` where the kernel has it; otherwise (no cls_matchall /
 * act_gact) a u32 filter that never matches, so our filter still runs.
 */
export function addForeignFilter(ns: string, dev: string): string {
  if (shQuiet('tc', ['-n', ns, 'filter', 'add', 'dev', dev, 'egress', 'prio', '100', 'matchall', 'action', 'pass'])) return 'matchall';
  sh('tc', ['-n', ns, 'filter', 'add', 'dev', dev, 'egress', 'prio', '100', 'u32', 'match', 'u32', '0x5a5a5a5a', '0xffffffff', 'at', '0']);
  return 'u32';
}
