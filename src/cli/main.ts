/** Entry point of the command line: parse, run, print, exit with 0/1/2. */
import { privileges } from '../kernel/caps.js';
import { KernelError } from '../kernel/libbpf.js';
import { VerifierError } from '../kernel/object.js';
import { findObject, run, status } from '../ops.js';
import { doctor, probeNamespace } from '../doctor.js';
import { watch } from '../watch.js';
import { ConfigError } from '../config.js';
import { PlanError } from '../plan.js';
import { describePolicy } from '../policy.js';
import { HELP, parseArgs, UsageError } from './args.js';
import { describeAction, formatStatus, table } from './format.js';
import { runDemo } from '../demo.js';

declare const PRESERVE_DSCP_VERSION: string | undefined;
const VERSION = typeof PRESERVE_DSCP_VERSION !== 'undefined' ? PRESERVE_DSCP_VERSION : 'dev';

function out(line: string): void {
  process.stdout.write(`${line}\n`);
}

function fail(message: string, code: number): never {
  process.stderr.write(`preserve-dscp: ${message.split('\n')[0]}\n`);
  process.exit(code);
}

function requireRoot(): void {
  const { root, caps } = privileges();
  if (!root && !caps) fail('needs root (or CAP_BPF and CAP_NET_ADMIN)', 1);
}

export async function main(argv: string[]): Promise<void> {
  let cmd: ReturnType<typeof parseArgs>;
  try {
    cmd = parseArgs(argv);
  } catch (e) {
    if (e instanceof UsageError) fail(`${e.message} (see --help)`, 2);
    throw e;
  }
  if (cmd.cmd === 'help') return void process.stdout.write(HELP);
  if (cmd.cmd === 'version') return out(`preserve-dscp ${VERSION}`);
  if (cmd.cmd !== 'doctor') requireRoot();
  try {
    switch (cmd.cmd) {
      case 'status': {
        const s = status();
        return out(cmd.json ? JSON.stringify(s, null, 2) : formatStatus(s));
      }
      case 'demo':
        return await runDemo({ json: cmd.json, verbose: cmd.verbose });
      case 'doctor': {
        const checks = doctor([process.argv[1]]);
        if (cmd.json) out(JSON.stringify({ checks }, null, 2));
        else out(table([['CHECK', 'RESULT', 'DETAIL'], ...checks.map((c) => [c.name, c.ok ? 'ok' : c.required ? 'MISSING' : 'absent', c.detail])]));
        if (checks.some((c) => c.required && !c.ok)) process.exitCode = 1;
        return;
      }
      case 'probe':
        return out(JSON.stringify(probeNamespace(findObject())));
      case 'watch':
        return await watch({ configPath: cmd.config, cleanupOnExit: cmd.cleanupOnExit, log: (l) => out(`${new Date().toISOString()} ${l}`) });
      case 'policy': {
        if (!cmd.policy) {
          const s = status();
          if (!s.loaded) fail('preserve-dscp is not attached in this network namespace', 1);
          return out(cmd.json ? JSON.stringify({ policy: s.policy, table: s.policyTable }) : `policy: ${s.policy}`);
        }
        const r = run({ op: 'policy', policy: cmd.policy });
        return out(cmd.json ? JSON.stringify({ changed: r.actions.length > 0, policy: describePolicy(cmd.policy) }) : `policy: ${describePolicy(cmd.policy)}${r.actions.length ? '' : ' (unchanged)'}`);
      }
      default: {
        const req =
          cmd.cmd === 'attach'
            ? { op: 'attach' as const, tunnels: cmd.tunnels, uplink: cmd.uplink, carrier: cmd.carrier, sport: cmd.sport, dport: cmd.dport, outerCheck: cmd.outerCheck, mapSize: cmd.mapSize, policy: cmd.policy }
            : cmd.cmd === 'unload'
              ? { op: 'unload' as const, names: cmd.names }
              : { op: 'gc' as const };
        const r = run(req, { logLevel: cmd.verbose ? 1 : 0 });
        if (cmd.json) return out(JSON.stringify({ actions: r.actions, notes: r.notes }));
        const lines = r.actions.map(describeAction).filter((x): x is string => !!x);
        for (const n of r.notes) lines.push(`note: ${n}`);
        if (lines.length === 0) lines.push(cmd.cmd === 'attach' ? 'already attached: nothing to do' : 'nothing to do');
        lines.forEach(out);
        return;
      }
    }
  } catch (e) {
    if (e instanceof VerifierError) {
      if (cmd.cmd !== 'status' && 'verbose' in cmd && cmd.verbose && e.log) process.stderr.write(`${e.log}\n`);
      fail(e.message, 1);
    }
    if (e instanceof PlanError) fail(e.message, e.exitCode);
    if (e instanceof ConfigError) fail(e.message, 2);
    if (e instanceof KernelError) fail(e.message, 1);
    if (e instanceof Error && process.env.PRESERVE_DSCP_DEBUG) throw e;
    fail(e instanceof Error ? e.message : String(e), 1);
  }
}

main(process.argv.slice(2)).catch((e) => fail(e instanceof Error ? e.message : String(e), 1));
