/** The few libc calls Node does not offer: close(2) on raw fds, flock(2). */
import koffi from 'koffi';

let bound: ReturnType<typeof bind> | undefined;

function bind(l: ReturnType<typeof koffi.load>) {
  return {
    close: l.func('int close(int fd)'),
    flock: l.func('int flock(int fd, int op)'),
  };
}

function libc() {
  bound ??= bind(koffi.load('libc.so.6'));
  return bound;
}

export const LOCK_EX = 2;
export const LOCK_UN = 8;

export function closeFd(fd: number): void {
  if (fd >= 0) libc().close(fd);
}

/** Blocking flock(2); returns 0 or -errno. */
export function flock(fd: number, op: number): number {
  return libc().flock(fd, op) === 0 ? 0 : -koffi.errno();
}
