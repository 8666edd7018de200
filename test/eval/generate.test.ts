import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/model/backend.ts';
import { generate, keptDraws } from '../../src/eval/generate.ts';
import { buildModels, disposeModels, type Models } from '../../src/trainer/models.ts';
import { tinyConfig } from '../trainer/fixtures.ts';

let models: Models;

before(async () => {
  await initBackend();
  models = buildModels(tinyConfig('unused', 'unused'));
  // A fresh decoder's zero-initialised output layers predict 0 whatever the conditioning, which guidance cannot
  // change; give every weight some signal so the conditional and unconditional predictions differ.
  let i = 0;
  for (const v of models.decoder.params().values()) v.assign(tf.tidy(() => tf.add(v, tf.randomNormal(v.shape, 0, 0.2, 'float32', 100 + i++))));
});

after(() => disposeModels(models));

const FAST = { steps: 2, priorSteps: 2, seed: 5 };
const bytes = (images: { data: Uint8Array }[]) => images.map((img) => Buffer.from(img.data));

test('without re-ranking the first n draws are kept in draw order; with it the n most similar, best first', () => {
  const scores = [0.1, 0.9, 0.5, 0.7];
  assert.deepEqual(keptDraws(scores, 2, false), [0, 1]);
  assert.deepEqual(keptDraws(scores, 2, true), [1, 3]);
  assert.deepEqual(keptDraws(scores, 4, true), [1, 3, 2, 0]);
  // Equal similarities keep their draw order.
  assert.deepEqual(keptDraws([0.5, 0.8, 0.5, 0.8], 3, true), [1, 3, 0]);
});

test('generate --rerank K keeps, of the K draws, the n with the highest CLIP similarity to the prompt, best first', async () => {
  // rerank 0 with n = K draws the very same K candidates (same seeds) and keeps them all, in draw order.
  const [all] = await generate(models, ['a red circle'], { ...FAST, n: 6 });
  const [top] = await generate(models, ['a red circle'], { ...FAST, n: 2, rerank: 6 });
  const best = all.scores.map((_, i) => i).sort((a, b) => all.scores[b] - all.scores[a]).slice(0, 2);
  assert.notDeepEqual(best, [0, 1], 'the draws came out best first already: the test would not see a missing re-ranking');
  assert.deepEqual(top.scores, best.map((i) => all.scores[i]));
  assert.deepEqual(bytes(top.images), bytes(best.map((i) => all.images[i])));
});

test('the decoder guidance reaches the sampler: guidance 1 and 4 draw different images, guidance 4 twice the same', async () => {
  const draw = async (guidance: number) => bytes((await generate(models, ['a red circle'], { ...FAST, n: 2, guidance }))[0].images);
  const [unguided, guided, again] = [await draw(1), await draw(4), await draw(4)];
  assert.deepEqual(guided, again);
  for (let i = 0; i < 2; i++) assert.ok(!unguided[i].equals(guided[i]), `image ${i} is the same with guidance 1 and 4`);
});
