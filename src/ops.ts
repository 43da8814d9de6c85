/**
 * The operations of the tool, each observe -> plan -> apply under the lock.
 * This is the library API (re-exported by index.ts) and what the CLI calls.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { type ApplyOptions, apply } from './apply.js';
import { withLock } from './kernel/lock.js';
import { observe } from './observe.js';
import { type Action, type AttachRequest, plan, type Request } from './plan.js';
import { buildStatus, type StatusReport } from './status.js';

export interface OpOptions {
  /** path of preserve_dscp.bpf.o; found next to the code by default */
  objectPath?: string;
  /** capture the verifier log at this level */
  logLevel?: number;
  beforeAction?: ApplyOptions['beforeAction'];
}

export interface OpResult {
  actions: Action[];
  notes: string[];
  verifierLog?: string;
}

/** Where the compiled datapath is: beside the bundle, or in the checkout's build/. */
export function findObject(): string {
  if (process.env.PRESERVE_DSCP_BPF_OBJECT) return process.env.PRESERVE_DSCP_BPF_OBJECT;
  const here = typeof __dirname !== 'undefined' ? __dirname : dirname(new URL(import.meta.url).pathname);
  const candidates = [join(here, 'preserve_dscp.bpf.o'), join(here, '..', 'dist', 'preserve_dscp.bpf.o'), join(here, '..', '..', 'dist', 'preserve_dscp.bpf.o')];
  return candidates.find((p) => existsSync(p)) ?? candidates[0];
}

function randomKey(): number {
  return randomBytes(4).readUInt32LE(0);
}

/**
 * Fault injection for the reliability tests: PRESERVE_DSCP_DEBUG_HOOK="N:cmd"
 * runs the shell command cmd before action N (0-based) of the plan, e.g.
 * `kill -9 $PPID` or `ip link del wg1`.
 */
function debugHook(): ApplyOptions['beforeAction'] | undefined {
  const spec = process.env.PRESERVE_DSCP_DEBUG_HOOK;
  const m = spec ? /^(\d+):(.+)$/s.exec(spec) : null;
  if (!m) return undefined;
  return (_action, index) => {
    if (index === Number(m[1])) execFileSync('sh', ['-c', m[2]], { stdio: 'inherit' });
  };
}

export function run(req: Request, opts: OpOptions = {}): OpResult {
  return withLock(() => {
    const wireguardNames = req.op === 'attach' ? req.tunnels : [];
    const obs = observe({ wireguardNames });
    const p = plan(obs, req, randomKey());
    const beforeAction = opts.beforeAction ?? debugHook();
    const r = apply(p, obs, { objectPath: opts.objectPath ?? findObject(), logLevel: opts.logLevel, beforeAction });
    return { actions: r.applied, notes: p.notes, verifierLog: r.verifierLog };
  });
}

export function attach(req: Omit<AttachRequest, 'op'>, opts?: OpOptions): OpResult {
  return run({ op: 'attach', ...req }, opts);
}

export function unload(names: string[], opts?: OpOptions): OpResult {
  return run({ op: 'unload', names }, opts);
}

export function gc(opts?: OpOptions): OpResult {
  return run({ op: 'gc' }, opts);
}

export function setPolicy(policy: number[], opts?: OpOptions): OpResult {
  return run({ op: 'policy', policy }, opts);
}

export function status(): StatusReport {
  return withLock(() => buildStatus(observe()));
}
