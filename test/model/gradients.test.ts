// Every op easel's models differentiate through: tfjs's analytic gradient (with easel's kernels installed) agrees
// with central finite differences of the same forward pass, on each backend easel trains on.
// Finite differences in float32: the loss Σ f(x)·w is summed in float64 from the op's float32 output, and compared
// along random directions v — (L(x+εv) − L(x−εv)) / 2ε against ⟨∇L, v⟩ — so a wrong gradient anywhere (one batch
// element, one axis) shows, while float32 round-off stays far below the tolerance.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { initBackend } from '../../src/model/backend.ts';
import { useEaselKernels } from '../../src/model/kernels/index.ts';
import { Rng } from '../../src/util/rng.ts';

const BACKENDS = ['wasm', 'cpu'] as const;
const EPS = 1e-2;
const DIRECTIONS = 3;

before(async () => {
  await initBackend('wasm');
  useEaselKernels('cpu');
});

interface Input { values: number[]; shape: number[]; dtype?: 'int32'; /** distinct values spaced ≫ ε (max pooling) */ spaced?: boolean }
function normal(shape: number[], seed: number): Input {
  const rng = new Rng(seed), n = shape.reduce((a, b) => a * b, 1);
  return { values: Array.from({ length: n }, () => rng.float() * 2 - 1), shape };
}
/** Distinct values 0.05 apart in random order: no two in a pooling window within ε of each other. */
function spaced(shape: number[], seed: number): Input {
  const n = shape.reduce((a, b) => a * b, 1);
  const values = new Rng(seed).shuffle(Array.from({ length: n }, (_, i) => (i - n / 2) * 0.05));
  return { values, shape, spaced: true };
}
const ints = (values: number[]): Input => ({ values, shape: [values.length], dtype: 'int32' });

type Op = (...xs: tf.Tensor[]) => tf.Tensor;

/** Σ f(xs)·w in float64, from the float32 output. */
function loss(f: Op, xs: Input[], w: number[]): number {
  const y = tf.tidy(() => f(...xs.map((x) => tf.tensor(x.values, x.shape, x.dtype ?? 'float32'))).dataSync());
  let sum = 0;
  for (let i = 0; i < y.length; i++) sum += y[i] * w[i];
  return sum;
}

async function checkGradient(backend: string, f: Op, xs: Input[], seed = 1) {
  await tf.setBackend(backend);
  const outSize = tf.tidy(() => f(...xs.map((x) => tf.tensor(x.values, x.shape, x.dtype ?? 'float32'))).size);
  const w = normal([outSize], seed + 100).values;
  const live = xs.map((x, i) => i).filter((i) => xs[i].dtype !== 'int32');
  const grads = tf.tidy(() => {
    const ts = xs.map((x) => tf.tensor(x.values, x.shape, x.dtype ?? 'float32'));
    const wt = tf.tensor(w);
    const g = tf.grads((...vs: tf.Tensor[]) => {
      const args = ts.map((t, i) => (live.includes(i) ? vs[live.indexOf(i)] : t));
      return tf.sum(tf.mul(tf.reshape(f(...args), [-1]), wt));
    })(live.map((i) => ts[i]));
    return g.map((t) => Array.from(t.dataSync()));
  });
  live.forEach((input, k) => {
    assert.equal(grads[k].length, xs[input].values.length, `gradient of input ${input} has the input's size`);
    for (let d = 0; d < DIRECTIONS; d++) {
      const v = normal(xs[input].shape, seed * 31 + input * 7 + d).values;
      const eps = xs[input].spaced ? EPS / 10 : EPS;
      const shifted = (sign: number) => xs.map((x, i) => (i === input ? { ...x, values: x.values.map((e, j) => e + sign * eps * v[j]) } : x));
      const numeric = (loss(f, shifted(1), w) - loss(f, shifted(-1), w)) / (2 * eps);
      let analytic = 0, scale = 0;
      for (let j = 0; j < v.length; j++) {
        analytic += grads[k][j] * v[j];
        scale += Math.abs(grads[k][j] * v[j]);
      }
      assert.ok(Math.abs(numeric - analytic) <= 2e-3 * scale + 1e-4,
        `input ${input}, direction ${d}: finite difference ${numeric}, analytic ${analytic} (scale ${scale}) on ${backend}`);
    }
  });
}

const layerNorm = (x: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => {
  const { mean, variance } = tf.moments(x, -1, true);
  return tf.add(tf.mul(tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, 1e-5))), g), b);
};
const groupNorm = (x: tf.Tensor, groups: number) => {
  const [b, h, w, c] = x.shape;
  const grouped = tf.reshape(x, [b, h, w, groups, c / groups]);
  const { mean, variance } = tf.moments(grouped, [1, 2, 4], true);
  return tf.reshape(tf.mul(tf.sub(grouped, mean), tf.rsqrt(tf.add(variance, 1e-5))), x.shape);
};
const gelu = (x: tf.Tensor) =>
  tf.mul(tf.mul(x, 0.5), tf.add(1, tf.tanh(tf.mul(Math.sqrt(2 / Math.PI), tf.add(x, tf.mul(0.044715, tf.pow(x, 3)))))));
const silu = (x: tf.Tensor) => tf.mul(x, tf.sigmoid(x));
/** Causal self-attention as the models write it: fused qkv, split by a rank-5 transpose, batched matMuls. */
const attention = (x: tf.Tensor, wqkv: tf.Tensor, heads: number) => {
  const [b, t, c] = x.shape, d = c / heads;
  const qkv = tf.transpose(tf.reshape(tf.matMul(x, wqkv), [b, t, 3, heads, d]), [2, 0, 3, 1, 4]);
  const [q, k, v] = tf.unstack(qkv);
  const mask = tf.mul(tf.sub(1, tf.linalg.bandPart(tf.ones([t, t]), -1, 0)), -1e9);
  const att = tf.softmax(tf.add(tf.div(tf.matMul(q, k, false, true), Math.sqrt(d)), mask));
  return tf.reshape(tf.transpose(tf.matMul(att, v), [0, 2, 1, 3]), [b, t, c]);
};

const CASES: Array<[string, Op, Input[]]> = [
  ['matMul', (a, b) => tf.matMul(a, b), [normal([4, 5], 1), normal([5, 3], 2)]],
  ['matMul with transposeA', (a, b) => tf.matMul(a, b, true, false), [normal([5, 4], 1), normal([5, 3], 2)]],
  ['matMul with transposeB', (a, b) => tf.matMul(a, b, false, true), [normal([4, 5], 1), normal([3, 5], 2)]],
  ['matMul with both transposed', (a, b) => tf.matMul(a, b, true, true), [normal([5, 4], 1), normal([3, 5], 2)]],
  ['batched matMul', (a, b) => tf.matMul(a, b), [normal([2, 3, 4], 1), normal([2, 4, 5], 2)]],
  ['batched matMul against a shared matrix', (a, b) => tf.matMul(a, b), [normal([2, 3, 4], 1), normal([4, 5], 2)]],
  ['broadcast batched matMul, transposed', (a, b) => tf.matMul(a, b, true, true), [normal([3, 4], 1), normal([2, 2, 5, 3], 2)]],
  ['batched matMul, both operands batched and transposed', (a, b) => tf.matMul(a, b, true, true), [normal([3, 6, 5], 1), normal([3, 4, 6], 2)]],
  ['conv2d 3×3 stride 1 same', (x, w) => tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 1, 'same'), [normal([2, 6, 5, 3], 1), normal([3, 3, 3, 4], 2)]],
  ['conv2d 3×3 stride 2 same', (x, w) => tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 2, 'same'), [normal([2, 6, 6, 3], 1), normal([3, 3, 3, 4], 2)]],
  ['conv2d 3×3 stride 2 valid', (x, w) => tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 2, 'valid'), [normal([2, 7, 6, 2], 1), normal([3, 3, 2, 3], 2)]],
  ['conv2d 1×1', (x, w) => tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 1, 'valid'), [normal([2, 4, 4, 3], 1), normal([1, 1, 3, 5], 2)]],
  ['conv2dTranspose 4×4 stride 2 (learned upsampling)', (x, w) => tf.conv2dTranspose(x as tf.Tensor4D, w as tf.Tensor4D, [2, 8, 8, 2], 2, 'same'), [normal([2, 4, 4, 3], 1), normal([4, 4, 2, 3], 2)]],
  ['nearest ×2 upsampling as concat + reshape', (x) => {
    const [b, h, w, c] = x.shape;
    const wide = tf.reshape(tf.concat([x, x], 3), [b, h, 2 * w, c]);
    return tf.reshape(tf.concat([wide, wide], 2), [b, 2 * h, 2 * w, c]);
  }, [normal([2, 3, 2, 3], 1)]],
  ['resizeNearestNeighbor ×2 upsampling, batch 2', (x) => tf.image.resizeNearestNeighbor(x as tf.Tensor4D, [8, 6]), [normal([2, 4, 3, 3], 1)]],
  ['gather (embedding lookup with repeated ids)', (table, ids) => tf.gather(table, ids as tf.Tensor1D), [normal([6, 4], 1), ints([2, 0, 2, 5, 2])]],
  ['softmax', (x) => tf.softmax(x), [normal([3, 7], 1)]],
  ['log-softmax cross-entropy', (logits, labels) => tf.neg(tf.mean(tf.sum(tf.mul(tf.oneHot(labels as tf.Tensor1D, 5), tf.logSoftmax(logits)), -1))), [normal([4, 5], 1), ints([0, 3, 3, 1])]],
  ['layer norm from moments', layerNorm, [normal([3, 4, 8], 1), normal([8], 2), normal([8], 3)]],
  ['group norm from moments (rank-5 reshape)', (x) => groupNorm(x, 2), [normal([2, 3, 3, 4], 1)]],
  ['group norm from moments (rank-4 reshape)', (x) => {
    const [b, h, w, c] = x.shape;
    const grouped = tf.reshape(x, [b, h * w, 2, c / 2]);
    const { mean, variance } = tf.moments(grouped, [1, 3], true);
    return tf.reshape(tf.mul(tf.sub(grouped, mean), tf.rsqrt(tf.add(variance, 1e-5))), x.shape);
  }, [normal([2, 3, 3, 4], 2)]],
  ['GELU (tanh form)', gelu, [normal([4, 6], 1)]],
  ['SiLU', silu, [normal([4, 6], 1)]],
  ['reshape and rank-5 transpose', (x) => tf.transpose(tf.reshape(x, [2, 3, 2, 2, 3]), [2, 0, 3, 1, 4]), [normal([2, 3, 12], 1)]],
  ['concat and slice', (a, b) => tf.slice(tf.concat([a, b], 1), [0, 1, 1], [2, 4, 2]), [normal([2, 3, 3], 1), normal([2, 2, 3], 2)]],
  ['mean and sum over axes', (x) => tf.add(tf.mean(x, [1, 2]), tf.sum(tf.square(x), [1, 2])), [normal([2, 3, 4, 2], 1)]],
  ['L2 normalisation', (x) => tf.div(x, tf.norm(x, 'euclidean', -1, true)), [normal([3, 5], 1)]],
  ['avgPool 2×2', (x) => tf.avgPool(x as tf.Tensor4D, 2, 2, 'valid'), [normal([2, 4, 6, 3], 1)]],
  ['maxPool 2×2', (x) => tf.maxPool(x as tf.Tensor4D, 2, 2, 'valid'), [spaced([2, 4, 6, 3], 1)]],
  ['maxPool 3×3 stride 1 same (overlapping windows)', (x) => tf.maxPool(x as tf.Tensor4D, 3, 1, 'same'), [spaced([2, 5, 5, 2], 2)]],
  // broadcastTo runs the Tile kernel: the prior's null tokens and query, the decoder's null caption.
  ['broadcastTo over a new batch axis (learned null tokens)', (x) => tf.broadcastTo(x, [3, 4, 5]), [normal([4, 5], 1)]],
  ['broadcastTo over size-1 axes (learned query)', (x) => tf.broadcastTo(tf.reshape(x, [1, 1, 5]), [3, 2, 5]), [normal([5], 1)]],
  // A cap on one side of the kink: spaced values 0.05 apart (-0.3 … 0.25) never come within ε of 0.125, and three lie above it.
  ['minimum with a constant (the capped logit scale)', (x) => tf.minimum(x, 0.125), [spaced([3, 4], 1)]],
  ['minimum of two tensors', (a, b) => tf.minimum(a, b), [spaced([3, 4], 1), { ...spaced([3, 4], 2), values: spaced([3, 4], 2).values.map((v) => v + 0.025) }]],
  ['logSumExp over rows and over columns (the contrastive loss)', (x) => tf.add(tf.logSumExp(x, 1, true), tf.logSumExp(x, 0, true)), [normal([4, 4], 1)]],
  ['causal self-attention', (x, w) => attention(x, w, 2), [normal([2, 4, 8], 1), normal([8, 24], 2)]],
];

for (const [name, f, inputs] of CASES) {
  for (const backend of BACKENDS) {
    test(`${name}: analytic gradient matches finite differences on ${backend}`, () => checkGradient(backend, f, inputs));
  }
}

test('a wrong gradient fails the check (the check can fail)', async () => {
  const wrong = tf.customGrad(((x: tf.Tensor, save: tf.GradSaveFunc) => {
    save([x]);
    return { value: tf.square(x), gradFunc: (dy: tf.Tensor, [saved]: tf.Tensor[]) => tf.mul(dy, tf.mul(saved, 2.05)) };
  }) as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as Op;
  await assert.rejects(checkGradient('cpu', wrong, [normal([3, 4], 1)]), /finite difference/);
});
