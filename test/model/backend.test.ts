// initBackend: picks and logs a backend once per process, honours EASEL_BACKEND, makes tfjs able to train there
// (gradients + easel's kernels) — and seeded training on it is bit-identical run to run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-wasm';
import '@tensorflow/tfjs-backend-cpu';
import { initBackend } from '../../src/model/backend.ts';
import { EASEL_KERNELS, useEaselKernels } from '../../src/model/kernels/index.ts';

/**
 * Three Adam steps of a small conv + embedding + attention-style model, every random draw seeded; returns a hash of
 * the final weights' bytes (and of the Adam state), so two runs agree only if every bit does.
 */
function trainedWeightsHash(seed: number): string {
  const vars = tf.tidy(() => ({
    conv: tf.variable(tf.randomNormal([3, 3, 3, 8], 0, 0.2, 'float32', seed)),
    up: tf.variable(tf.randomNormal([4, 4, 3, 8], 0, 0.2, 'float32', seed + 1)),
    table: tf.variable(tf.randomNormal([10, 8], 0, 0.2, 'float32', seed + 2)),
    proj: tf.variable(tf.randomNormal([8, 8], 0, 0.2, 'float32', seed + 3)),
  }));
  const images = tf.randomUniform([4, 8, 8, 3], -1, 1, 'float32', seed + 4) as tf.Tensor4D;
  const ids = tf.tensor1d([1, 4, 4, 9], 'int32');
  const optimizer = tf.train.adam(1e-2);
  for (let step = 0; step < 3; step++) {
    optimizer.minimize(() => {
      const h = tf.relu(tf.conv2d(images, vars.conv as tf.Tensor4D, 2, 'same')); // [4,4,4,8]
      const back = tf.conv2dTranspose(h, vars.up as tf.Tensor4D, [4, 8, 8, 3], 2, 'same');
      const pooled = tf.mean(h, [1, 2]); // [4,8]
      const text = tf.matMul(tf.gather(vars.table, ids), vars.proj); // [4,8]
      const logits = tf.matMul(pooled, text, false, true);
      const noise = tf.randomNormal(back.shape, 0, 0.1, 'float32', seed + 10 + step);
      const recon = tf.mean(tf.square(tf.sub(tf.add(back, noise), images)));
      return tf.add(recon, tf.losses.softmaxCrossEntropy(tf.oneHot(tf.range(0, 4, 1, 'int32'), 4), logits)) as tf.Scalar;
    });
  }
  const hash = createHash('sha256');
  for (const v of Object.values(vars)) hash.update(new Uint8Array(v.dataSync().buffer));
  tf.dispose([...Object.values(vars), images, ids]);
  optimizer.dispose();
  return hash.digest('hex');
}

async function hashOn(backend: string, seed: number): Promise<string> {
  await tf.setBackend(backend);
  useEaselKernels(backend);
  return trainedWeightsHash(seed);
}

// Run as a child process (below): report the backend EASEL_BACKEND chose and the training hashes, then exit.
if (process.env.EASEL_BACKEND_TEST_CHILD) {
  const chosen = await initBackend();
  const hashes = { wasm: await hashOn('wasm', 7), cpu: await hashOn('cpu', 7) };
  process.stdout.write(JSON.stringify({ chosen, hashes }) + '\n');
  process.exit(0);
}

function child(env: Record<string, string>) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url)], {
    env: { ...process.env, EASEL_BACKEND_TEST_CHILD: '1', EASEL_LOG: 'info', ...env },
    encoding: 'utf8',
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('initBackend runs once per process and prepares the backend for training', async () => {
  const first = initBackend('wasm');
  assert.equal(initBackend('cpu'), first, 'a second call returns the first call’s promise');
  assert.equal(await first, 'wasm');
  assert.equal(tf.getBackend(), 'wasm');
  assert.ok(tf.getGradient('Sum') && tf.getGradient('Conv2D'), 'tfjs gradients are registered');
  for (const { kernelName } of EASEL_KERNELS.wasm) assert.ok(tf.getKernel(kernelName, 'wasm'), `${kernelName} is installed`);
  const g = tf.grad((x: tf.Tensor) => tf.sum(tf.conv2d(x as tf.Tensor4D, tf.ones([3, 3, 1, 2]) as tf.Tensor4D, 1, 'same')))(tf.ones([1, 3, 3, 1]));
  assert.deepEqual(Array.from(g.dataSync()), [8, 12, 8, 12, 18, 12, 8, 12, 8], 'a conv gradient runs on wasm');
});

test('seeded training on wasm is bit-identical run to run, in this process and in another one', async () => {
  await initBackend('wasm');
  const here = await hashOn('wasm', 7);
  assert.equal(await hashOn('wasm', 7), here, 'same process');
  assert.notEqual(await hashOn('wasm', 8), here, 'the hash depends on the seed');
  const cpuHere = await hashOn('cpu', 7);
  assert.equal(await hashOn('cpu', 7), cpuHere, 'cpu, same process');
  const other = child({ EASEL_BACKEND: 'cpu' });
  assert.equal(other.status, 0, other.stderr);
  const report = JSON.parse(other.stdout.trim().split('\n').pop()!);
  assert.deepEqual(report.hashes, { wasm: here, cpu: cpuHere }, 'another process computes the same bits');
  assert.equal(report.chosen, 'cpu', 'EASEL_BACKEND=cpu picks cpu');
  assert.match(other.stderr, /tfjs backend: cpu/, 'the choice is logged');
});

test('an unknown EASEL_BACKEND is refused with the valid names', () => {
  const r = child({ EASEL_BACKEND: 'webgpu' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /unknown backend 'webgpu' \(EASEL_BACKEND\): use tensorflow, wasm, cpu/);
});
