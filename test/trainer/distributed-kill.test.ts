// kill -9 of a trainer mid-run: the survivor goes on in a new generation, the dead trainer's shard is leased again
// from its last reported offset, and every sample of the epoch is applied exactly once; a new trainer can join.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startHarness } from './distributed-harness.ts';
import { withTempDir } from './fixtures.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('a trainer killed with -9 mid-run loses and doubles no shard, and a trainer that joins later trains with the rest', { timeout: 180_000 }, async (t) => {
  await withTempDir(async (dir) => {
    // 4 shards × 16 samples, batch 8 per rank: the epoch is 8 rank-batches; the run ends when it is read.
    const h = await startHarness(dir, { steps: { clip: 100, prior: 0, decoder: 0 }, shards: 4, minTrainers: 2, heartbeatTimeoutMs: 3000 });
    t.after(() => h.stop());
    try {
      const a = h.spawnTrainer('a');
      const b = h.spawnTrainer('b');
      // Kill a once it has applied a random number of steps, 1 or 2 of the epoch's 4 (its progress for them is then
      // reported); EASEL_KILL_AT=<n> replays a given one.
      const killAt = Number(process.env.EASEL_KILL_AT ?? 1 + Math.floor(Math.random() * 2));
      while ((await h.trace('a')).length < killAt) {
        if (a.exitCode !== null || b.exitCode !== null) assert.fail(`a trainer exited early:\n${a.log()}\n${b.log()}`);
        await sleep(100);
      }
      a.kill('SIGKILL');
      const c = h.spawnTrainer('c');
      const codes = await Promise.all([b.exited, c.exited]);
      assert.deepEqual(codes, [0, 0], `trainers failed (a killed after step ${killAt}):\n--- b ---\n${b.log()}\n--- c ---\n${c.log()}`);

      const s = h.coordinator.status();
      assert.deepEqual(s.shards, { done: 4, leased: 0, pending: 0 });
      assert.equal(s.samples_seen, 64);
      assert.equal(s.expected_samples, 64);
      // b took part in every applied step: the samples of all of them add up to the epoch exactly once.
      const tb = await h.trace('b');
      const applied = tb.reduce((n, r) => n + r.samples, 0);
      const [ta, tc] = [await h.trace('a'), await h.trace('c')];
      assert.equal(applied, 64, `steps applied ${applied} samples (a killed after step ${killAt}):\n${JSON.stringify({ ta, tb, tc })}\n--- a ---\n${a.log()}\n--- b ---\n${b.log()}\n--- c ---\n${c.log()}`);
      assert.ok(new Set(tb.map((r) => r.generation)).size >= 2, 'b saw a new generation after the kill');
      assert.ok(tc.length > 0, `the joiner applied no step:\n${c.log()}`);
      // The joiner got rank 0's state: from its first step on it holds the same weights as b.
      const bAt = new Map(tb.map((r) => [r.globalStep, r.weights]));
      for (const r of tc) assert.equal(r.weights, bAt.get(r.globalStep), `weights of c and b differ after step ${r.globalStep}`);
    } finally {
      await h.stop();
    }
  });
});
