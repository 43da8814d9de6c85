// Build: the BPF object (clang -target bpf) and the bundled CLI and library (esbuild).
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { build } from 'esbuild';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url)));
mkdirSync('dist', { recursive: true });

const clang = process.env.CLANG ?? 'clang';
const arch = execFileSync('uname', ['-m'], { encoding: 'utf8' }).trim();
const multiarch = { x86_64: 'x86_64-linux-gnu', aarch64: 'aarch64-linux-gnu' }[arch] ?? `${arch}-linux-gnu`;
const bpfFlags = ['-O2', '-g', '-fno-strict-aliasing', '-Wall', '-Werror', '-target', 'bpf', `-I/usr/include/${multiarch}`, '-Ibpf'];
execFileSync(clang, [...bpfFlags, '-c', 'bpf/preserve_dscp.bpf.c', '-o', 'dist/preserve_dscp.bpf.o'], { stdio: 'inherit' });

const common = {
  bundle: true,
  platform: 'node',
  target: 'node18',
  external: ['koffi'],
  define: { PRESERVE_DSCP_VERSION: JSON.stringify(pkg.version) },
  logLevel: 'warning',
  logOverride: { 'empty-import-meta': 'silent' },
};
await build({ ...common, entryPoints: ['src/cli/main.ts'], outfile: 'dist/cli.cjs', format: 'cjs' });
await build({ ...common, entryPoints: ['src/index.ts'], outfile: 'dist/index.cjs', format: 'cjs' });
await build({ ...common, entryPoints: ['src/index.ts'], outfile: 'dist/index.mjs', format: 'esm' });
execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json'], { stdio: 'inherit' });
console.log('built dist/preserve_dscp.bpf.o dist/cli.cjs dist/index.cjs dist/index.mjs dist/types/');
