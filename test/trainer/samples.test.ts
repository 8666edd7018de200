// Sample grids during training (samples.every): written where and when they are due, decodable, the same for the
// same run, and without changing what the run trains.
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import sharp from 'sharp';
import * as tf from '@tensorflow/tfjs-core';
import { parseRunConfig } from '../../src/trainer/config.ts';
import { train } from '../../src/trainer/train.ts';
import { assertSameWeights, IMAGE_SIZE, tinyRun, weights, withTempDir, writeTinyDataset } from './fixtures.ts';

const STEPS = { clip: 2, prior: 2, decoder: 3, upsampler: 2 };

function sampledRun(data: string, ckpt: string) {
  return parseRunConfig({ ...tinyRun(data, ckpt, STEPS), samples: { every: 2, prompts: ['a red circle', 'a blue square', 'a green triangle'], n: 2, steps: 2 } });
}

test('the decoder and upsampler stages write a sample grid every N steps and at their ends; the run trains as one that does not sample', () =>
  withTempDir(async (dir) => {
    await writeTinyDataset(join(dir, 'data'));
    const counts: number[] = [];
    const a = await train(sampledRun(join(dir, 'data'), join(dir, 'a')), { onStep: (s) => s.stage === 'decoder' && counts.push(tf.memory().numTensors) });
    // Global steps: CLIP 1–2, prior 3–4, decoder 5–7 (grids after its steps 2 and 3), upsampler 8–9 (after 2).
    const grids = (await readdir(join(dir, 'a', 'samples'))).sort();
    assert.deepEqual(grids, ['step-000000006.png', 'step-000000007.png', 'step-000000009.png']);
    // 3 prompts × 2 images with 2-px gaps; the decoder draws at 8 px, the upsampler at 16 (cells scaled to ≈ 128 px).
    const size = async (f: string) => {
      const m = await sharp(join(dir, 'a', 'samples', f)).metadata();
      return [m.width, m.height];
    };
    const cell = (px: number) => px * Math.round(128 / px);
    assert.deepEqual(await size(grids[0]), [2 * cell(IMAGE_SIZE / 2) + 3 * 2, 3 * cell(IMAGE_SIZE / 2) + 4 * 2]);
    assert.deepEqual(await size(grids[2]), [2 * cell(IMAGE_SIZE) + 3 * 2, 3 * cell(IMAGE_SIZE) + 4 * 2]);
    // Drawing swaps the EMA weights in and out: nothing is left behind, and the live weights come back bit for bit.
    assert.deepEqual(counts.slice(1), new Array(counts.length - 1).fill(counts[1]), `tensors per decoder step: ${counts}`);
    const b = await train(parseRunConfig(tinyRun(join(dir, 'data'), join(dir, 'b'), STEPS)));
    assertSameWeights(weights(a), weights(b));
    // The same run draws the same grids.
    const c = await train(sampledRun(join(dir, 'data'), join(dir, 'c')));
    for (const f of grids) {
      const [x, y] = await Promise.all([join(dir, 'a'), join(dir, 'c')].map((d) => sharp(join(d, 'samples', f)).raw().toBuffer()));
      assert.ok(x.equals(y), f);
    }
    for (const r of [a, b, c]) r.dispose();
  }));
