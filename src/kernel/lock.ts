/** One lock for all invocations: flock(2) on a file under /run. */
import { closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { flock, LOCK_EX, LOCK_UN } from './libc.js';

export function lockPath(): string {
  if (process.env.PRESERVE_DSCP_LOCK) return process.env.PRESERVE_DSCP_LOCK;
  for (const dir of ['/run/lock', '/run', '/var/run', '/tmp']) if (existsSync(dir)) return `${dir}/preserve-dscp.lock`;
  return '/tmp/preserve-dscp.lock';
}

/** Runs fn while holding the lock; the kernel drops it if the process dies. */
export function withLock<T>(fn: () => T): T {
  const path = lockPath();
  mkdirSync(dirname(path), { recursive: true });
  const fd = openSync(path, 'a');
  try {
    const r = flock(fd, LOCK_EX);
    if (r < 0) throw new Error(`cannot lock ${path}: errno ${-r}`);
    return fn();
  } finally {
    flock(fd, LOCK_UN);
    closeSync(fd);
  }
}
