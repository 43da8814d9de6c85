/**
 * Thin typed bindings to the system's libbpf.so.1 (libbpf >= 1.0) via koffi.
 * Structs are passed as Buffers laid out byte for byte as libbpf 1.x defines
 * them; every call returns plain numbers or throws a KernelError.
 */
import koffi from 'koffi';

export class KernelError extends Error {
  constructor(
    message: string,
    readonly errno: number,
  ) {
    super(message);
    this.name = 'KernelError';
  }
}

const LIBBPF_ERRNO_NAMES: Record<number, string> = {
  4000: 'libbpf: unknown error',
  4001: 'not a valid BPF ELF object',
  4002: 'kernel version mismatch',
  4003: 'kernel does not support the object',
  4004: 'relocation failed',
  4005: 'BPF program load failed',
  4006: 'unexpected program type',
  4007: 'kernel verifier rejected the program',
};

/** Human text for a positive errno value (also libbpf's 4000+ codes). */
export function errnoText(errno: number): string {
  if (LIBBPF_ERRNO_NAMES[errno]) return LIBBPF_ERRNO_NAMES[errno];
  const name = Object.entries(koffi.os.errno).find(([, v]) => v === errno)?.[0];
  const text: Record<string, string> = {
    EPERM: 'operation not permitted (needs root or CAP_BPF and CAP_NET_ADMIN)',
    EACCES: 'permission denied',
    ENOENT: 'no such object',
    ENODEV: 'no such device',
    EEXIST: 'already exists',
    EINVAL: 'invalid argument',
    ENOMEM: 'out of memory',
    E2BIG: 'too big',
    EOPNOTSUPP: 'operation not supported',
  };
  return name ? (text[name] ?? name) : `error ${errno}`;
}

let lib: ReturnType<typeof koffi.load> | undefined;
let fns: ReturnType<typeof bind> | undefined;

function bind(l: ReturnType<typeof koffi.load>) {
  return {
    libbpf_major_version: l.func('uint32_t libbpf_major_version(void)'),
    libbpf_minor_version: l.func('uint32_t libbpf_minor_version(void)'),
    libbpf_set_print: l.func('void *libbpf_set_print(void *fn)'),
    bpf_object__open_mem: l.func('void *bpf_object__open_mem(const void *buf, size_t sz, const void *opts)'),
    bpf_object__load: l.func('int bpf_object__load(void *obj)'),
    bpf_object__close: l.func('void bpf_object__close(void *obj)'),
    bpf_object__find_program_by_name: l.func('void *bpf_object__find_program_by_name(void *obj, const char *name)'),
    bpf_object__find_map_by_name: l.func('void *bpf_object__find_map_by_name(void *obj, const char *name)'),
    bpf_object__next_program: l.func('void *bpf_object__next_program(void *obj, void *prev)'),
    bpf_program__name: l.func('const char *bpf_program__name(void *prog)'),
    bpf_program__fd: l.func('int bpf_program__fd(void *prog)'),
    bpf_program__set_autoload: l.func('int bpf_program__set_autoload(void *prog, bool autoload)'),
    bpf_map__fd: l.func('int bpf_map__fd(void *map)'),
    bpf_map__reuse_fd: l.func('int bpf_map__reuse_fd(void *map, int fd)'),
    bpf_map__set_max_entries: l.func('int bpf_map__set_max_entries(void *map, uint32_t n)'),
    bpf_tc_hook_create: l.func('int bpf_tc_hook_create(void *hook)'),
    bpf_tc_hook_destroy: l.func('int bpf_tc_hook_destroy(void *hook)'),
    bpf_tc_attach: l.func('int bpf_tc_attach(const void *hook, void *opts)'),
    bpf_tc_detach: l.func('int bpf_tc_detach(const void *hook, const void *opts)'),
    bpf_tc_query: l.func('int bpf_tc_query(const void *hook, void *opts)'),
    bpf_prog_get_fd_by_id: l.func('int bpf_prog_get_fd_by_id(uint32_t id)'),
    bpf_map_get_fd_by_id: l.func('int bpf_map_get_fd_by_id(uint32_t id)'),
    bpf_obj_get_info_by_fd: l.func('int bpf_obj_get_info_by_fd(int fd, void *info, _Inout_ uint32_t *len)'),
    bpf_prog_bind_map: l.func('int bpf_prog_bind_map(int prog_fd, int map_fd, const void *opts)'),
    bpf_map_lookup_elem: l.func('int bpf_map_lookup_elem(int fd, const void *key, void *value)'),
    bpf_map_update_elem: l.func('int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)'),
    bpf_map_delete_elem: l.func('int bpf_map_delete_elem(int fd, const void *key)'),
    bpf_map_get_next_key: l.func('int bpf_map_get_next_key(int fd, const void *key, void *next)'),
    bpf_prog_test_run_opts: l.func('int bpf_prog_test_run_opts(int fd, void *opts)'),
    libbpf_num_possible_cpus: l.func('int libbpf_num_possible_cpus(void)'),
  };
}

/** The bound functions; loads libbpf.so.1 on first use. */
export function libbpf(): NonNullable<typeof fns> {
  if (fns) return fns;
  try {
    lib = koffi.load(process.env.PRESERVE_DSCP_LIBBPF ?? 'libbpf.so.1');
  } catch {
    throw new KernelError('libbpf.so.1 not found: install libbpf (Debian/Ubuntu: apt install libbpf1; OpenWrt: opkg install libbpf)', 0);
  }
  try {
    fns = bind(lib);
  } catch {
    throw new KernelError('libbpf.so.1 lacks functions preserve-dscp needs: libbpf 1.0 or newer is needed', 0);
  }
  const major = fns.libbpf_major_version();
  if (major < 1) throw new KernelError(`libbpf ${major}.${fns.libbpf_minor_version()} is too old: 1.0 or newer is needed`, 0);
  // Silence libbpf's own stderr printing: errors are reported by the tool,
  // verifier logs are captured through kernel_log_buf.
  fns.libbpf_set_print(null);
  return fns;
}

export function libbpfVersion(): string {
  const f = libbpf();
  return `${f.libbpf_major_version()}.${f.libbpf_minor_version()}`;
}

/** Throws for a negative libbpf return value (libbpf returns -errno). */
export function check(ret: number, what: string): number {
  if (ret < 0) throw new KernelError(`${what}: ${errnoText(-ret)}`, -ret);
  return ret;
}

/** Checks a pointer-returning call: null means failure with errno set. */
export function checkPtr(ptr: bigint | null, what: string): bigint {
  if (!ptr) {
    const e = koffi.errno();
    throw new KernelError(`${what}: ${errnoText(e)}`, e);
  }
  return ptr;
}

export function addressOf(buf: Buffer): bigint {
  return koffi.address(buf);
}

export function errno(): number {
  return koffi.errno();
}
