// The ring's WebAssembly SIMD kernels against plain JavaScript: same bytes for the arithmetic, and the chunk
// checksum against a BigInt reference of its definition.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Kernels, checksum32, foldSums } from '../../src/transport/kernels.ts';

/** Deterministic float32 values across the whole exponent range, with subnormals and values near overflow. */
function wideVector(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  const next = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  for (let i = 0; i < n; i++) out[i] = (next() - 0.5) * 2 ** Math.floor(next() * 300 - 150);
  if (n > 3) {
    out[1] = 1.4e-45; // smallest subnormal
    out[2] = 3.3e38; // near the largest float32: sums overflow
  }
  return out;
}

const bytes = (x: Float32Array) => new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
const same = (x: Float32Array, y: Float32Array) => Buffer.from(bytes(x)).equals(Buffer.from(bytes(y)));

test('the SIMD add and mean give the bytes of the float32 JavaScript loops, tails included', () => {
  const k = Kernels.create(1000);
  for (const n of [0, 1, 3, 4, 5, 7, 8, 9, 999, 1000]) {
    const a = wideVector(n, n);
    const b = wideVector(n, n + 7);
    k.a.set(a);
    k.b.set(b);
    k.add(n);
    const sum = a.map((x, i) => x + b[i]);
    assert.ok(same(k.out.subarray(0, n), sum), `add, n=${n}`);
    for (const w of [2, 3, 7]) {
      const mean = a.map((x, i) => Math.fround(Math.fround(x + b[i]) / w));
      const finite = k.mean(n, w);
      assert.ok(same(k.out.subarray(0, n), mean), `mean, n=${n}, w=${w}`);
      assert.equal(finite, mean.every(Number.isFinite), `finite flag, n=${n}`);
    }
  }
  assert.throws(() => k.add(1001), /do not fit/);
});

test('mean flags a NaN or ±Inf in the vector part and in the tail', () => {
  const k = Kernels.create(16);
  for (const at of [0, 5, 8, 9]) {
    for (const bad of [NaN, Infinity, -Infinity]) {
      k.a.fill(1);
      k.b.fill(2);
      k.a[at] = bad;
      assert.equal(k.mean(10, 3), false, `${bad} at ${at}`);
    }
  }
  k.a.fill(1);
  assert.equal(k.mean(10, 3), true);
});

/** checksum32 by its definition, in BigInt. */
function referenceChecksum(body: Uint8Array): number {
  const padded = new Uint8Array(Math.ceil(body.length / 16) * 16);
  padded.set(body);
  const dv = new DataView(padded.buffer);
  const s1 = [0n, 0n, 0n, 0n];
  const s2 = [0n, 0n, 0n, 0n];
  for (let block = 0; block < padded.length; block += 16) {
    for (let lane = 0; lane < 4; lane++) {
      s1[lane] = BigInt.asUintN(64, s1[lane] + BigInt(dv.getUint32(block + 4 * lane, true)));
      s2[lane] = BigInt.asUintN(64, s2[lane] + s1[lane]);
    }
  }
  const words = new Uint32Array(16);
  [...s1, ...s2].forEach((v, i) => {
    words[2 * i] = Number(v & 0xffffffffn);
    words[2 * i + 1] = Number(v >> 32n);
  });
  return foldSums(words, body.length);
}

test('checksum32 is its definition, for every length modulo 16', () => {
  let seed = 1;
  for (const length of [0, 2, 4, 6, 8, 14, 16, 18, 30, 100, 4098, 65_538]) {
    const body = new Uint8Array(length).map(() => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 24);
    body.fill(0xff, 0, Math.min(length, 64)); // carries into the high halves of the 64-bit sums
    assert.equal(checksum32(body), referenceChecksum(body), `length ${length}`);
  }
});

test('checksum32 changes with any flipped bit, any two flipped bits, a swap of two words and the length', () => {
  const body = new Uint8Array(64).map((_, i) => (i * 37) & 0xff);
  const sum = checksum32(body);
  const bits = body.length * 8;
  for (let i = 0; i < bits; i++) {
    const one = body.slice();
    one[i >> 3] ^= 1 << (i & 7);
    assert.notEqual(checksum32(one), sum, `bit ${i}`);
    for (let j = i + 1; j < bits; j += 7) {
      const two = one.slice();
      two[j >> 3] ^= 1 << (j & 7);
      assert.notEqual(checksum32(two), sum, `bits ${i} and ${j}`);
    }
  }
  const swapped = body.slice();
  swapped.set(body.subarray(0, 4), 16);
  swapped.set(body.subarray(16, 20), 0);
  assert.notEqual(checksum32(swapped), sum, 'words 0 and 4 (one lane) swapped');
  assert.notEqual(checksum32(new Uint8Array(16)), checksum32(new Uint8Array(32)), 'zeros of another length');
});

test('outChecksum reads the kernel output in place: the checksum of the same bytes', () => {
  const k = Kernels.create(100);
  for (const n of [0, 1, 5, 100]) {
    k.out.set(wideVector(n, 3));
    k.out.fill(7, n); // stale bytes after n elements are not part of the checksum
    assert.equal(k.outChecksum(n), checksum32(bytes(k.out.slice(0, n))), `n=${n}`);
  }
});

test('kernels write into a send arena in place, read b and arena bodies in place, and refuse memory they do not own', () => {
  const k = Kernels.create(100, 1000);
  const arena = k.arena(1);
  assert.equal(arena.byteLength, 1000);
  assert.ok(k.owns(arena) && k.owns(k.arena(0)) && !k.owns(new Uint8Array(1000)));
  // Arenas and scratch vectors do not overlap.
  const spans = [k.a, k.b, k.out, k.arena(0), k.arena(1)].map((v) => [v.byteOffset, v.byteOffset + v.byteLength]).sort((x, y) => x[0] - y[0]);
  for (let i = 1; i < spans.length; i++) assert.ok(spans[i][0] >= spans[i - 1][1], 'regions overlap');
  for (const n of [1, 5, 99]) {
    const a = wideVector(n, 11);
    const b = wideVector(n, 12);
    k.a.set(a);
    k.b.set(b);
    const body = arena.subarray(60, 60 + n * 4); // 4-byte aligned, as a message body after its 56-byte header + slack
    arena.fill(0xee);
    k.add(n, body);
    assert.ok(same(new Float32Array(body.slice().buffer), a.map((x, i) => x + b[i])), `add into the arena, n=${n}`);
    assert.equal(arena[60 + n * 4], 0xee, 'nothing written past the body');
    const expected = checksum32(body.slice());
    assert.equal(k.checksumInPlace(body), expected, `in-place checksum of an arena body, n=${n}`);
    assert.equal(k.bChecksum(n), checksum32(bytes(b)), `b read in place, n=${n}`);
    assert.equal(k.mean(n, 3, body), a.map((x, i) => Math.fround(Math.fround(x + b[i]) / 3)).every(Number.isFinite));
    assert.ok(same(new Float32Array(body.slice().buffer), a.map((x, i) => Math.fround(Math.fround(x + b[i]) / 3))), `mean into the arena, n=${n}`);
  }
  assert.throws(() => k.add(10, new Uint8Array(40)), /kernels' memory/);
  assert.throws(() => k.add(10, arena.subarray(0, 36)), /kernels' memory/);
  assert.throws(() => k.checksumInPlace(new Uint8Array(16)), /not in the kernels/);
});
