/**
 * `preserve-dscp doctor`: checks what the tool needs and says what is missing
 * and how to get it. Kernel features are tried for real in a throwaway
 * network namespace, not guessed from configuration files.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { privileges } from './kernel/caps.js';
import { libbpfVersion } from './kernel/libbpf.js';
import { loadObject } from './kernel/object.js';
import { ensureClsact, attachEgress, queryEgress } from './kernel/tc.js';
import { ALL_PROGRAMS, FILTER } from './layout.js';
import { findObject } from './ops.js';

export interface Check {
  name: string;
  ok: boolean;
  required: boolean;
  detail: string;
}

function has(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** Runs in a throwaway namespace (the hidden `__probe` command): clsact + cls_bpf on lo, and WireGuard. */
export function probeNamespace(objectPath: string): { tc: string; wireguard: string } {
  let tc = 'ok';
  try {
    const obj = loadObject(objectPath, { programs: ['pdscp_up_l2'], maxEntries: { pdscp_flows: 16 } });
    try {
      ensureClsact(1);
      attachEgress(1, FILTER, obj.progFd('pdscp_up_l2'), false);
      if (queryEgress(1, FILTER) === undefined) tc = 'filter not found after attach';
    } finally {
      obj.close();
    }
  } catch (e) {
    tc = e instanceof Error ? e.message : String(e);
  }
  const wg = spawnSync('ip', ['link', 'add', 'pdscp-probe', 'type', 'wireguard'], { encoding: 'utf8' });
  return { tc, wireguard: wg.status === 0 ? 'ok' : (wg.stderr.trim() || 'not supported') };
}

export function doctor(selfArgv: string[]): Check[] {
  const checks: Check[] = [];
  const add = (name: string, ok: boolean, required: boolean, detail: string) => checks.push({ name, ok, required, detail });

  const { root, caps } = privileges();
  add('privileges', root || caps, true, root ? 'root' : caps ? 'CAP_BPF/CAP_SYS_ADMIN and CAP_NET_ADMIN' : 'run as root, or grant CAP_BPF and CAP_NET_ADMIN');
  add('kernel', true, false, readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim());

  let libbpfOk = false;
  try {
    add('libbpf', true, true, `libbpf.so.1 version ${libbpfVersion()}`);
    libbpfOk = true;
  } catch (e) {
    add('libbpf', false, true, e instanceof Error ? e.message : String(e));
  }
  const obj = findObject();
  add('BPF object', existsSync(obj), true, existsSync(obj) ? obj : `${obj} missing: npm run build (needs clang and libbpf-dev)`);
  if (libbpfOk && existsSync(obj) && (root || caps)) {
    try {
      loadObject(obj, { programs: [...ALL_PROGRAMS], maxEntries: { pdscp_flows: 16 } }).close();
      add('BPF programs', true, true, `the kernel verifier accepts all ${ALL_PROGRAMS.length} programs`);
    } catch (e) {
      add('BPF programs', false, true, `${e instanceof Error ? e.message : String(e)} (kernel needs CONFIG_BPF_SYSCALL; 5.10+ recommended)`);
    }
  }
  add('BTF', existsSync('/sys/kernel/btf/vmlinux'), false, existsSync('/sys/kernel/btf/vmlinux') ? '/sys/kernel/btf/vmlinux' : 'no kernel BTF (not needed by preserve-dscp)');
  for (const cmd of ['ip', 'tc']) add(cmd, has(cmd), true, has(cmd) ? 'found' : 'install iproute2');

  if ((root || caps) && has('ip') && existsSync(obj) && libbpfOk) {
    const ns = `pdscp-doctor-${process.pid}`;
    try {
      execFileSync('ip', ['netns', 'add', ns], { stdio: 'ignore' });
      execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up'], { stdio: 'ignore' });
      const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, ...selfArgv, '__probe'], { encoding: 'utf8' });
      const probe = JSON.parse(r.stdout || '{}') as { tc?: string; wireguard?: string };
      add('tc clsact + cls_bpf', probe.tc === 'ok', true, probe.tc === 'ok' ? 'attached a filter in a throwaway namespace' : `${probe.tc ?? r.stderr.trim()} (kernel needs CONFIG_NET_SCH_INGRESS and CONFIG_NET_CLS_BPF)`);
      add('WireGuard', probe.wireguard === 'ok', false, probe.wireguard === 'ok' ? 'the kernel can make WireGuard devices' : `not available (${probe.wireguard}); other tunnels work with --outer-sport/--outer-dport or the map carrier`);
    } catch (e) {
      add('tc clsact + cls_bpf', false, true, `could not probe: ${e instanceof Error ? e.message : String(e)}`);
    } finally {
      spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    }
  }
  add('wg (wireguard-tools)', has('wg'), false, has('wg') ? 'found: WireGuard listen ports are read automatically' : 'install wireguard-tools to read WireGuard listen ports');
  const bpffs = readFileSync('/proc/mounts', 'utf8').split('\n').some((l) => l.split(' ')[2] === 'bpf');
  add('bpffs', bpffs, false, bpffs ? 'mounted (not needed)' : 'not mounted (not needed: state is found through the kernel)');
  add('tcpdump', has('tcpdump'), false, has('tcpdump') ? 'found (used by the demo)' : 'install tcpdump to run the demo');
  return checks;
}
