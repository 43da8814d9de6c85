/**
 * `preserve-dscp watch`: keeps the kernel in the configured state. Listens
 * for link events (rtnetlink RTM_NEWLINK/RTM_DELLINK through `ip monitor
 * link`), then garbage-collects what vanished and attaches new tunnel
 * interfaces that match the configuration. SIGHUP reloads the file; SIGTERM
 * and SIGINT exit, leaving the datapath in place unless asked to remove it.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { describeAction } from './cli/format.js';
import { loadConfig, matches, type TunnelRule, type WatchConfig } from './config.js';
import { type Link, listLinks } from './kernel/links.js';
import { run } from './ops.js';
import { PlanError } from './plan.js';

export interface WatchOptions {
  configPath: string;
  /** remove everything the configuration attached when exiting */
  cleanupOnExit: boolean;
  log: (line: string) => void;
}

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
}

/** Uplinks of a tunnel from the routes to its peers (WireGuard endpoints honouring fwmark, VXLAN remote). */
export function autoUplinks(link: Link): string[] {
  const peers: string[] = [];
  let mark: string | undefined;
  try {
    if (link.kind === 'wireguard') {
      for (const line of sh('wg', ['show', link.name, 'endpoints']).split('\n')) {
        const ep = line.split('\t')[1];
        if (!ep || ep === '(none)') continue;
        peers.push(ep.startsWith('[') ? ep.slice(1, ep.indexOf(']')) : ep.slice(0, ep.lastIndexOf(':')));
      }
      const fw = sh('wg', ['show', link.name, 'fwmark']).trim();
      if (fw && fw !== 'off') mark = fw;
    } else if (link.kind === 'vxlan' || link.kind === 'geneve') {
      const info = JSON.parse(sh('ip', ['-j', '-d', 'link', 'show', 'dev', link.name]))[0]?.linkinfo?.info_data ?? {};
      if (info.remote) peers.push(info.remote);
      if (info.remote6) peers.push(info.remote6);
    }
  } catch {
    return [];
  }
  const devs = new Set<string>();
  for (const peer of peers) {
    try {
      const r = JSON.parse(sh('ip', ['-j', 'route', 'get', peer, ...(mark ? ['mark', mark] : [])]));
      if (r[0]?.dev && r[0].dev !== link.name) devs.add(r[0].dev);
    } catch {
      /* no route yet: retried on the next event */
    }
  }
  return [...devs];
}

/** One pass: forget what vanished, attach what matches. Returns log lines. */
export function reconcile(cfg: WatchConfig): string[] {
  const lines: string[] = [];
  const note = (prefix: string, r: ReturnType<typeof run>) => {
    for (const a of r.actions) {
      const d = describeAction(a);
      if (d) lines.push(`${prefix}${d}`);
    }
  };
  note('gc: ', run({ op: 'gc' }));
  const links = listLinks();
  const groups = new Map<string, { rule: TunnelRule; uplink: string; tunnels: string[] }>();
  for (const link of links) {
    const rule = cfg.tunnels.find((r) => matches(r.match, link.name));
    if (!rule) continue;
    const uplinks = rule.uplinks === 'auto' ? autoUplinks(link) : rule.uplinks.filter((u) => links.some((l) => l.name === u));
    for (const uplink of uplinks) {
      if (uplink === link.name) continue;
      const key = `${cfg.tunnels.indexOf(rule)}/${uplink}`;
      const g = groups.get(key) ?? { rule, uplink, tunnels: [] };
      g.tunnels.push(link.name);
      groups.set(key, g);
    }
  }
  for (const g of groups.values()) {
    try {
      note('', run({
        op: 'attach',
        tunnels: g.tunnels,
        uplink: g.uplink,
        carrier: g.rule.carrier,
        sport: g.rule.outerSport,
        dport: g.rule.outerDport,
        outerCheck: g.rule.outerCheck,
        mapSize: cfg.mapSize,
        policy: cfg.policy,
      }));
    } catch (e) {
      lines.push(`error: ${g.tunnels.join(',')} -> ${g.uplink}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  return lines;
}

/** Everything the configuration would attach, removed (for --cleanup-on-exit). */
function removeConfigured(cfg: WatchConfig): string[] {
  const names = listLinks().filter((l) => cfg.tunnels.some((r) => matches(r.match, l.name))).map((l) => l.name);
  if (names.length === 0) return [];
  try {
    const r = run({ op: 'unload', names });
    return r.actions.map(describeAction).filter((x): x is string => !!x);
  } catch (e) {
    if (e instanceof PlanError) return [];
    throw e;
  }
}

export function watch(opts: WatchOptions): Promise<void> {
  let cfg = loadConfig(opts.configPath);
  let monitor: ChildProcess | undefined;
  let timer: NodeJS.Timeout | undefined;
  let stopping = false;
  const pass = () => {
    timer = undefined;
    if (stopping) return;
    for (const line of reconcile(cfg)) opts.log(line);
  };
  const schedule = () => {
    timer ??= setTimeout(pass, 50);
  };
  return new Promise((resolve, reject) => {
    const stop = () => {
      if (stopping) return;
      stopping = true;
      if (timer) clearTimeout(timer);
      monitor?.kill('SIGTERM');
      if (opts.cleanupOnExit) for (const line of removeConfigured(cfg)) opts.log(`exit: ${line}`);
      opts.log('stopped');
      resolve();
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
    process.on('SIGHUP', () => {
      try {
        cfg = loadConfig(opts.configPath);
        opts.log(`reloaded ${opts.configPath}`);
        schedule();
      } catch (e) {
        opts.log(`reload failed, keeping the previous configuration: ${e instanceof Error ? e.message : String(e)}`);
      }
    });
    monitor = spawn('ip', ['-o', 'monitor', 'link'], { stdio: ['ignore', 'pipe', 'ignore'] });
    monitor.on('error', (e) => reject(new Error(`cannot run ip monitor: ${e.message}`)));
    monitor.on('exit', () => {
      if (!stopping) reject(new Error('ip monitor exited'));
    });
    monitor.stdout?.on('data', schedule);
    opts.log(`watching links with ${opts.configPath}`);
    pass();
  });
}
