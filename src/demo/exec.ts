/** Small process helpers shared by the demo and the end-to-end tests. */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';

export class CommandError extends Error {
  constructor(
    message: string,
    readonly status: number | null,
    readonly stderr: string,
  ) {
    super(message);
  }
}

/** Runs a command, returns stdout; throws CommandError with stderr on failure. */
export function sh(cmd: string, args: string[], opts: { input?: string; timeoutMs?: number } = {}): string {
  try {
    return execFileSync(cmd, args, {
      encoding: 'utf8',
      input: opts.input,
      stdio: ['pipe', 'pipe', 'pipe'],
      timeout: opts.timeoutMs ?? 30_000,
      maxBuffer: 64 << 20,
    });
  } catch (e) {
    const err = e as { status?: number | null; stderr?: string | Buffer; message: string };
    const stderr = String(err.stderr ?? '').trim();
    throw new CommandError(`${cmd} ${args.join(' ')}: ${stderr || err.message}`, err.status ?? null, stderr);
  }
}

/** Like sh but never throws: for cleanup. */
export function shQuiet(cmd: string, args: string[]): boolean {
  try {
    execFileSync(cmd, args, { stdio: 'ignore', timeout: 15_000 });
    return true;
  } catch {
    return false;
  }
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command asynchronously and collects its output (never rejects on exit status). */
export function runAsync(cmd: string, args: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], env: opts.env ?? process.env });
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
    if (child.stdin) {
      child.stdin.on('error', () => {}); // the child may exit without reading
      child.stdin.end(opts.input);
    }
  });
}

/** Temporary directories made by the helpers, removed by emergency cleanup too. */
export const liveTempDirs = new Set<string>();

/** Children started by the helpers, so a signal handler can end them all. */
export const liveChildren = new Set<ChildProcess>();

export function track(child: ChildProcess): ChildProcess {
  liveChildren.add(child);
  child.on('exit', () => liveChildren.delete(child));
  return child;
}

/** Waits until the child writes `marker` on the given stream (or fails on exit/timeout). */
export function waitFor(child: ChildProcess, stream: 'stdout' | 'stderr', marker: string | RegExp, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const src = child[stream];
    if (!src) return reject(new Error(`child has no ${stream}`));
    const done = (err?: Error) => {
      clearTimeout(timer);
      src.off('data', onData);
      child.off('exit', onExit);
      if (err) reject(err);
      else resolve(seen);
    };
    const onData = (d: Buffer | string) => {
      seen += d.toString();
      if (typeof marker === 'string' ? seen.includes(marker) : marker.test(seen)) done();
    };
    const onExit = (code: number | null) => done(new Error(`child exited (${code}) before '${marker}': ${seen.trim()}`));
    const timer = setTimeout(() => done(new Error(`timed out waiting for '${marker}': ${seen.trim()}`)), timeoutMs);
    src.on('data', onData);
    child.on('exit', onExit);
  });
}

/** Stops a child: signal, then SIGKILL after graceMs; resolves when it has exited. */
export function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill(signal);
  });
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
