import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, deriveSeed } from '../../src/util/rng.ts';

test('the same seed gives the same stream, and a restored state continues it', () => {
  const a = new Rng(42);
  const first = [a.float(), a.float()];
  const saved = a.state;
  const rest = [a.float(), a.int(10), a.seed()];
  assert.deepEqual([new Rng(42).float(), new Rng(42).float()][0], first[0]);
  const b = new Rng(saved);
  assert.deepEqual([b.float(), b.int(10), b.seed()], rest);
});

test('floats are uniform in [0,1)', () => {
  const r = new Rng(7);
  let sum = 0;
  for (let i = 0; i < 10000; i++) {
    const f = r.float();
    assert.ok(f >= 0 && f < 1);
    sum += f;
  }
  assert.ok(Math.abs(sum / 10000 - 0.5) < 0.02);
});

test('derived seeds differ when any part differs and repeat when all match', () => {
  assert.equal(deriveSeed(1, 2, 3), deriveSeed(1, 2, 3));
  assert.notEqual(deriveSeed(1, 2, 3), deriveSeed(1, 2, 4));
  assert.notEqual(deriveSeed(1, 2), deriveSeed(2, 1));
});
