import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { COLORS, SHAPES, drawSpec, rasterize, renderImage } from '../../src/data/synth/index.ts';
import { Rng } from '../../src/util/rng.ts';
import { analyseShape, classifyMask } from '../../src/eval/shape-analyser.ts';

/** Accuracy of the analyser over `n` random synth renders (every shape, colour, background, size, position). */
async function accuracy(size: number, n: number, jpeg: boolean, seed: number) {
  const rng = new Rng(seed);
  let color = 0, shape = 0, background = 0;
  for (let i = 0; i < n; i++) {
    const spec = drawSpec(rng, { color: COLORS[i % COLORS.length], shape: SHAPES[i % SHAPES.length] }, size, size);
    const pixels = jpeg ? new Uint8Array(await sharp(await renderImage(spec, 'jpg')).raw().toBuffer()) : rasterize(spec);
    const r = analyseShape(pixels, size, size);
    if (r.color === spec.color) color++;
    if (r.shape === spec.shape) shape++;
    if (r.background === spec.background) background++;
  }
  return { color: color / n, shape: shape / n, background: background / n };
}

test('the analyser reads colour, shape and background of clean 32×32 synth renders without a mistake', async () => {
  const a = await accuracy(32, 48, false, 1);
  assert.deepEqual(a, { color: 1, shape: 1, background: 1 });
});

test('the analyser reads JPEG-compressed 32×32 synth renders (the dataset format) at ≥ 0.97 shape accuracy', async () => {
  const a = await accuracy(32, 48, true, 2);
  assert.equal(a.color, 1);
  assert.equal(a.background, 1);
  assert.ok(a.shape >= 0.97, `shape accuracy ${a.shape}`);
});

test('the analyser reads JPEG-compressed 16×16 renders, where small shapes are a few pixels, at ≥ 0.88 shape accuracy', async () => {
  const a = await accuracy(16, 96, true, 3);
  assert.ok(a.color >= 0.97, `colour accuracy ${a.color}`);
  assert.ok(a.shape >= 0.88, `shape accuracy ${a.shape}`);
});

test('the analyser tells a triangle from a square of the same area (not just any answer)', () => {
  const rng = new Rng(5);
  for (const shape of SHAPES) {
    const spec = { ...drawSpec(rng, { color: 'red', shape }, 32, 32), size: 'large' as const, cx: 16, cy: 16, extent: 20, background: 'white' as const };
    assert.equal(analyseShape(rasterize(spec), 32, 32).shape, shape);
  }
});

test('an empty image has zero foreground coverage', () => {
  const white = new Uint8Array(16 * 16 * 3).fill(255);
  const r = analyseShape(white, 16, 16);
  assert.equal(r.background, 'white');
  assert.equal(r.coverage, 0);
  assert.equal(classifyMask(new Float32Array(256), 16, 16), 'circle');
});
