/** Whether this process may load BPF programs and change tc: root, or the capabilities. */
import { readFileSync } from 'node:fs';

const CAP_NET_ADMIN = 12n;
const CAP_SYS_ADMIN = 21n;
const CAP_BPF = 39n;

export function privileges(): { root: boolean; caps: boolean } {
  const root = process.getuid?.() === 0;
  try {
    const line = readFileSync('/proc/self/status', 'utf8').split('\n').find((l) => l.startsWith('CapEff:')) ?? '';
    const eff = BigInt(`0x${line.split(/\s+/)[1] ?? '0'}`);
    const has = (cap: bigint) => ((eff >> cap) & 1n) === 1n;
    // CAP_SYS_ADMIN stands in for CAP_BPF on kernels before 5.8.
    return { root, caps: has(CAP_NET_ADMIN) && (has(CAP_BPF) || has(CAP_SYS_ADMIN)) };
  } catch {
    return { root, caps: root };
  }
}
