/**
 * Opening and loading a BPF ELF object with libbpf: maps can be reused from
 * an already loaded instance (found by id), programs can be left unloaded,
 * and the verifier's log is captured through kernel_log_buf.
 */
import { readFileSync } from 'node:fs';
import { addressOf, check, checkPtr, errnoText, KernelError, libbpf } from './libbpf.js';

export interface LoadOptions {
  /** map name -> fd of an existing map to use instead of creating one */
  reuseMaps?: Record<string, number>;
  /** map name -> max_entries for maps created by this load */
  maxEntries?: Record<string, number>;
  /** programs to load; the others are not loaded */
  programs: string[];
  /** kernel verifier log level (0: log only on failure) */
  logLevel?: number;
}

export class VerifierError extends KernelError {
  constructor(
    message: string,
    errno: number,
    readonly log: string,
  ) {
    super(message, errno);
  }
}

export interface LoadedObject {
  progFd(name: string): number;
  mapFd(name: string): number;
  /** Verifier log (with logLevel > 0). */
  log: string;
  /** Closes the object's fds; attached programs and their maps stay. */
  close(): void;
}

const LOG_SIZE = 4 << 20;
let logBuffer: Buffer | undefined;

export function loadObject(path: string, opts: LoadOptions): LoadedObject {
  const f = libbpf();
  let elf: Buffer;
  try {
    elf = readFileSync(path);
  } catch {
    throw new KernelError(`BPF object ${path} is missing: run npm run build`, 2);
  }
  // One log buffer for every load of the process (a load per attach would
  // otherwise allocate LOG_SIZE each time); only the text up to NUL is read.
  logBuffer ??= Buffer.alloc(LOG_SIZE);
  const log = logBuffer;
  log[0] = 0;
  const o = Buffer.alloc(80);
  o.writeBigUInt64LE(80n, 0);
  o.writeBigUInt64LE(addressOf(log), 56);
  o.writeBigUInt64LE(BigInt(LOG_SIZE), 64);
  o.writeUInt32LE(opts.logLevel ?? 0, 72);
  const obj = checkPtr(f.bpf_object__open_mem(elf, elf.length, o), `opening BPF object ${path}`);
  const logText = () => log.subarray(0, Math.max(0, log.indexOf(0))).toString();
  try {
    for (const [name, fd] of Object.entries(opts.reuseMaps ?? {})) {
      const map = checkPtr(f.bpf_object__find_map_by_name(obj, name), `BPF object has no map ${name}`);
      check(f.bpf_map__reuse_fd(map, fd), `reusing map ${name}`);
    }
    for (const [name, n] of Object.entries(opts.maxEntries ?? {})) {
      if (opts.reuseMaps?.[name] !== undefined) continue;
      const map = checkPtr(f.bpf_object__find_map_by_name(obj, name), `BPF object has no map ${name}`);
      check(f.bpf_map__set_max_entries(map, n), `sizing map ${name}`);
    }
    const wanted = new Set(opts.programs);
    for (const name of allPrograms(obj)) {
      const prog = f.bpf_object__find_program_by_name(obj, name);
      f.bpf_program__set_autoload(prog, wanted.has(name));
    }
    for (const name of wanted) checkPtr(f.bpf_object__find_program_by_name(obj, name), `BPF object has no program ${name}`);
    const r = f.bpf_object__load(obj);
    if (r < 0) {
      // Name the program that failed: load each wanted one on its own.
      const failed = opts.programs.length > 1 ? opts.programs.find((p) => !loads({ ...opts, programs: [p] }, path)) : opts.programs[0];
      throw new VerifierError(
        `the kernel rejected BPF program ${failed ?? '(object)'}: ${errnoText(-r)} (--verbose shows the verifier log)`,
        -r,
        logText(),
      );
    }
  } catch (e) {
    f.bpf_object__close(obj);
    throw e;
  }
  return {
    progFd(name) {
      const p = checkPtr(f.bpf_object__find_program_by_name(obj, name), `BPF object has no program ${name}`);
      return check(f.bpf_program__fd(p), `program ${name} is not loaded`);
    },
    mapFd(name) {
      const m = checkPtr(f.bpf_object__find_map_by_name(obj, name), `BPF object has no map ${name}`);
      return check(f.bpf_map__fd(m), `map ${name} is not created`);
    },
    get log() {
      return logText();
    },
    close() {
      f.bpf_object__close(obj);
    },
  };
}

function allPrograms(obj: bigint): string[] {
  const f = libbpf();
  const names: string[] = [];
  for (let p = f.bpf_object__next_program(obj, null); p; p = f.bpf_object__next_program(obj, p)) names.push(f.bpf_program__name(p));
  return names;
}

function loads(opts: LoadOptions, path: string): boolean {
  try {
    loadObject(path, opts).close();
    return true;
  } catch {
    return false;
  }
}
