import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/model/backend.ts';
import { openStore } from '../../src/data/store/index.ts';
import { assignWeights, readCheckpoint, restoreOptimizer, snapshotCheckpoint, writeCheckpoint, writeSnapshot, type ManifestInput } from '../../src/trainer/checkpoint.ts';
import { identityReduce, trainStep } from '../../src/trainer/step.ts';
import { regression } from './fixtures.ts';

await initBackend();

/** Top-level names that hold objects (as an object store lists them). */
async function entries(dir: string): Promise<string[]> {
  const store = await openStore(dir);
  const names = new Set<string>();
  for await (const o of store.list()) names.add(o.key.split('/')[0]);
  await store.close();
  return [...names].sort();
}

const bytes = (params: Map<string, tf.Variable>) => [...params.values()].map((v) => Buffer.from((v.dataSync() as Float32Array).buffer));

function manifest(step: number): ManifestInput {
  return {
    run: 'test',
    stage: 'clip',
    stage_step: step,
    global_step: step,
    data_cursor: { epoch: 0, shard: 1, sample: 2 },
    rng: { seed: 1, derivation: 'test' },
    skipped_steps: {},
    loss: { clip: 0.5 },
    config: { name: 'test' },
  };
}

async function withDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'easel-ckpt-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('weights and Adam state restored from a checkpoint continue training bit for bit', () =>
  withDir(async (dir) => {
    const step = (m: ReturnType<typeof regression>, opt: tf.Optimizer, lr: number) =>
      trainStep({ params: m.params, loss: m.loss, optimizer: opt, reduce: identityReduce, learningRate: lr, weightDecay: 0.01 });
    const a = regression(1, 90);
    const optA = tf.train.adam(0.01, 0.9, 0.98);
    for (let i = 0; i < 7; i++) await step(a, optA, 0.01 / (i + 1));

    const store = await openStore(dir);
    await writeCheckpoint(store, { manifest: manifest(7), weights: [...a.params].map(([n, v]) => [`m.${n}`, v]), optimizer: { optimizer: optA, params: a.params } }, 3);
    await store.close();

    const ckpt = await readCheckpoint(dir);
    assert.deepEqual(ckpt.manifest.data_cursor, { epoch: 0, shard: 1, sample: 2 });
    const b = regression(50, 90); // other initial weights, same data: everything must come from the checkpoint
    const optB = tf.train.adam(0.01, 0.9, 0.98);
    assignWeights(b.params, ckpt.weights, 'm.');
    await restoreOptimizer(optB, b.params, ckpt.optimizer!);
    assert.deepEqual(bytes(b.params), bytes(a.params));

    for (let i = 7; i < 12; i++) {
      await step(a, optA, 0.01 / (i + 1));
      await step(b, optB, 0.01 / (i + 1));
    }
    assert.deepEqual(bytes(b.params), bytes(a.params));
    optA.dispose();
    optB.dispose();
    a.dispose();
    b.dispose();
  }));

test('a snapshot keeps the weights and Adam state of its step while training goes on (background writes)', () =>
  withDir(async (dir) => {
    const m = regression(3, 91);
    const opt = tf.train.adam(0.01);
    const step = () => trainStep({ params: m.params, loss: m.loss, optimizer: opt, reduce: identityReduce, learningRate: 0.01, weightDecay: 0 });
    for (let i = 0; i < 3; i++) await step();
    const atSnapshot = bytes(m.params);
    const snap = await snapshotCheckpoint({ manifest: manifest(3), weights: [...m.params].map(([n, v]) => [`m.${n}`, v]), optimizer: { optimizer: opt, params: m.params } });
    // A copy of the bytes (Buffer.from of a Uint8Array copies), so later changes to the snapshot would show.
    const raw = (d: ArrayBufferView) => Buffer.from(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
    const momentsAtSnapshot = snap.optimizer!.map(([n, t]) => [n, raw(t.data)]);
    for (let i = 0; i < 3; i++) await step();
    assert.notDeepEqual(bytes(m.params), atSnapshot, 'training moved the weights');
    const store = await openStore(dir);
    await writeSnapshot(store, snap, 2);
    await store.close();
    const ckpt = await readCheckpoint(dir);
    const restored = regression(60, 91);
    assignWeights(restored.params, ckpt.weights, 'm.');
    assert.deepEqual(bytes(restored.params), atSnapshot);
    assert.deepEqual([...ckpt.optimizer!].map(([n, t]) => [n, raw(t.data)]), momentsAtSnapshot);
    opt.dispose();
    m.dispose();
    restored.dispose();
  }));

test('latest.json resolves to the newest checkpoint and only `keep` checkpoints remain', () =>
  withDir(async (dir) => {
    const m = regression(2);
    const store = await openStore(dir);
    for (const s of [10, 20, 30, 40]) {
      m.params.get('l1.b')!.assign(tf.fill([8], s));
      await writeCheckpoint(store, { manifest: manifest(s), weights: [...m.params] }, 2);
    }
    await store.close();
    assert.deepEqual(await entries(dir), ['latest.json', 'step-000000030', 'step-000000040']);
    const latest = await readCheckpoint(dir);
    assert.equal(latest.manifest.global_step, 40);
    assert.equal(latest.manifest.files.optimizer, null);
    assert.deepEqual([...(latest.weights.get('l1.b')!.data as Float32Array)], new Array(8).fill(40));
    // One checkpoint by its own URL.
    const older = await readCheckpoint(join(dir, 'step-000000030'));
    assert.equal(older.manifest.global_step, 30);
    assert.match(JSON.parse(await readFile(join(dir, 'step-000000030', 'manifest.json'), 'utf8')).easel_version, /^\d+\.\d+\.\d+/);
    m.dispose();
  }));

test('a folder without a manifest (an interrupted write) is not a checkpoint and gets cleaned up', () =>
  withDir(async (dir) => {
    const m = regression(3);
    const store = await openStore(dir);
    await store.put('step-000000005/weights.safetensors', Buffer.from('partial'));
    await assert.rejects(readCheckpoint(dir), /no checkpoint at/);
    await assert.rejects(readCheckpoint(join(dir, 'step-000000005')), /no checkpoint at/);
    await writeCheckpoint(store, { manifest: manifest(8), weights: [...m.params] }, 3);
    await store.close();
    assert.deepEqual(await entries(dir), ['latest.json', 'step-000000008']);
    m.dispose();
  }));

test('restoring into a model of another shape names the tensor', () =>
  withDir(async (dir) => {
    const m = regression(4);
    const store = await openStore(dir);
    await writeCheckpoint(store, { manifest: manifest(1), weights: [...m.params] }, 1);
    await store.close();
    const ckpt = await readCheckpoint(dir);
    const other = new Map([['l1.w', tf.variable(tf.zeros([5, 8]))]]);
    assert.throws(() => assignWeights(other, ckpt.weights, ''), /checkpoint tensor l1\.w has shape \[4,8\], the model has \[5,8\]/);
    assert.throws(() => assignWeights(new Map([['nope', tf.variable(tf.zeros([1]))]]), ckpt.weights, 'x.'), /checkpoint lacks x\.nope/);
    m.dispose();
  }));
