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
