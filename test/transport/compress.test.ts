// 16-bit wire formats: error bounds, special values, round to nearest even.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeBf16, decodeF16, encodeBf16, encodeF16 } from '../../src/transport/compress.ts';
import { Rng } from '../../src/util/rng.ts';

function randomValues(n: number, seed: number, minExp: number, maxExp: number): Float32Array {
  const rng = new Rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (rng.float() < 0.5 ? -1 : 1) * (1 + rng.float()) * 2 ** Math.floor(minExp + rng.float() * (maxExp - minExp));
  return out;
}

test('bf16 round trip has relative error at most 2^-8 across float32 range', () => {
  const x = randomValues(100_000, 1, -120, 120);
  const y = decodeBf16(encodeBf16(x));
  let worst = 0;
  for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(y[i] - x[i]) / Math.abs(x[i]));
  assert.ok(worst <= 2 ** -8, `worst ${worst}`);
  assert.ok(worst > 2 ** -10, 'the bound is tight, not vacuous');
});

test('f16 round trip: relative error at most 2^-11 in the normal range, absolute 2^-25 below it', () => {
  const x = randomValues(100_000, 2, -14, 15);
  const y = decodeF16(encodeF16(x));
  let worst = 0;
  for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(y[i] - x[i]) / Math.abs(x[i]));
  assert.ok(worst <= 2 ** -11 && worst > 2 ** -13, `worst ${worst}`);
  const tiny = randomValues(10_000, 3, -30, -14);
  const t = decodeF16(encodeF16(tiny));
  for (let i = 0; i < tiny.length; i++) assert.ok(Math.abs(t[i] - tiny[i]) <= 2 ** -25, `${tiny[i]} → ${t[i]}`);
});

test('special values survive both formats; f16 overflows to infinity', () => {
  const x = new Float32Array([0, -0, Infinity, -Infinity, NaN, 65504, 70000, -1e6, 1, -2.5]);
  const b = decodeBf16(encodeBf16(x));
  const h = decodeF16(encodeF16(x));
  assert.ok(Object.is(b[1], -0) && Object.is(h[1], -0));
  assert.deepEqual([b[2], b[3], h[2], h[3]], [Infinity, -Infinity, Infinity, -Infinity]);
  assert.ok(Number.isNaN(b[4]) && Number.isNaN(h[4]));
  assert.equal(h[5], 65504);
  assert.equal(h[6], Infinity);
  assert.equal(h[7], -Infinity);
  assert.deepEqual([b[8], b[9], h[8], h[9]], [1, -2.5, 1, -2.5]);
});

test('ties round to the even neighbour', () => {
  // 1 + 2^-8 lies halfway between bf16 neighbours 1 and 1 + 2^-7: even mantissa → 1.
  // 1 + 3·2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: even → 1 + 2^-6.
  assert.deepEqual([...decodeBf16(encodeBf16(new Float32Array([1 + 2 ** -8, 1 + 3 * 2 ** -8])))], [1, 1 + 2 ** -6]);
  assert.deepEqual([...decodeF16(encodeF16(new Float32Array([1 + 2 ** -11, 1 + 3 * 2 ** -11])))], [1, 1 + 2 ** -9]);
});

test('decoding is exact: every f16 bit pattern survives a round trip', () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const back = encodeF16(decodeF16(all));
  for (let i = 0; i < 65536; i++) {
    const nan = (i & 0x7c00) === 0x7c00 && (i & 0x3ff) !== 0;
    if (!nan) assert.equal(back[i], i, `0x${i.toString(16)}`);
  }
});
