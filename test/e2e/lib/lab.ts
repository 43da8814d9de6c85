/**
 * Throwaway namespaces for the tests: each test gets a Lab with its own
 * prefix, removed in a finally block even when the test fails.
 */
import { after } from 'node:test';
import assert from 'node:assert/strict';
import { disposeLab, emergencyCleanup, type Lab, leftoverOfProcess, newLab } from '../../../src/demo/lab.js';
import { shQuiet } from '../../../src/demo/exec.js';

export { makeVxlanPair, type VxlanPair, type Lab, inNetns } from '../../../src/demo/lab.js';

export const E2E_PREFIX = 'pdscp-e2e';

function slug(name: string): string {
  return name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 24);
}

/** Runs fn with a fresh Lab named after the test; the Lab's namespaces are deleted afterwards. */
export async function withLab<T>(testName: string, fn: (lab: Lab) => Promise<T>): Promise<T> {
  const lab = newLab(`${E2E_PREFIX}-${slug(testName)}`);
  try {
    return await fn(lab);
  } finally {
    disposeLab(lab);
  }
}

/**
 * Registers the per-file safety net: on exit of the file's tests, kill helper
 * children, delete what is left, and fail if any namespace this process made
 * was left. Only this process's namespaces: other test runs may be live.
 */
export function guardNamespaces(): void {
  process.on('exit', emergencyCleanup);
  after(() => {
    emergencyCleanup();
    const left = leftoverOfProcess();
    for (const ns of left) shQuiet('ip', ['netns', 'del', ns]);
    assert.deepEqual(left, [], 'namespaces left behind');
  });
}
