import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fitsCaption } from '../../src/eval/evaluate.ts';
import type { GroundTruth } from '../../src/data/synth/index.ts';

const truth: GroundTruth = { shape: 'triangle', color: 'green', background: 'gray', size: 'small', width: 32, height: 32, cx: 16, cy: 16, extent: 10, split: 'eval', lang: 'en' };

test('a retrieved image is a hit only when it has every attribute the caption names', () => {
  assert.ok(fitsCaption('a small green triangle against a plain gray backdrop', truth));
  assert.ok(fitsCaption('A simple drawing of a green triangle.', truth));
  assert.ok(!fitsCaption('a medium green triangle', truth));
  assert.ok(!fitsCaption('a green triangle on a white background', truth));
  assert.ok(!fitsCaption('a yellow triangle', truth));
  assert.ok(!fitsCaption('a green square', truth));
});

test('the colour–shape criterion ignores background and size', () => {
  assert.ok(fitsCaption('a large green triangle on a white background', truth, 'color-shape'));
  assert.ok(!fitsCaption('a large yellow triangle on a gray background', truth, 'color-shape'));
});
