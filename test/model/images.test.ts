import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/model/backend.ts';
import { poolTo, scaleTo } from '../../src/model/images.ts';
import { buildModels, disposeModels, toStageBatch, disposeStageBatch } from '../../src/trainer/models.ts';
import { parseRunConfig } from '../../src/trainer/config.ts';
import { tinyRun } from '../trainer/fixtures.ts';

test('poolTo averages whole blocks (the same tensor at factor 1); a size that is not a whole factor is refused', async () => {
  await initBackend();
  const x = tf.tensor4d(Float32Array.from({ length: 4 * 4 * 3 }, (_, i) => i), [1, 4, 4, 3]);
  const pooled = poolTo(x, 2);
  assert.deepEqual(pooled.shape, [1, 2, 2, 3]);
  // Top-left block of channel 0: pixels (0,0), (0,1), (1,0), (1,1) hold 0, 3, 12, 15.
  assert.equal(pooled.dataSync()[0], (0 + 3 + 12 + 15) / 4);
  assert.equal(poolTo(x, 4), x);
  assert.throws(() => poolTo(x, 3), /cannot pool 4-pixel images to 3/);
  const up = scaleTo(pooled, 4);
  assert.deepEqual(up.shape, [1, 4, 4, 3]);
  assert.equal(scaleTo(x, 4), x);
  tf.dispose([x, pooled, up]);
});

test('a decoder below the data resolution trains on pooled images while CLIP embeds the full-resolution ones', async () => {
  await initBackend();
  const run = tinyRun('/unused', '/unused');
  run.stages.decoder.model.imageSize = run.data.imageSize / 2;
  run.stages.decoder.model.channelMults = [1];
  const config = parseRunConfig(run);
  const models = buildModels(config);
  const s = run.data.imageSize;
  const images = Float32Array.from({ length: 2 * s * s * 3 }, (_, i) => Math.sin(i));
  const host = { images, captions: ['a red circle', 'a blue square'] };
  const before = tf.memory().numTensors;
  const dec = toStageBatch(models, 'decoder', host, s);
  const clip = toStageBatch(models, 'prior', host, s);
  assert.deepEqual(dec.images.shape, [2, s / 2, s / 2, 3]);
  assert.deepEqual(clip.images.shape, [2, s, s, 3]);
  // The embedding the decoder is conditioned on is CLIP's embedding of the full-resolution image.
  assert.deepEqual(Array.from(dec.imageEmb!.dataSync()), Array.from(clip.imageEmb!.dataSync()));
  const pooledByHand = tf.tidy(() => tf.avgPool(tf.tensor4d(images, [2, s, s, 3]), 2, 2, 'valid'));
  assert.deepEqual(Array.from(dec.images.dataSync()), Array.from(pooledByHand.dataSync()));
  const loss = tf.tidy(() => models.decoder.loss({ images: dec.images, imageEmb: dec.imageEmb! }, 1));
  assert.ok(Number.isFinite(loss.dataSync()[0]));
  tf.dispose([loss, pooledByHand]);
  disposeStageBatch(dec);
  disposeStageBatch(clip);
  assert.equal(tf.memory().numTensors, before, 'no tensors left behind');
  disposeModels(models);
});
