import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/model/backend.ts';
import { clipScale, identityReduce, trainStep, type Reduce } from '../../src/trainer/step.ts';
import { learningRateAt } from '../../src/trainer/schedule.ts';
import { Ema, emaDecayAt } from '../../src/trainer/ema.ts';
import { regression } from './fixtures.ts';

await initBackend();

const snapshot = (params: Map<string, tf.Variable>) => [...params.values()].map((v) => Buffer.from((v.dataSync() as Float32Array).buffer));

test('the flat-vector step updates weights bit for bit as optimizer.minimize does', async () => {
  const a = regression(1);
  const b = regression(1);
  const optA = tf.train.adam(0.01);
  const optB = tf.train.adam(0.01);
  for (let i = 0; i < 5; i++) {
    const r = await trainStep({ params: a.params, loss: a.loss, optimizer: optA, reduce: identityReduce, learningRate: 0.01 });
    assert.equal(r.skipped, false);
    tf.dispose(optB.minimize(b.loss, false, [...b.params.values()]) ?? []);
  }
  assert.deepEqual(snapshot(a.params), snapshot(b.params));
  optA.dispose();
  optB.dispose();
  a.dispose();
  b.dispose();
});

test('a step leaks no tensors', async () => {
  const m = regression(2);
  const opt = tf.train.adam(0.01);
  await trainStep({ params: m.params, loss: m.loss, optimizer: opt, reduce: identityReduce, learningRate: 0.01, weightDecay: 0.1 });
  const before = tf.memory().numTensors;
  for (let i = 0; i < 5; i++) await trainStep({ params: m.params, loss: m.loss, optimizer: opt, reduce: identityReduce, learningRate: 0.01, weightDecay: 0.1 });
  assert.equal(tf.memory().numTensors, before);
  opt.dispose();
  m.dispose();
});

test('a NaN or Inf in the reduced gradient skips the step and changes nothing', async () => {
  const m = regression(3);
  const opt = tf.train.adam(0.01);
  await trainStep({ params: m.params, loss: m.loss, optimizer: opt, reduce: identityReduce, learningRate: 0.01 });
  const weights = snapshot(m.params);
  const optState = await opt.getWeights();
  const moments = optState.map((w) => Buffer.from((w.tensor.dataSync() as Float32Array | Int32Array).buffer));
  tf.dispose(optState[0].tensor); // the iteration count is a fresh tensor

  for (const poison of [NaN, Infinity, -Infinity]) {
    // As a distributed reduce would: another rank's bad value arrives in the reduced vector.
    const reduce = async (flat: Float32Array) => {
      const out = flat.slice();
      out[out.length - 1] = poison;
      return out;
    };
    const r = await trainStep({ params: m.params, loss: m.loss, optimizer: opt, reduce, learningRate: 0.01 });
    assert.equal(r.skipped, true);
    assert.ok(Number.isFinite(r.loss));
  }
  assert.deepEqual(snapshot(m.params), weights);
  const after = await opt.getWeights();
  assert.deepEqual(after.map((w) => Buffer.from((w.tensor.dataSync() as Float32Array | Int32Array).buffer)), moments);
  tf.dispose(after[0].tensor);
  opt.dispose();
  m.dispose();
});

test('decoupled weight decay shrinks matrices but not biases', async () => {
  const m = regression(4);
  const zeroGrad = async (flat: Float32Array) => new Float32Array(flat.length);
  m.params.get('l1.b')!.assign(tf.ones([8]));
  const w0 = m.params.get('l1.w')!.dataSync()[0];
  await trainStep({ params: m.params, loss: m.loss, optimizer: tf.train.sgd(0.5), reduce: zeroGrad, learningRate: 0.5, weightDecay: 0.2 });
  assert.ok(Math.abs(m.params.get('l1.w')!.dataSync()[0] - w0 * 0.9) < 1e-6);
  assert.deepEqual([...m.params.get('l1.b')!.dataSync()], new Array(8).fill(1));
  m.dispose();
});

test('clipScale brings a norm down to the limit and leaves one within it (or a limit of 0) alone', () => {
  assert.equal(clipScale(5, 1), 0.2);
  assert.equal(clipScale(0.5, 1), 1);
  assert.equal(clipScale(1, 1), 1);
  assert.equal(clipScale(5, 0), 1);
});

test('clipGradNorm applies the reduced gradient scaled to the limit, reports the norm before clipping, and leaves a smaller one alone', async () => {
  // Reference: the same step with the scaling done by hand in `reduce`, computed as trainStep computes it.
  const scaledTo = (limit: number): Reduce => async (flat) => {
    let s = 0;
    for (const g of flat) s += g * g;
    const scale = clipScale(Math.sqrt(s), limit);
    return flat.map((g) => g * scale);
  };
  const steps = async (clipGradNorm: number | undefined, reduce: Reduce) => {
    const m = regression(5);
    const opt = tf.train.sgd(0.1);
    const norms: number[] = [];
    for (let i = 0; i < 3; i++) norms.push((await trainStep({ params: m.params, loss: m.loss, optimizer: opt, reduce, learningRate: 0.1, clipGradNorm })).gradNorm);
    const w = snapshot(m.params);
    opt.dispose();
    m.dispose();
    return { w, norms };
  };
  const free = await steps(undefined, identityReduce);
  const limit = free.norms[0] / 4; // well below every step's norm: each one is clipped
  assert.ok(free.norms.every((n) => n > limit));
  const clipped = await steps(limit, identityReduce);
  const byHand = await steps(undefined, scaledTo(limit));
  assert.deepEqual(clipped.w, byHand.w);
  assert.notDeepEqual(clipped.w, free.w);
  assert.equal(clipped.norms[0], free.norms[0]); // the norm before clipping, for the metrics
  // A limit above every norm, or 0, changes nothing.
  assert.deepEqual((await steps(free.norms[0] * 100, identityReduce)).w, free.w);
  assert.deepEqual((await steps(0, identityReduce)).w, free.w);
});

test('the learning rate warms up linearly, then follows a cosine down to its floor', () => {
  const s = { lr: 1e-3, warmupSteps: 10, totalSteps: 110, minRatio: 0.1 };
  assert.equal(learningRateAt(s, 0), 1e-4);
  assert.equal(learningRateAt(s, 9), 1e-3);
  assert.ok(Math.abs(learningRateAt(s, 10) - 1e-3) < 1e-15);
  assert.ok(Math.abs(learningRateAt(s, 109) - 1e-4) < 1e-15);
  for (let i = 11; i < 110; i++) assert.ok(learningRateAt(s, i) < learningRateAt(s, i - 1));
});

test('the EMA starts at the weights, follows them with a warmed-up decay, and copies back', () => {
  const w = new Map([['w', tf.variable(tf.tensor1d([0, 0]))]]);
  const ema = new Ema(w);
  w.get('w')!.assign(tf.tensor1d([1, 2]));
  ema.update(w, 0.999, 0);
  const d = emaDecayAt(0.999, 0);
  assert.equal(d, 0.1);
  const got = ema.shadow.get('w')!.dataSync();
  assert.ok(Math.abs(got[0] - 0.9) < 1e-6 && Math.abs(got[1] - 1.8) < 1e-6);
  assert.equal(emaDecayAt(0.999, 1e6), 0.999);
  ema.copyTo(w);
  assert.deepEqual([...w.get('w')!.dataSync()], [...got]);
  ema.dispose();
  tf.dispose([...w.values()]);
});
