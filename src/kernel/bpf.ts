/**
 * BPF objects by fd and id: program and map info, map element access,
 * BPF_PROG_TEST_RUN. Every fd handed out is owned by the caller.
 */
import { addressOf, check, errno, KernelError, libbpf, errnoText } from './libbpf.js';
import { closeFd } from './libc.js';

export interface ProgInfo {
  id: number;
  type: number;
  name: string;
  mapIds: number[];
}

export interface MapInfo {
  id: number;
  type: number;
  name: string;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
}

function cstr(buf: Buffer, off: number, len: number): string {
  const s = buf.subarray(off, off + len);
  const end = s.indexOf(0);
  return s.subarray(0, end < 0 ? len : end).toString('latin1');
}

/** bpf_prog_info: offsets of struct bpf_prog_info in linux/bpf.h. */
export function progInfo(fd: number): ProgInfo {
  const f = libbpf();
  const info = Buffer.alloc(232);
  const len = [info.length];
  check(f.bpf_obj_get_info_by_fd(fd, info, len), 'reading BPF program info');
  const nrMaps = info.readUInt32LE(52);
  const ids = Buffer.alloc(4 * Math.max(nrMaps, 1));
  const info2 = Buffer.alloc(232);
  info2.writeUInt32LE(nrMaps, 52);
  info2.writeBigUInt64LE(addressOf(ids), 56);
  check(f.bpf_obj_get_info_by_fd(fd, info2, [info2.length]), 'reading BPF program map ids');
  const mapIds: number[] = [];
  for (let i = 0; i < Math.min(nrMaps, info2.readUInt32LE(52)); i++) mapIds.push(ids.readUInt32LE(4 * i));
  return { id: info.readUInt32LE(4), type: info.readUInt32LE(0), name: cstr(info, 64, 16), mapIds };
}

/** bpf_map_info: offsets of struct bpf_map_info in linux/bpf.h. */
export function mapInfo(fd: number): MapInfo {
  const info = Buffer.alloc(88);
  check(libbpf().bpf_obj_get_info_by_fd(fd, info, [info.length]), 'reading BPF map info');
  return {
    type: info.readUInt32LE(0),
    id: info.readUInt32LE(4),
    keySize: info.readUInt32LE(8),
    valueSize: info.readUInt32LE(12),
    maxEntries: info.readUInt32LE(16),
    flags: info.readUInt32LE(20),
    name: cstr(info, 24, 16),
  };
}

export function progFdById(id: number): number {
  return check(libbpf().bpf_prog_get_fd_by_id(id), `opening BPF program ${id}`);
}

export function mapFdById(id: number): number {
  return check(libbpf().bpf_map_get_fd_by_id(id), `opening BPF map ${id}`);
}

/** Keeps map alive as long as the program is, without the program using it. */
export function bindMap(progFd: number, mapFd: number): void {
  check(libbpf().bpf_prog_bind_map(progFd, mapFd, null), 'binding map to program');
}

export const BPF_ANY = 0n;
export const BPF_NOEXIST = 1n;
const ENOENT = 2;

/** A map opened by fd, with its key and value sizes. */
export class BpfMap {
  readonly info: MapInfo;
  constructor(readonly fd: number) {
    this.info = mapInfo(fd);
  }

  static byId(id: number): BpfMap {
    const fd = mapFdById(id);
    try {
      return new BpfMap(fd);
    } catch (e) {
      closeFd(fd);
      throw e;
    }
  }

  /** Value size as seen from userspace: per-CPU maps return one value per possible CPU, each 8-byte aligned. */
  get userValueSize(): number {
    return isPerCpu(this.info.type) ? roundUp8(this.info.valueSize) * possibleCpus() : this.info.valueSize;
  }

  lookup(key: Buffer): Buffer | undefined {
    const value = Buffer.alloc(this.userValueSize);
    const r = libbpf().bpf_map_lookup_elem(this.fd, key, value);
    if (r < 0) {
      if (-r === ENOENT || errno() === ENOENT) return undefined;
      throw new KernelError(`reading map ${this.info.name}: ${errnoText(-r)}`, -r);
    }
    return value;
  }

  update(key: Buffer, value: Buffer, flags = BPF_ANY): void {
    check(libbpf().bpf_map_update_elem(this.fd, key, value, flags), `writing map ${this.info.name}`);
  }

  /** Returns false when the key was not there. */
  delete(key: Buffer): boolean {
    const r = libbpf().bpf_map_delete_elem(this.fd, key);
    if (r < 0 && -r === ENOENT) return false;
    check(r, `deleting from map ${this.info.name}`);
    return true;
  }

  *keys(): Generator<Buffer> {
    let prev: Buffer | null = null;
    for (;;) {
      const next = Buffer.alloc(this.info.keySize);
      const r = libbpf().bpf_map_get_next_key(this.fd, prev, next);
      if (r < 0) {
        if (-r === ENOENT) return;
        check(r, `listing map ${this.info.name}`);
      }
      yield next;
      prev = next;
    }
  }

  /** Number of entries (walks the keys). */
  count(): number {
    let n = 0;
    for (const _ of this.keys()) n++;
    return n;
  }

  close(): void {
    closeFd(this.fd);
  }
}

const PERCPU_TYPES = new Set([5 /* PERCPU_HASH */, 6 /* PERCPU_ARRAY */, 10 /* LRU_PERCPU_HASH */, 21 /* PERCPU_CGROUP_STORAGE */]);
export function isPerCpu(type: number): boolean {
  return PERCPU_TYPES.has(type);
}
function roundUp8(n: number): number {
  return (n + 7) & ~7;
}
let cpus: number | undefined;
export function possibleCpus(): number {
  cpus ??= check(libbpf().libbpf_num_possible_cpus(), 'counting possible CPUs');
  return cpus;
}

export interface TestRunResult {
  retval: number;
  /** Average ns per run as measured by the kernel. */
  duration: number;
  data: Buffer;
  ctx?: Buffer;
}

/** BPF_PROG_TEST_RUN; ctx is a struct __sk_buff (192 bytes) for tc programs. */
export function testRun(progFd: number, data: Buffer, opts: { repeat?: number; ctx?: Buffer } = {}): TestRunResult {
  const o = Buffer.alloc(80);
  const out = Buffer.alloc(data.length + 256);
  const inBuf = Buffer.from(data);
  o.writeBigUInt64LE(80n, 0);
  o.writeBigUInt64LE(addressOf(inBuf), 8);
  o.writeBigUInt64LE(addressOf(out), 16);
  o.writeUInt32LE(inBuf.length, 24);
  o.writeUInt32LE(out.length, 28);
  let ctxOut: Buffer | undefined;
  if (opts.ctx) {
    ctxOut = Buffer.alloc(opts.ctx.length);
    o.writeBigUInt64LE(addressOf(opts.ctx), 32);
    o.writeBigUInt64LE(addressOf(ctxOut), 40);
    o.writeUInt32LE(opts.ctx.length, 48);
    o.writeUInt32LE(ctxOut.length, 52);
  }
  o.writeInt32LE(opts.repeat ?? 1, 60);
  check(libbpf().bpf_prog_test_run_opts(progFd, o), 'BPF_PROG_TEST_RUN');
  return {
    retval: o.readInt32LE(56),
    duration: o.readUInt32LE(64),
    data: out.subarray(0, o.readUInt32LE(28)),
    ctx: ctxOut,
  };
}
