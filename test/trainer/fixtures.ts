// Shared by the trainer tests: a few dozen synthetic shape images in shards, a run config with tiny models so a
// whole CLIP → prior → decoder (→ upsampler) run takes seconds, and a two-layer regression for the step and checkpoint tests.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import * as tf from '@tensorflow/tfjs-core';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore } from '../../src/data/store/index.ts';
import { SynthConfig, writeSynthDataset } from '../../src/data/synth/index.ts';
import { parseRunConfig, type RunConfig } from '../../src/trainer/config.ts';
import { runWeights, type TrainResult } from '../../src/trainer/train.ts';

export const IMAGE_SIZE = 16;

/** Writes 2 shards × 16 clean samples (16×16 PNG) under `dir`. */
export async function writeTinyDataset(dir: string): Promise<void> {
  const store = await openStore(dir);
  await writeSynthDataset(store, SynthConfig.parse({ shards: 2, perShard: 16, size: IMAGE_SIZE, seed: 3, badFraction: 0, evalPerPair: 0, format: 'png' }));
  await store.close();
}

/** Step budgets of the tiny run's stages; with an upsampler the decoder draws at half the data's size. */
export type TinySteps = { clip: number; prior: number; decoder: number; upsampler?: number };

/** Writes 1 shard × 16 clean samples (16×16 PNG) and an eval/ split of 3 samples per held-out pair under `dir`. */
export async function writeTinyEvalDataset(dir: string): Promise<void> {
  const store = await openStore(dir);
  await writeSynthDataset(store, SynthConfig.parse({ shards: 1, perShard: 16, size: IMAGE_SIZE, seed: 4, badFraction: 0, evalPerPair: 3, format: 'png' }));
  await store.close();
}

/** The tiny run as a plain object (what a run file would hold). */
export function tinyRun(dataUrl: string, checkpointUrl: string, steps: TinySteps = { clip: 3, prior: 3, decoder: 3 }) {
  const embedDim = 16;
  const decoderSize = steps.upsampler ? IMAGE_SIZE / 2 : IMAGE_SIZE;
  const unet = { channels: 8, channelMults: [1, 2], groups: 4, attentionHeads: 2, embedDim, timesteps: 50 };
  return {
    name: 'tiny',
    seed: 11,
    logEvery: 1,
    data: { train: dataUrl, imageSize: IMAGE_SIZE, batchSize: 8, prefetch: 1 },
    stages: {
      clip: {
        steps: steps.clip,
        schedule: { warmupSteps: 1 },
        model: { imageSize: IMAGE_SIZE, patchSize: 8, width: 16, layers: 1, heads: 2, contextLength: 24, textWidth: 16, textLayers: 1, textHeads: 2, embedDim },
      },
      prior: {
        steps: steps.prior,
        schedule: { warmupSteps: 1 },
        model: { embedDim, contextLength: 24, width: 16, layers: 1, heads: 2, timesteps: 50 },
      },
      decoder: {
        steps: steps.decoder,
        batchSize: 4,
        schedule: { warmupSteps: 1 },
        model: { ...unet, imageSize: decoderSize, clipTokens: 2, contextDim: 16, contextLength: 24, textLayers: 1, textHeads: 2 },
      },
      ...(steps.upsampler
        ? {
            upsampler: {
              steps: steps.upsampler,
              batchSize: 4,
              schedule: { warmupSteps: 1 },
              model: { ...unet, imageSize: IMAGE_SIZE, lowResSize: decoderSize, clipTokens: 0, captionContext: false, contextLength: 24 },
            },
          }
        : {}),
    },
    checkpoint: { url: checkpointUrl, everySteps: 2, everyMinutes: 0, keep: 2 },
  };
}

export function tinyConfig(dataUrl: string, checkpointUrl: string, steps?: TinySteps): RunConfig {
  return parseRunConfig(tinyRun(dataUrl, checkpointUrl, steps));
}

export async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'easel-train-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A two-layer regression: a matrix, a bias and a nonlinearity, in milliseconds. Weights from `seed`, data from `dataSeed`. */
export function regression(seed: number, dataSeed = seed + 2) {
  const params = new Map<string, tf.Variable>([
    ['l1.w', tf.variable(tf.randomNormal([4, 8], 0, 0.5, 'float32', seed))],
    ['l1.b', tf.variable(tf.zeros([8]))],
    ['l2.w', tf.variable(tf.randomNormal([8, 1], 0, 0.5, 'float32', seed + 1))],
  ]);
  const x = tf.randomNormal([16, 4], 0, 1, 'float32', dataSeed);
  const y = tf.randomNormal([16, 1], 0, 1, 'float32', dataSeed + 1);
  const p = (k: string) => params.get(k)!;
  const loss = () => tf.losses.meanSquaredError(y, tf.matMul(tf.relu(tf.add(tf.matMul(x, p('l1.w')), p('l1.b'))), p('l2.w'))) as tf.Scalar;
  return { params, loss, dispose: () => tf.dispose([...params.values(), x, y]) };
}

/** Every weight of a run (its models + EMA) as bytes, in a fixed order. */
export function weights(r: TrainResult): Map<string, Buffer> {
  return new Map(runWeights(r.models, r.ema).map(([n, v]) => [n, Buffer.from((v.dataSync() as Float32Array).buffer)]));
}

/** Bit-for-bit equality of two runs' weights, naming the ones that differ. */
export function assertSameWeights(a: Map<string, Buffer>, b: Map<string, Buffer>): void {
  assert.deepEqual([...a.keys()], [...b.keys()]);
  const differing = [...a.keys()].filter((k) => !a.get(k)!.equals(b.get(k)!));
  assert.deepEqual(differing, [], 'weights that differ');
}
