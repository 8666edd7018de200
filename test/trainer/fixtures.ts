// Shared by the trainer tests: a few dozen synthetic shape images in shards, and a run config with tiny models
// so a whole CLIP → prior → decoder run takes seconds.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore } from '../../src/data/store/index.ts';
import { SynthConfig, writeSynthDataset } from '../../src/data/synth/index.ts';
import { parseRunConfig, type RunConfig } from '../../src/trainer/config.ts';

export const IMAGE_SIZE = 16;

/** Writes 2 shards × 16 clean samples (16×16 PNG) under `dir`. */
export async function writeTinyDataset(dir: string): Promise<void> {
  const store = await openStore(dir);
  await writeSynthDataset(store, SynthConfig.parse({ shards: 2, perShard: 16, size: IMAGE_SIZE, seed: 3, badFraction: 0, evalPerPair: 0, format: 'png' }));
  await store.close();
}

/** The tiny run as a plain object (what a run file would hold). */
export function tinyRun(dataUrl: string, checkpointUrl: string, steps = { clip: 3, prior: 3, decoder: 3 }) {
  const embedDim = 16;
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
        model: { imageSize: IMAGE_SIZE, channels: 8, channelMults: [1, 2], groups: 4, attentionHeads: 2, embedDim, clipTokens: 2, contextDim: 16, contextLength: 24, textLayers: 1, textHeads: 2, timesteps: 50 },
      },
    },
    checkpoint: { url: checkpointUrl, everySteps: 2, everyMinutes: 0, keep: 2 },
  };
}

export function tinyConfig(dataUrl: string, checkpointUrl: string, steps?: { clip: number; prior: number; decoder: number }): RunConfig {
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
