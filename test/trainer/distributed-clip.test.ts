// CLIP's global-batch negatives in a data-parallel step: real rings over a real nats-server, in one process (one
// CLIP per rank, identical init), against one process training on the concatenated batch.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/model/backend.ts';
import { Clip } from '../../src/model/clip.ts';
import { tokenize } from '../../src/model/tokenizer.ts';
import { CollectiveTimeoutError, type Ring } from '../../src/transport/allreduce.ts';
import { clipGlobalLoss, type StageBatch } from '../../src/trainer/models.ts';
import { flatGradients, identityReduce, trainStep, type Reduce } from '../../src/trainer/step.ts';
import { startNats, type NatsServer } from '../helpers/nats.ts';
import { openRings } from '../transport/ring-fixtures.ts';
import { tinyConfig } from './fixtures.ts';

const CAPTIONS = ['a red circle', 'a blue square', 'a green triangle', 'a small yellow star', 'two red squares', 'a large blue circle', 'a green star on the left', 'a yellow triangle'];
const LR = 1e-3;

let nats: NatsServer;
before(async () => {
  await initBackend(process.env.EASEL_BACKEND === 'wasm' ? 'wasm' : 'cpu');
  nats = await startNats({ jetstream: false });
});
after(() => nats.stop());

const clipConfig = () => tinyConfig('unused', 'unused').stages.clip.model;

/** Rows [from, from + n) of a seeded batch of CAPTIONS.length examples. */
function batchRows(clip: Clip, from: number, n: number): StageBatch {
  return tf.tidy(() => {
    const s = clip.config.imageSize;
    const all = tf.randomUniform([CAPTIONS.length, s, s, 3], -1, 1, 'float32', 17) as tf.Tensor4D;
    return { images: tf.slice(all, [from], [n]), tokens: tokenize(CAPTIONS.slice(from, from + n), clip.config.contextLength) };
  });
}

/** The trainer's reduce: the mean of the ranks' gradients weighted by the rows each held (distributed.ts). */
function weightedReduce(ring: Ring, rows: number, step: number): Reduce {
  return async (flat) => {
    const v = new Float32Array(flat.length + 1);
    for (let i = 0; i < flat.length; i++) v[i] = flat[i] * rows;
    v[flat.length] = rows;
    const r = await ring.allReduce(v, { step });
    return r.values.subarray(0, flat.length).map((x) => x / r.values[flat.length]);
  };
}

/** max |a - b| / max |b|. */
function relativeError(a: Float32Array, b: Float32Array): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return diff / scale;
}

/**
 * relativeError of the updated weights, over the elements whose gradient is above float noise. Adam's first step
 * moves every weight by about lr·g/(|g| + ε), whatever |g| is, so a gradient that is zero in exact arithmetic (a
 * key projection's bias: softmax ignores a constant per query) and ~1e-9 in float32 moves its weight by noise.
 */
function weightsError(dist: Float32Array, single: Float32Array, grad: Float32Array): { error: number; noise: number } {
  const top = grad.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
  const keep = grad.map((g) => (g === 0 || Math.abs(g) > 1e-6 * top ? 1 : 0));
  const pick = (a: Float32Array) => a.filter((_, i) => keep[i]);
  return { error: relativeError(pick(dist), pick(single)), noise: keep.length - keep.reduce((n, k) => n + k, 0) };
}

const weightsOf = (clip: Clip) => Float32Array.from([...clip.params().values()].flatMap((v) => [...(v.dataSync() as Float32Array)]));

/**
 * One CLIP step on `world` ranks holding `rows[r]` examples each (consecutive slices of CAPTIONS), all over real
 * rings; returns each rank's reduced gradient and updated weights, plus the own-batch-only (wrong) gradient.
 */
async function distributedStep(rows: number[]) {
  const world = rows.length;
  const { rings, close } = await openRings(nats.url, world, {}, 'clip-step');
  const clips = rows.map(() => new Clip(clipConfig(), 7));
  const optimizers = rows.map(() => tf.train.adam(LR));
  const offsets = rows.map((_, r) => rows.slice(0, r).reduce((a, b) => a + b, 0));
  const batches = rows.map((n, r) => (n > 0 ? batchRows(clips[r], offsets[r], n) : undefined));
  const maxRows = Math.max(...rows);
  try {
    const globals = await Promise.all(rings.map((ring, r) => clipGlobalLoss(clips[r], batches[r], maxRows, r, (e) => ring.allGather(e, { step: 0 }))));
    globals.forEach((g) => assert.deepEqual(g.rows, rows));
    const reduced: Float32Array[] = [];
    const steps = rings.map((ring, r) => {
      const loss = globals[r].loss ?? (() => tf.mul(tf.sum(clips[r].logitScale), 0) as tf.Scalar);
      const reduce = weightedReduce(ring, rows[r], 0);
      return trainStep({ params: clips[r].params(), loss, optimizer: optimizers[r], learningRate: LR, reduce: async (f) => (reduced[r] = await reduce(f)) });
    });
    const results = await Promise.all(steps);
    // Own-batch negatives (what the trainer did before): each rank's loss over its own rows only, weighted mean.
    const fresh = new Clip(clipConfig(), 7);
    const total = rows.reduce((a, b) => a + b, 0);
    const ownOnly = new Float32Array(reduced[0].length);
    rows.forEach((n, r) => {
      if (n === 0) return;
      const b = batchRows(fresh, offsets[r], n);
      const g = flatGradients(fresh.params(), () => fresh.loss(b)).flat;
      for (let i = 0; i < g.length; i++) ownOnly[i] += (g[i] * n) / total;
      tf.dispose([b.images, b.tokens]);
    });
    fresh.dispose();
    return { reduced, weights: clips.map(weightsOf), losses: results.map((x) => x.loss), ownOnly };
  } finally {
    for (const b of batches) if (b) tf.dispose([b.images, b.tokens]);
    clips.forEach((c) => c.dispose());
    optimizers.forEach((o) => o.dispose());
    await close();
  }
}

/** The same step in one process on the concatenated batch. */
async function singleStep(n: number) {
  const clip = new Clip(clipConfig(), 7);
  const optimizer = tf.train.adam(LR);
  const batch = batchRows(clip, 0, n);
  try {
    let flat: Float32Array = new Float32Array(0);
    const r = await trainStep({ params: clip.params(), loss: () => clip.loss(batch), optimizer, learningRate: LR, reduce: async (f) => (flat = await identityReduce(f)) });
    return { flat, weights: weightsOf(clip), loss: r.loss };
  } finally {
    tf.dispose([batch.images, batch.tokens]);
    clip.dispose();
    optimizer.dispose();
  }
}

test('two ranks with global-batch negatives take the same CLIP step as one process on the concatenated batch', async () => {
  const single = await singleStep(8);
  const dist = await distributedStep([4, 4]);
  assert.deepEqual(dist.reduced[0], dist.reduced[1], 'ranks hold the same reduced gradient');
  assert.deepEqual(dist.weights[0], dist.weights[1], 'ranks hold the same weights');
  // The loss each rank computes is the global batch's.
  for (const l of dist.losses) assert.ok(Math.abs(l - single.loss) < 1e-5 * single.loss, `loss ${l} vs ${single.loss}`);
  const gradError = relativeError(dist.reduced[0], single.flat);
  const weights = weightsError(dist.weights[0], single.weights, single.flat);
  const ownError = relativeError(dist.ownOnly, single.flat);
  if (process.env.EASEL_TEST_LOGS) console.log({ gradError, weights, ownError, params: single.flat.length });
  assert.ok(gradError < 1e-5, `reduced gradient differs from one process's by ${gradError} (relative)`);
  assert.ok(weights.error < 1e-5, `updated weights differ from one process's by ${weights.error} (relative)`);
  assert.ok(weights.noise < single.flat.length / 100, `${weights.noise} gradients at float noise`);
  // The test can tell: each rank using only its own batch as negatives gives a clearly different gradient.
  assert.ok(ownError > 1000 * gradError && ownError > 0.05, `own-batch gradient differs from the global one by only ${ownError}`);
});

test('ranks of unequal batches, one of them empty, still take one process’s CLIP step', async () => {
  const single = await singleStep(4);
  const dist = await distributedStep([3, 0, 1]);
  for (const r of [1, 2]) assert.deepEqual(dist.weights[r], dist.weights[0], `rank ${r} weights`);
  const gradError = relativeError(dist.reduced[0], single.flat);
  const ownError = relativeError(dist.ownOnly, single.flat);
  assert.ok(gradError < 1e-5, `reduced gradient differs from one process's by ${gradError} (relative)`);
  const weights = weightsError(dist.weights[0], single.weights, single.flat);
  if (process.env.EASEL_TEST_LOGS) console.log({ gradError, weights, ownError });
  assert.ok(weights.error < 1e-5, `updated weights differ from one process's by ${weights.error} (relative)`);
  assert.ok(weights.noise < single.flat.length / 100, `${weights.noise} gradients at float noise`);
  assert.ok(ownError > 0.05, `own-batch gradient differs from the global one by only ${ownError}`);
});

test('distributed CLIP steps hold the same number of tensors after every step', async () => {
  const { rings, close } = await openRings(nats.url, 2, {}, 'clip-leak');
  const clips = [0, 1].map(() => new Clip(clipConfig(), 7));
  const optimizers = [0, 1].map(() => tf.train.adam(LR));
  try {
    const counts: number[] = [];
    for (let step = 0; step < 4; step++) {
      // Rank 1 runs dry at step 2 (an empty batch, as at the end of an epoch).
      const rows = [3, step === 2 ? 0 : 2];
      await Promise.all(
        rings.map(async (ring, r) => {
          const batch = rows[r] > 0 ? batchRows(clips[r], 3 * r, rows[r]) : undefined;
          try {
            const g = await clipGlobalLoss(clips[r], batch, 3, r, (e) => ring.allGather(e, { step }));
            const loss = g.loss ?? (() => tf.mul(tf.sum(clips[r].logitScale), 0) as tf.Scalar);
            await trainStep({ params: clips[r].params(), loss, optimizer: optimizers[r], learningRate: LR, reduce: weightedReduce(ring, rows[r], step) });
          } finally {
            if (batch) tf.dispose([batch.images, batch.tokens]);
          }
        }),
      );
      counts.push(tf.memory().numTensors);
    }
    // Adam creates its moments at the first step; from then on the count is flat.
    assert.ok(counts.slice(1).every((n) => n === counts[1]), `tensors after each step: ${counts.join(' ')}`);
  } finally {
    clips.forEach((c) => c.dispose());
    optimizers.forEach((o) => o.dispose());
    await close();
  }
});

test('a CLIP gather whose peer never joins times out (the trainer abandons the step) and leaks nothing', async () => {
  const { rings, close } = await openRings(nats.url, 2, { timeoutMs: 300 }, 'clip-timeout');
  const clip = new Clip(clipConfig(), 7);
  const batch = batchRows(clip, 0, 2);
  try {
    const before = tf.memory().numTensors;
    await assert.rejects(
      clipGlobalLoss(clip, batch, 2, 0, (e) => rings[0].allGather(e, { step: 0 })),
      (err) => err instanceof CollectiveTimeoutError,
    );
    assert.equal(tf.memory().numTensors, before);
  } finally {
    tf.dispose([batch.images, batch.tokens]);
    clip.dispose();
    await close();
  }
});

test('gathered embeddings that do not parse as the configured batch are refused with a clear error', async () => {
  const clip = new Clip(clipConfig(), 7);
  const batch = batchRows(clip, 0, 2);
  try {
    // A peer claims 5 rows where every rank gathers at most 2 (a rank running another config).
    const liar = async (own: Float32Array) => {
      const peer = new Float32Array(own.length);
      peer[0] = 5;
      return Float32Array.from([...own, ...peer]);
    };
    await assert.rejects(clipGlobalLoss(clip, batch, 2, 0, liar), /rank 1 sent 5 rows.*same config/);
  } finally {
    tf.dispose([batch.images, batch.tokens]);
    clip.dispose();
  }
});
