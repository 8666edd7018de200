import { test } from 'node:test';
import assert from 'node:assert/strict';
import { expectedSamples, type RunPlan } from '../../src/coordinator/expected.ts';
import { STAGE_ORDER } from '../../src/coordinator/stages.ts';

const plan = (over: Partial<RunPlan>): RunPlan => ({ shards: [16, 16], epochs: 1, budgets: { clip: 100, prior: 0, decoder: 0, upsampler: 0 }, batchSizes: { clip: 8, prior: 8, decoder: 8, upsampler: 8 }, world: 2, ...over });

/** The definition, one step and one rank at a time, as the trainers read (src/trainer/distributed.ts). */
function stepByStep({ shards, epochs, budgets, batchSizes, world }: RunPlan): number {
  const read = Array.from({ length: epochs }, () => shards.map(() => 0));
  let seen = 0;
  for (let epoch = 0, stage = 0, stageStep = 0; stage < STAGE_ORDER.length; ) {
    if (stageStep >= budgets[STAGE_ORDER[stage]]) {
      stage++;
      stageStep = 0;
      continue;
    }
    const batch = batchSizes[STAGE_ORDER[stage]];
    let step = 0;
    for (let r = 0; r < world; r++) {
      // The rank's first shard with samples left: its batch comes from that shard alone.
      const i = shards.findIndex((n, i) => i % world === r && read[epoch][i] < n);
      if (i < 0) continue;
      const take = Math.min(batch, shards[i] - read[epoch][i]);
      read[epoch][i] += take;
      step += take;
    }
    if (step === 0) {
      if (++epoch >= epochs) break;
      continue;
    }
    seen += step;
    stageStep++;
  }
  return seen;
}

test('a run whose step budgets end it first calls for the samples of those steps', () => {
  // easel run's test: 2 ranks, 2 shards × 16; CLIP 3 steps and the prior 1 of 8 per rank, the decoder 1 of 4.
  // Steps 1-2 read epoch 0, step 3 opens epoch 1, the prior's step ends it, the decoder's opens epoch 2.
  const p = plan({ epochs: 4, budgets: { clip: 3, prior: 1, decoder: 1, upsampler: 0 }, batchSizes: { clip: 8, prior: 8, decoder: 4, upsampler: 4 } });
  assert.equal(expectedSamples(p), 3 * 16 + 16 + 8);
  assert.equal(expectedSamples({ ...p, budgets: { clip: 100, prior: 1, decoder: 1, upsampler: 0 } }), 4 * 32, 'the epochs end it first');
});

test("a shard's short last batch and a rank out of shards make a step smaller than the global batch", () => {
  // One rank: shard 0 gives 4, 4, 2 (its tail), shard 1 gives 3.
  assert.equal(expectedSamples(plan({ shards: [10, 3], world: 1, batchSizes: { clip: 4, prior: 4, decoder: 4, upsampler: 4 }, budgets: { clip: 3, prior: 0, decoder: 0, upsampler: 0 } })), 10);
  // Two ranks: rank 1's shard is read after one step, rank 0 steps on alone.
  assert.equal(expectedSamples(plan({ shards: [16, 8], budgets: { clip: 2, prior: 0, decoder: 0, upsampler: 0 } })), 24);
  // A shard with no samples is skipped; a stage change goes on at the shard's offset with the new batch size.
  assert.equal(expectedSamples(plan({ shards: [5, 7, 0], world: 1, batchSizes: { clip: 32, prior: 32, decoder: 32, upsampler: 32 }, budgets: { clip: 2, prior: 1, decoder: 1, upsampler: 0 } })), 12);
  assert.equal(expectedSamples(plan({ shards: [10], world: 1, batchSizes: { clip: 4, prior: 3, decoder: 8, upsampler: 8 }, budgets: { clip: 1, prior: 2, decoder: 1, upsampler: 0 } })), 4 + 6);
});

test('expectedSamples equals the step-by-step reading of random runs', () => {
  let seed = 7;
  const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
  for (let i = 0; i < 500; i++) {
    const p: RunPlan = {
      shards: Array.from({ length: rand(7) }, () => rand(20)),
      epochs: 1 + rand(3),
      budgets: { clip: rand(12), prior: rand(12), decoder: rand(12), upsampler: 0 },
      batchSizes: { clip: 1 + rand(9), prior: 1 + rand(9), decoder: 1 + rand(9), upsampler: 1 + rand(9) },
      world: 1 + rand(4),
    };
    assert.equal(expectedSamples(p), stepByStep(p), JSON.stringify(p));
  }
});
