// easel's replacement kernels compute what tfjs's reference (the cpu backend's stock kernels, or a plain loop where
// that one is wrong) computes, on every backend they are installed for, and leave no tensors behind.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { initBackend } from '../../src/model/backend.ts';
import { EASEL_KERNELS, useEaselKernels } from '../../src/model/kernels/index.ts';
import { nearestSources } from '../../src/model/kernels/resize-nearest-neighbor-grad.ts';
import { simplifyTranspose } from '../../src/model/kernels/transpose.ts';
import { Rng } from '../../src/util/rng.ts';

const BACKENDS = ['wasm', 'cpu'] as const;

before(async () => {
  await initBackend('wasm');
  useEaselKernels('cpu');
});

/** A plain-array input, so the same values reach every backend. */
interface Input { values: number[]; shape: number[]; dtype?: 'float32' | 'int32' }
function normal(shape: number[], seed: number): Input {
  const rng = new Rng(seed), n = shape.reduce((a, b) => a * b, 1);
  return { values: Array.from({ length: n }, () => rng.float() * 2 - 1), shape };
}

/** Runs `f` on `backend` (with or without easel's kernels) and returns its output's values and shape. */
async function run(backend: string, easel: boolean, inputs: Input[], f: (...xs: tf.Tensor[]) => tf.Tensor) {
  await tf.setBackend(backend);
  useEaselKernels(backend, easel);
  try {
    return tf.tidy(() => {
      const y = f(...inputs.map((i) => tf.tensor(i.values, i.shape, i.dtype ?? 'float32')));
      return { values: Array.from(y.dataSync()), shape: y.shape };
    });
  } finally {
    useEaselKernels(backend, true);
  }
}

function assertClose(got: { values: number[]; shape: number[] }, want: { values: number[]; shape: number[] }, what: string) {
  assert.deepEqual(got.shape, want.shape, `${what}: shape`);
  const scale = Math.max(1, ...want.values.map(Math.abs));
  for (let i = 0; i < want.values.length; i++) {
    assert.ok(Math.abs(got.values[i] - want.values[i]) <= 1e-5 * scale, `${what}: element ${i} is ${got.values[i]}, reference ${want.values[i]}`);
  }
}

/** Checks `f` on every backend with easel's kernels against the cpu backend's stock kernels. */
async function matchesCpuStock(what: string, inputs: Input[], f: (...xs: tf.Tensor[]) => tf.Tensor) {
  const want = await run('cpu', false, inputs, f);
  for (const backend of BACKENDS) assertClose(await run(backend, true, inputs, f), want, `${what} on ${backend}`);
}

const bpFilter = (strides: number, pad: 'same' | 'valid' | number, filterShape: number[]) => (x: tf.Tensor, dy: tf.Tensor) =>
  tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, { strides, pad, dataFormat: 'NHWC', filterShape }) as tf.Tensor;
const bpInput = (strides: number, pad: 'same' | 'valid' | number, inputShape: number[]) => (dy: tf.Tensor, filter: tf.Tensor) =>
  tf.engine().runKernel('Conv2DBackpropInput', { dy, filter }, { strides, pad, dataFormat: 'NHWC', inputShape }) as tf.Tensor;

// [x shape, filter shape, stride, padding]: odd and even sizes, the UNet's 3×3 same / stride-2 down / 4×4 up cases.
const CONVS: Array<[number[], number[], number, 'same' | 'valid' | number]> = [
  [[2, 7, 6, 3], [3, 3, 3, 4], 1, 'same'],
  [[2, 7, 6, 3], [3, 3, 3, 4], 2, 'same'],
  [[2, 8, 8, 3], [3, 3, 3, 4], 2, 'same'],
  [[2, 7, 6, 3], [3, 3, 3, 4], 2, 'valid'],
  [[1, 5, 5, 2], [1, 1, 2, 3], 1, 'valid'],
  [[2, 8, 8, 3], [4, 4, 3, 2], 2, 1],
  [[2, 6, 9, 2], [2, 3, 2, 2], 3, 'same'],
];

for (const [xShape, wShape, stride, pad] of CONVS) {
  const label = `x ${xShape} filter ${wShape} stride ${stride} pad ${pad}`;
  test(`Conv2DBackpropFilter matches the reference for ${label}`, async () => {
    const info = tf.backend_util.computeConv2DInfo(xShape as [number, number, number, number], wShape as [number, number, number, number], stride, 1, pad);
    const dyShape = [xShape[0], info.outHeight, info.outWidth, wShape[3]];
    await matchesCpuStock('Conv2DBackpropFilter', [normal(xShape, 1), normal(dyShape, 2)], bpFilter(stride, pad, wShape));
  });
  test(`Conv2DBackpropInput matches the reference for ${label}`, async () => {
    const info = tf.backend_util.computeConv2DInfo(xShape as [number, number, number, number], wShape as [number, number, number, number], stride, 1, pad);
    const dyShape = [xShape[0], info.outHeight, info.outWidth, wShape[3]];
    await matchesCpuStock('Conv2DBackpropInput', [normal(dyShape, 3), normal(wShape, 4)], bpInput(stride, pad, xShape));
  });
}

// [a shape, b shape, transposeA, transposeB]: every path of batch-matmul.ts (2-D, shared b, shared a, batched on
// both sides as a depthwise conv, partial broadcasting), each with transposes.
const MATMULS: Array<[number[], number[], boolean, boolean]> = [
  [[5, 3], [3, 4], false, false],
  [[3, 5], [3, 4], true, false],
  [[5, 3], [4, 3], false, true],
  [[3, 5], [4, 3], true, true],
  [[2, 3, 5, 3], [3, 4], false, false],
  [[2, 3, 3, 5], [4, 3], true, true],
  [[5, 3], [2, 3, 4], false, false],
  [[3, 5], [2, 4, 3], true, true],
  [[3, 32, 32], [3, 32, 32], false, false],
  [[3, 40, 32], [3, 40, 33], true, false],
  [[2, 2, 33, 32], [2, 2, 34, 32], false, true],
  [[4, 5, 3], [4, 2, 3], false, true],
  [[2, 3, 5], [2, 4, 3], true, true],
  [[1, 3, 5], [1, 4, 3], true, true],
  [[2, 1, 5, 3], [1, 3, 3, 4], false, false],
];
for (const [aShape, bShape, ta, tb] of MATMULS) {
  test(`BatchMatMul matches the reference for a ${aShape}${ta ? 'ᵀ' : ''} × b ${bShape}${tb ? 'ᵀ' : ''}`, async () => {
    await matchesCpuStock('BatchMatMul', [normal(aShape, 5), normal(bShape, 6)], (a, b) => tf.matMul(a, b, ta, tb));
  });
}

test('UnsortedSegmentSum adds rows with the same id, drops out-of-range ids, keeps int32', async () => {
  const ids: Input = { values: [0, 2, 2, 4, 0, 1, -1, 7], shape: [8], dtype: 'int32' };
  await matchesCpuStock('UnsortedSegmentSum', [normal([8, 3, 2], 7), ids], (x, s) => tf.unsortedSegmentSum(x, s as tf.Tensor1D, 6));
  const ints: Input = { values: [1, 2, 3, 4, 5, 6, 7, 8], shape: [8], dtype: 'int32' };
  const got = await run('wasm', true, [ints, ids], (x, s) => tf.unsortedSegmentSum(x, s as tf.Tensor1D, 5));
  assert.deepEqual(got.values, [6, 6, 5, 0, 4]);
});

test('gather gradients (embedding tables) accumulate repeated ids', async () => {
  const ids: Input = { values: [3, 1, 3, 0, 3], shape: [5], dtype: 'int32' };
  await matchesCpuStock('gather grad', [normal([5, 4], 8), ids], (table, i) => tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.gather(t, i as tf.Tensor1D), tf.reshape(tf.range(0, 20), [5, 4]))))(table));
});

for (const [size, stride, pad] of [[2, 2, 'valid'], [3, 2, 'same'], [3, 1, 'same'], [2, 1, 'valid']] as const) {
  test(`MaxPoolGrad routes each gradient to its window's first maximum (${size}×${size}, stride ${stride}, ${pad})`, async () => {
    const x = normal([2, 7, 6, 3], 9);
    const w = (y: tf.Tensor) => tf.tensor(normal(y.shape, 10).values, y.shape);
    await matchesCpuStock('MaxPoolGrad', [x], (t) => tf.grad((u: tf.Tensor) => { const y = tf.maxPool(u as tf.Tensor4D, size, stride, pad); return tf.sum(tf.mul(y, w(y))); })(t));
  });
}

for (const perm of [[1, 0], [0, 2, 1], [2, 0, 1], [3, 1, 0, 2], [2, 0, 3, 1, 4], [4, 3, 2, 1, 0], [0, 1, 3, 2, 4], [1, 0, 2, 3, 4], [5, 0, 4, 1, 3, 2]]) {
  test(`Transpose by [${perm}] matches the reference`, async () => {
    const shape = [2, 3, 1, 4, 5, 2].slice(0, perm.length);
    await matchesCpuStock('Transpose', [normal(shape, 11)], (x) => tf.transpose(x, perm));
    const ints: Input = { values: normal(shape, 12).values.map((v) => Math.round(v * 100)), shape, dtype: 'int32' };
    await matchesCpuStock('Transpose int32', [ints], (x) => tf.transpose(x, perm));
  });
}

test('simplifyTranspose merges axes that stay adjacent and drops size-1 axes', () => {
  assert.deepEqual(simplifyTranspose([2, 3, 4, 5], [0, 2, 3, 1]), { shape: [2, 3, 20], perm: [0, 2, 1] });
  assert.deepEqual(simplifyTranspose([2, 1, 4, 5], [1, 0, 3, 2]), { shape: [2, 4, 5], perm: [0, 2, 1] });
  assert.deepEqual(simplifyTranspose([2, 3, 4], [0, 1, 2]), { shape: [24], perm: [0] });
});

for (const [shape, begin, size] of [
  [[7], [2], [4]], [[3, 4], [1, 0], [2, 4]], [[3, 4], [0, 1], [3, 2]], [[3, 4, 5], [1, 1, 2], [2, 3, 2]],
  [[2, 3, 4, 5], [1, 0, 1, 0], [1, 3, 2, 5]], [[2, 3, 4, 5, 6], [1, 0, 2, 1, 3], [1, 3, 2, 3, 2]], [[3, 4], [1, 1], [0, 2]],
] as const) {
  test(`Slice of ${shape} at [${begin}] size [${size}] matches the reference`, async () => {
    await matchesCpuStock('Slice', [normal([...shape], 13)], (x) => tf.slice(x, [...begin], [...size]));
  });
}

for (const [shape, splits, axis] of [[[2, 6, 3], 3, 1], [[2, 6, 3], [1, 4, 1], 1], [[4, 5], [2, -1], 0], [[2, 3, 9], [3, 3, 3], -1]] as const) {
  test(`SplitV of ${shape} into ${splits} along ${axis} matches the reference`, async () => {
    await matchesCpuStock('SplitV', [normal([...shape], 20)], (x) => tf.concat(tf.split(x, typeof splits === 'number' ? splits : [...splits], axis).map((p) => tf.reshape(p, [-1]))));
  });
}

for (const [shape, axis] of [[[3, 4], 0], [[2, 3, 4], 1], [[2, 3, 4], -1], [[3, 2, 4, 2, 2], 0]] as const) {
  test(`Unpack of ${shape} along ${axis} matches the reference`, async () => {
    await matchesCpuStock('Unpack', [normal([...shape], 21)], (x) => tf.stack(tf.unstack(x, axis), 0));
  });
}

/** The gradient of a nearest-neighbour resize, by its definition: each output pixel's dy added to its source. */
function resizeGradByDefinition(dy: Input, inShape: number[], alignCorners: boolean, halfPixelCenters: boolean): number[] {
  const [batch, inH, inW, c] = inShape, [, outH, outW] = dy.shape;
  const rows = nearestSources(inH, outH, alignCorners, halfPixelCenters), cols = nearestSources(inW, outW, alignCorners, halfPixelCenters);
  const dx = new Array(batch * inH * inW * c).fill(0);
  for (let b = 0; b < batch; b++) for (let y = 0; y < outH; y++) for (let x = 0; x < outW; x++) for (let ch = 0; ch < c; ch++) {
    dx[((b * inH + rows[y]) * inW + cols[x]) * c + ch] += dy.values[((b * outH + y) * outW + x) * c + ch];
  }
  return dx;
}

for (const [inShape, size, alignCorners, halfPixelCenters] of [
  [[3, 4, 4, 2], [8, 8], false, false], [[3, 4, 5, 2], [8, 10], false, true], [[2, 5, 3, 1], [7, 4], true, false], [[2, 6, 6, 2], [3, 3], false, false],
] as const) {
  test(`ResizeNearestNeighborGrad is exact for batch ${inShape[0]}, ${inShape.slice(1, 3)} → ${size}, alignCorners ${alignCorners}, halfPixelCenters ${halfPixelCenters}`, async () => {
    const dy = normal([inShape[0], size[0], size[1], inShape[3]], 14);
    const want = { values: resizeGradByDefinition(dy, [...inShape], alignCorners, halfPixelCenters), shape: [...inShape] };
    for (const backend of BACKENDS) {
      const got = await run(backend, true, [dy, normal([...inShape], 15)], (g, images) =>
        tf.engine().runKernel('ResizeNearestNeighborGrad', { dy: g, images }, { alignCorners, halfPixelCenters, size: [...size] }) as tf.Tensor);
      assertClose(got, want, `ResizeNearestNeighborGrad on ${backend}`);
    }
  });
}

test('every easel kernel leaves no tensors or backend buffers behind', async () => {
  for (const backend of BACKENDS) {
    await tf.setBackend(backend);
    const x = tf.tensor(normal([2, 8, 8, 3], 16).values, [2, 8, 8, 3]) as tf.Tensor4D;
    const w = tf.tensor(normal([3, 3, 3, 4], 17).values, [3, 3, 3, 4]) as tf.Tensor4D;
    const a = tf.tensor(normal([2, 3, 40, 32], 18).values, [2, 3, 40, 32]);
    const table = tf.tensor(normal([6, 4], 19).values, [6, 4]);
    const step = () => tf.tidy(() => {
      const [gx, gw] = tf.grads((u: tf.Tensor, v: tf.Tensor) => tf.sum(tf.conv2d(tf.maxPool(u as tf.Tensor4D, 2, 1, 'same'), v as tf.Tensor4D, 2, 'same')))([x, w]);
      const up = tf.grad((u: tf.Tensor) => tf.sum(tf.image.resizeNearestNeighbor(tf.conv2dTranspose(u as tf.Tensor4D, w, [2, 8, 8, 3], 2, 'same'), [16, 16])))(tf.conv2d(x, w, 2, 'same'));
      const [ga] = tf.grads((u: tf.Tensor) => tf.sum(tf.matMul(u, tf.transpose(u, [0, 1, 3, 2]))))([a]);
      const ge = tf.grad((t: tf.Tensor) => tf.sum(tf.gather(t, tf.tensor1d([1, 1, 5], 'int32'))))(table);
      const pieces = [...tf.split(a, [8, 24], 3), ...tf.unstack(a, 1), tf.slice(tf.reshape(a, [2, 3, 4, 10, 32]), [1, 0, 1, 0, 0], [1, 3, 2, 10, 32])];
      return [gx, gw, up, ga, ge, ...pieces].map((t) => tf.sum(t));
    });
    step().forEach((t) => t.dispose());
    const tensors = tf.memory().numTensors, buffers = tf.engine().backend.numDataIds();
    for (let i = 0; i < 3; i++) step().forEach((t) => t.dispose());
    assert.equal(tf.memory().numTensors, tensors, `tensors on ${backend}`);
    assert.equal(tf.engine().backend.numDataIds(), buffers, `backend buffers on ${backend}`);
    tf.dispose([x, w, a, table]);
  }
});

test('useEaselKernels switches between easel and stock kernels and is idempotent', async () => {
  await tf.setBackend('wasm');
  assert.deepEqual(useEaselKernels('wasm'), EASEL_KERNELS.wasm.map((k) => k.kernelName));
  useEaselKernels('wasm');
  assert.ok(tf.getKernel('Conv2DBackpropFilter', 'wasm'));
  useEaselKernels('wasm', false);
  assert.equal(tf.getKernel('Conv2DBackpropFilter', 'wasm'), undefined, 'wasm has no stock Conv2DBackpropFilter');
  assert.ok(tf.getKernel('BatchMatMul', 'wasm'), 'the stock BatchMatMul is back');
  useEaselKernels('wasm', false);
  useEaselKernels('wasm', true);
  assert.ok(tf.getKernel('Conv2DBackpropFilter', 'wasm'));
  assert.deepEqual(useEaselKernels('tensorflow'), [], 'the libtensorflow backend runs unchanged');
});
