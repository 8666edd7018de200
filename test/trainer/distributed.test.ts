// Two trainers and the real coordinator over a real nats-server train the tiny synthetic set.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness } from './distributed-harness.ts';
import { withTempDir } from './fixtures.ts';

test('two trainers read every sample of the epoch exactly once and hold bit-identical weights after every step', { timeout: 120_000 }, async () => {
  await withTempDir(async (dir) => {
    // Budgets larger than one epoch: the run ends when the data is read (2 shards × 16 samples, batch 8 per rank).
    const h = await startHarness(dir, { steps: { clip: 100, prior: 0, decoder: 0 }, minTrainers: 2 });
    try {
      const a = h.spawnTrainer('a');
      const b = h.spawnTrainer('b');
      const codes = await Promise.all([a.exited, b.exited]);
      if (process.env.EASEL_TEST_LOGS) console.log(a.log(), b.log());
      assert.deepEqual(codes, [0, 0], `trainers failed:\n--- a ---\n${a.log()}\n--- b ---\n${b.log()}`);
      const s = h.coordinator.status();
      assert.deepEqual(s.shards, { done: 2, leased: 0, pending: 0 });
      assert.equal(s.samples_seen, 32);
      assert.equal(s.expected_samples, 32);
      const [ta, tb] = [await h.trace('a'), await h.trace('b')];
      assert.ok(ta.length >= 2, `a applied ${ta.length} steps`);
      assert.equal(ta.length, tb.length);
      // Samples each step applied, summed over steps = the epoch, counted once.
      assert.equal(ta.reduce((n, r) => n + r.samples, 0), 32);
      assert.equal(ta.reduce((n, r) => n + r.own, 0) + tb.reduce((n, r) => n + r.own, 0), 32);
      for (let i = 0; i < ta.length; i++) {
        assert.equal(ta[i].globalStep, tb[i].globalStep);
        assert.equal(ta[i].weights, tb[i].weights, `weights differ after step ${ta[i].globalStep}`);
      }
      assert.equal(new Set(ta.map((r) => r.world)).size, 1);
      assert.equal(ta[0].world, 2);
    } finally {
      await h.stop();
    }
  });
});

test('a distributed trainer holds the same number of tensors after every step of a stage', { timeout: 120_000 }, async () => {
  await withTempDir(async (dir) => {
    const h = await startHarness(dir, { steps: { clip: 4, prior: 3, decoder: 3 }, shards: 4, epochs: 2 });
    try {
      const tf = await import('@tensorflow/tfjs-core');
      const { loadRunConfig } = await import('../../src/trainer/config.ts');
      const { trainDistributed } = await import('../../src/trainer/distributed.ts');
      const config = await loadRunConfig(h.configPath);
      const counts: number[] = [];
      const r = await trainDistributed({ nats: h.nats.url, run: h.run, config, id: 'solo', resume: 'none', heartbeatMs: 300, onStep: () => counts.push(tf.memory().numTensors) });
      assert.equal(r.ended, 'finished');
      // The trainer computes in the coordinator's own process, blocking it for whole steps (seconds on a loaded
      // machine, longer than the heartbeat timeout): that stall is not the trainer's silence, so the first
      // generation is the only one (a trainer declared dead registers again, forming another).
      assert.equal(h.coordinator.status().generation, 1, 'the coordinator declared the trainer dead while it computed a step in the same process');
      assert.equal(counts.length, 10);
      // Each stage has its own optimiser (moments sized by its model), so the count may change at a stage boundary;
      // within a stage it must stay flat.
      const perStage = [counts.slice(0, 4), counts.slice(4, 7), counts.slice(7)];
      for (const c of perStage) assert.ok(c.every((n) => n === c[0]), `tensors per step: ${counts.join(' ')}`);
      // Across stages the only difference is Adam's two moments per trained variable: the old optimiser was freed.
      const { buildModels, disposeModels } = await import('../../src/trainer/models.ts');
      const m = buildModels(config);
      const vars = [m.clip.params().size, m.prior.params().size, m.decoder.params().size];
      disposeModels(m);
      const rest = perStage.map((c, i) => c[0] - 2 * vars[i]);
      assert.deepEqual(rest, [rest[0], rest[0], rest[0]], `tensors per step: ${counts.join(' ')}; variables per stage: ${vars.join(' ')}`);
    } finally {
      await h.stop();
    }
  });
});
