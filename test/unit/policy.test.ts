import assert from 'node:assert/strict';
import { test } from 'node:test';
import { className, describePolicy, parseClass, parsePolicy } from '../../src/policy.js';

test('class names', () => {
  assert.equal(parseClass('ef'), 46);
  assert.equal(parseClass('AF41'), 34);
  assert.equal(parseClass('af11'), 10);
  assert.equal(parseClass('cs6'), 48);
  assert.equal(parseClass('le'), 1);
  assert.equal(parseClass('63'), 63);
  assert.throws(() => parseClass('af51'));
  assert.equal(className(46), 'EF');
  assert.equal(className(34), 'AF41');
  assert.equal(className(48), 'CS6');
  assert.equal(className(5), '5');
});

test('all is the identity', () => {
  assert.deepEqual(parsePolicy('all'), Array.from({ length: 64 }, (_, i) => i));
  assert.equal(describePolicy(parsePolicy('all')), 'all');
});

test('allow-list carries the listed classes and zeroes the rest', () => {
  const t = parsePolicy('ef,af41');
  assert.equal(t[46], 46);
  assert.equal(t[34], 34);
  assert.equal(t[8], 0);
  assert.equal(t.filter((v) => v !== 0).length, 2);
  assert.equal(describePolicy(t), 'AF41,EF,*=0');
});

test('remap and keep-the-rest', () => {
  const t = parsePolicy('cs1=0,af43=af41,*=keep');
  assert.equal(t[8], 0);
  assert.equal(t[38], 34);
  assert.equal(t[46], 46);
  assert.equal(t[10], 10);
});
