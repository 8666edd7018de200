// Two `easel trainer` processes (real coordinator, real nats-server) train CLIP on the synthetic set to the same
// quality as one process (`easel train`'s train()) with the same global batch, steps and seed, measured on held-out
// samples neither saw. The runs differ in data order (leased shards vs one shuffled stream; a rank's batch never
// spans shards), so they are compared within a tolerance, not bit for bit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { parse, stringify } from 'yaml';
import { openLoader, type Batch } from '../../src/data/loader.ts';
import { openStore } from '../../src/data/store/index.ts';
import { SynthConfig, writeSynthDataset } from '../../src/data/synth/index.ts';
import { listShards } from '../../src/data/webdataset/index.ts';
import type { Clip } from '../../src/model/clip.ts';
import { initBackend } from '../../src/model/backend.ts';
import { contrastiveLoss } from '../../src/model/losses.ts';
import { tokenize } from '../../src/model/tokenizer.ts';
import { parseRunConfig } from '../../src/trainer/config.ts';
import { buildModels, disposeModels, loadCheckpoint } from '../../src/trainer/models.ts';
import { train } from '../../src/trainer/train.ts';
import { startHarness } from './distributed-harness.ts';
import { IMAGE_SIZE, withTempDir } from './fixtures.ts';

const STEPS = 100;
const PER_RANK = 8;
/** Held-out samples, scored in batches of HELD_OUT_BATCH. */
const HELD_OUT = 64;
const HELD_OUT_BATCH = 32;
/** The two runs' losses may differ by this much (data order); measured: gap ≈ 0.15, improvement ≈ 1.5. */
const TOLERANCE = 0.35;

/** HELD_OUT samples from their own synthetic shard (another seed than the training set's). */
async function heldOut(dir: string): Promise<Batch[]> {
  const store = await openStore(dir);
  try {
    await writeSynthDataset(store, SynthConfig.parse({ shards: 1, perShard: HELD_OUT, size: IMAGE_SIZE, seed: 99, badFraction: 0, evalPerPair: 0, format: 'png' }));
    const shards = (await listShards(store)).map((s) => s.key);
    const out: Batch[] = [];
    for await (const b of openLoader({ store, shards, batchSize: HELD_OUT_BATCH, imageSize: IMAGE_SIZE, seed: 1, epochs: 1 })) out.push(b);
    return out;
  } finally {
    await store.close();
  }
}

/** CLIP's contrastive loss over the held-out batches, averaged (ln 32 ≈ 3.47: a model that tells nothing apart). */
function heldOutLoss(clip: Clip, batches: Batch[]): number {
  return mean(batches.map((b) => heldOutBatchLoss(clip, b)));
}

function heldOutBatchLoss(clip: Clip, b: Batch): number {
  return tf.tidy(() => {
    const images = tf.tensor4d(b.images, [b.captions.length, IMAGE_SIZE, IMAGE_SIZE, 3]);
    const tokens = tokenize(b.captions, clip.config.contextLength);
    return contrastiveLoss(clip.encodeImage(images), clip.encodeText(tokens), clip.logitScale).dataSync()[0];
  });
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

test('two trainers train CLIP to the same held-out loss as one process with the same global batch', { timeout: 180_000 }, async (t) => {
  await initBackend('wasm');
  await withTempDir(async (dir) => {
    const held = await heldOut(join(dir, 'held-out'));
    // 8 shards × 64 samples: 3 epochs of 100 steps × 16. Batches of 8 fill a shard exactly.
    const h = await startHarness(dir, { steps: { clip: STEPS, prior: 0, decoder: 0 }, shards: 8, perShard: 64, epochs: 4, backend: 'wasm', batchSize: PER_RANK, minTrainers: 2 });
    t.after(() => h.stop());
    try {
      const runFile = parse(await readFile(h.configPath, 'utf8'));
      runFile.logEvery = STEPS;
      runFile.stages.clip.optimizer = { lr: 3e-3 };
      runFile.stages.clip.schedule = { warmupSteps: 2 };
      await writeFile(h.configPath, stringify(runFile));

      // One process, global batch 2 × 8.
      const config = parseRunConfig({ ...runFile, data: { ...runFile.data, batchSize: 2 * PER_RANK }, checkpoint: { ...runFile.checkpoint, url: join(dir, 'single') } });
      const untrained = buildModels(config);
      const before = heldOutLoss(untrained.clip, held);
      disposeModels(untrained);
      const singleLosses: number[] = [];
      const single = await train(config, { writeCheckpoints: false, onStep: (s) => singleLosses.push(s.loss) });
      const singleHeld = heldOutLoss(single.models.clip, held);
      single.dispose();

      // Two trainers, 8 each.
      const a = h.spawnTrainer('a');
      const b = h.spawnTrainer('b');
      const codes = await Promise.all([a.exited, b.exited]);
      assert.deepEqual(codes, [0, 0], `trainers failed:\n--- a ---\n${a.log()}\n--- b ---\n${b.log()}`);
      const trace = await h.trace('a');
      assert.equal(trace.length, STEPS);
      assert.ok(trace.every((r) => r.world === 2));
      // At an epoch's end a rank may find no shard free for a step (its peer still holds the epoch's last one) and
      // contribute an empty batch: a few steps of 8 instead of 16.
      const short = trace.filter((r) => r.samples !== 2 * PER_RANK);
      assert.ok(short.length <= 6 && short.every((r) => r.samples === PER_RANK), `steps without the global batch: ${JSON.stringify(short)}`);
      const ckpt = await loadCheckpoint(join(dir, 'ckpt'));
      const distHeld = heldOutLoss(ckpt.models.clip, held);
      ckpt.dispose();

      const last = (xs: number[]) => mean(xs.slice(-10));
      const report = {
        heldOut: { untrained: before, single: singleHeld, distributed: distHeld },
        trainLossLast10: { single: last(singleLosses), distributed: last(trace.map((r) => r.loss)) },
        shortSteps: short.length,
      };
      if (process.env.EASEL_TEST_LOGS) console.log(JSON.stringify(report));
      const chance = Math.log(HELD_OUT_BATCH);
      // Both learnt something that carries to unseen samples: clearly below the untrained model and below chance.
      assert.ok(singleHeld < before - 1 && singleHeld < chance - 0.1, `one process did not learn: ${JSON.stringify(report)}`);
      assert.ok(distHeld < before - 1 && distHeld < chance - 0.1, `two trainers did not learn: ${JSON.stringify(report)}`);
      // And equally well.
      assert.ok(Math.abs(distHeld - singleHeld) < TOLERANCE, `held-out loss: two trainers ${distHeld} vs one process ${singleHeld}`);
      assert.ok(Math.abs(report.trainLossLast10.distributed - report.trainLossLast10.single) < TOLERANCE, `training loss: ${JSON.stringify(report.trainLossLast10)}`);
    } finally {
      await h.stop();
    }
  });
});
