/** Command-line parsing: pure, no I/O, so every form is unit-tested. */
import type { Carrier } from '../layout.js';
import { PolicyError, parsePolicy } from '../policy.js';
import { DEFAULT_CONFIG_PATH } from '../config.js';

export class UsageError extends Error {}

export type Command =
  | { cmd: 'help' }
  | { cmd: 'version' }
  | {
      cmd: 'attach';
      tunnels: string[];
      uplink: string;
      carrier: Carrier | 'auto';
      sport?: number;
      dport?: number;
      outerCheck: boolean;
      mapSize?: number;
      policy?: number[];
      verbose: boolean;
      json: boolean;
    }
  | { cmd: 'unload'; names: string[]; verbose: boolean; json: boolean }
  | { cmd: 'status'; json: boolean }
  | { cmd: 'gc'; verbose: boolean; json: boolean }
  | { cmd: 'policy'; policy?: number[]; json: boolean }
  | { cmd: 'demo'; json: boolean; verbose: boolean }
  | { cmd: 'doctor'; json: boolean }
  | { cmd: 'watch'; config: string; cleanupOnExit: boolean }
  | { cmd: 'probe' };

const SUBCOMMANDS = new Set(['status', 'gc', 'policy', 'demo', 'doctor', 'watch', '__probe', 'help', 'version']);
const VALUE_OPTS = new Set(['--carrier', '--outer-sport', '--outer-dport', '--map-size', '--policy', '--config']);
const FLAG_OPTS = new Set(['--unload', '--cleanup-on-exit', '--verbose', '-v', '--json', '--no-outer-check', '--help', '-h', '--version', '-V']);

function port(text: string, opt: string): number {
  if (!/^\d+$/.test(text) || Number(text) < 1 || Number(text) > 65535) throw new UsageError(`${opt} needs a UDP port 1-65535, got '${text}'`);
  return Number(text);
}

export function parseArgs(argv: string[]): Command {
  const opts = new Map<string, string>();
  const flags = new Set<string>();
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      positional.push(...argv.slice(i + 1));
      break;
    }
    if (a.startsWith('-') && a.length > 1) {
      const [name, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
      if (VALUE_OPTS.has(name)) {
        const v = inline ?? argv[++i];
        if (v === undefined) throw new UsageError(`${name} needs a value`);
        opts.set(name, v);
      } else if (FLAG_OPTS.has(name) && inline === undefined) {
        flags.add(name);
      } else {
        throw new UsageError(`unknown option ${a}`);
      }
      continue;
    }
    positional.push(a);
  }
  if (flags.has('--help') || flags.has('-h') || positional[0] === 'help') return { cmd: 'help' };
  if (flags.has('--version') || flags.has('-V') || positional[0] === 'version') return { cmd: 'version' };
  const json = flags.has('--json');
  const verbose = flags.has('--verbose') || flags.has('-v');

  const only = (allowed: string[]) => {
    for (const o of [...opts.keys(), ...flags]) {
      if (!allowed.includes(o)) throw new UsageError(`option ${o} does not apply to ${positional[0] ?? 'this command'}`);
    }
  };
  const sub = positional[0];
  if (sub && SUBCOMMANDS.has(sub)) {
    const rest = positional.slice(1);
    switch (sub) {
      case 'status':
        only(['--json']);
        if (rest.length) throw new UsageError('status takes no interface names');
        return { cmd: 'status', json };
      case 'gc':
        only(['--json', '--verbose', '-v']);
        if (rest.length) throw new UsageError('gc takes no interface names');
        return { cmd: 'gc', json, verbose };
      case 'demo':
        only(['--json', '--verbose', '-v']);
        if (rest.length) throw new UsageError('demo takes no interface names');
        return { cmd: 'demo', json, verbose };
      case 'doctor':
        only(['--json']);
        if (rest.length) throw new UsageError('doctor takes no interface names');
        return { cmd: 'doctor', json };
      case 'watch':
        only(['--config', '--cleanup-on-exit']);
        if (rest.length) throw new UsageError('watch takes no interface names: tunnels come from the configuration file');
        return { cmd: 'watch', config: opts.get('--config') ?? DEFAULT_CONFIG_PATH, cleanupOnExit: flags.has('--cleanup-on-exit') };
      case '__probe':
        return { cmd: 'probe' };
      case 'policy':
        only(['--json']);
        if (rest.length > 1) throw new UsageError('policy takes one spec, e.g. ef,af41 (quote specs with spaces)');
        return { cmd: 'policy', policy: rest.length ? policyOf(rest[0]) : undefined, json };
    }
  }

  if (flags.has('--unload')) {
    only(['--unload', '--json', '--verbose', '-v']);
    if (positional.length === 0) throw new UsageError('--unload needs the interfaces: <tunnel-if>... <uplink-if> --unload');
    return { cmd: 'unload', names: positional, verbose, json };
  }
  if (positional.length < 2) {
    throw new UsageError(positional.length === 0 ? 'no interfaces given: preserve-dscp <tunnel-if>... <uplink-if>' : 'give at least one tunnel interface and the uplink: preserve-dscp <tunnel-if>... <uplink-if>');
  }
  const carrier = (opts.get('--carrier') ?? 'auto') as Carrier | 'auto';
  if (!['auto', 'map', 'hash'].includes(carrier)) throw new UsageError(`--carrier is map, hash or auto, not '${carrier}'`);
  let mapSize: number | undefined;
  if (opts.has('--map-size')) {
    const t = opts.get('--map-size') as string;
    if (!/^\d+$/.test(t) || Number(t) < 1 || Number(t) > 1 << 26) throw new UsageError(`--map-size needs a number of flows 1-${1 << 26}, got '${t}'`);
    mapSize = Number(t);
  }
  const sport = opts.has('--outer-sport') ? port(opts.get('--outer-sport') as string, '--outer-sport') : undefined;
  const dport = opts.has('--outer-dport') ? port(opts.get('--outer-dport') as string, '--outer-dport') : undefined;
  const outerCheck = !flags.has('--no-outer-check');
  if (!outerCheck && (sport || dport)) throw new UsageError('--no-outer-check conflicts with --outer-sport/--outer-dport');
  if (!outerCheck && carrier === 'hash') throw new UsageError('the hash carrier always checks the outer port: drop --no-outer-check');
  return {
    cmd: 'attach',
    tunnels: positional.slice(0, -1),
    uplink: positional[positional.length - 1],
    carrier,
    sport,
    dport,
    outerCheck,
    mapSize,
    policy: opts.has('--policy') ? policyOf(opts.get('--policy') as string) : undefined,
    verbose,
    json,
  };
}

function policyOf(spec: string): number[] {
  try {
    return parsePolicy(spec);
  } catch (e) {
    if (e instanceof PolicyError) throw new UsageError(e.message);
    throw e;
  }
}

export const HELP = `preserve-dscp: carry the DSCP of packets entering a tunnel onto its outer packets

Usage:
  preserve-dscp [options] <tunnel-if>... <uplink-if>          attach
  preserve-dscp <tunnel-if>... <uplink-if> --unload            remove (also after the tunnel is deleted)
  preserve-dscp <uplink-if> --unload                           remove the uplink and all its tunnels
  preserve-dscp status [--json]                                what is attached where, counters
  preserve-dscp gc                                             remove what deleted interfaces left behind
  preserve-dscp policy [SPEC]                                  show or change the DSCP policy in place
  preserve-dscp demo [--json]                                  show it working on throwaway namespaces
  preserve-dscp watch [--config FILE] [--cleanup-on-exit]      keep tunnels matching FILE attached
                                                               (default /etc/preserve-dscp.json)
  preserve-dscp doctor [--json]                                check what the tool needs

Attach options:
  --carrier auto|hash|map   how the mark travels to the uplink: in each packet's flow
                            hash (exact per packet; needs the outer UDP port) or in a map
                            per flow. auto: hash where the port is known (default)
  --outer-sport PORT        the tunnel's outer packets leave from this UDP port
                            (WireGuard: read from the interface)
  --outer-dport PORT        the tunnel's outer packets go to this UDP port
                            (VXLAN, Geneve: read from the interface)
  --no-outer-check          remark by flow hash alone, without the outer port check (map carrier)
  --map-size N              flows in the shared map (default 16384, LRU)
  --policy SPEC             carry only some classes: e.g. ef,af41 (others leave as 0),
                            ef,cs1=0,*=keep (remap), all (default)
Common options:
  --json                    machine-readable output
  -v, --verbose             more detail; the verifier log when the kernel refuses a program
  -h, --help, -V, --version

Exit status: 0 success, 1 operational error, 2 usage error.
Warning: an outer DSCP tells anyone on the path which class of traffic is inside the tunnel.
`;
