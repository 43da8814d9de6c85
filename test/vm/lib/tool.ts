/** The command line as a user runs it (nsenter --net: no remount of /sys), and shared test set-up. */
import type { StatusReport } from '../../../src/status.js';
import { cli, cliOk, requireBuild } from '../../e2e/lib/env.js';

export { CLI, REPO, requireBuild } from '../../e2e/lib/env.js';

/** preserve-dscp args in ns; must exit 0; returns stdout. */
export const pd = (ns: string, args: string[]) => cliOk(ns, args, 'nsenter');
/** preserve-dscp args in ns; any exit status. */
export const pdRun = (ns: string, args: string[]) => cli(ns, args, 'nsenter');

export async function status(ns: string): Promise<StatusReport> {
  return JSON.parse(await pd(ns, ['status', '--json'])) as StatusReport;
}

/** Refuses to run outside the test VM (the host kernel has no WireGuard). */
export function vmOnly(): void {
  if (process.env.PRESERVE_DSCP_VM !== '1') throw new Error('run inside the test VM: npm run test:vm');
  requireBuild();
}

export const CS1 = 8;
export const AF41 = 34;
export const EF = 46;
export const CS6 = 48;
export const DSCPS = [0, CS1, AF41, EF, CS6];

/** Seconds since t0 (ms), one decimal. */
export const secs = (t0: number) => Math.round((Date.now() - t0) / 100) / 10;
