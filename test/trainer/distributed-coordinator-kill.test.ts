// kill -9 of the coordinator mid-run: the trainers wait for it (their requests are retried while no coordinator
// answers), a new `easel coordinator` for the same run resumes from JetStream KV, and the run finishes with every
// sample of the epoch applied exactly once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assertEpochExactlyOnce, startHarness } from './distributed-harness.ts';
import { withTempDir } from './fixtures.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('a coordinator killed with -9 mid-run is replaced by a new one that resumes the run from JetStream, nothing lost or doubled', { timeout: 120_000 }, async (t) => {
  await withTempDir(async (dir) => {
    // 4 shards × 16 samples, batch 8 per rank, 2 ranks: the epoch is 4 steps of 16 samples; the run ends when it is read.
    const h = await startHarness(dir, { steps: { clip: 100, prior: 0, decoder: 0 }, shards: 4, minTrainers: 2, heartbeatTimeoutMs: 3000, coordinatorAsProcess: true });
    t.after(() => h.stop());
    const cp = h.coordinatorProcess!;
    const a = h.spawnTrainer('a');
    const b = h.spawnTrainer('b');
    const logs = () => `--- a ---\n${a.log()}\n--- b ---\n${b.log()}\n--- coordinators ---\n${cp.log()}`;
    try {
      // Kill it once the run is past its first step (the trainers applied it and the coordinator recorded it).
      while ((await h.status()).step < 1) {
        if (a.exitCode !== null || b.exitCode !== null) assert.fail(`a trainer exited early:\n${logs()}`);
        await sleep(100);
      }
      const before = await h.status();
      await cp.kill();
      // Longer than the heartbeat timeout: a coordinator that counted its own absence would declare both trainers dead.
      await sleep(4000);
      assert.equal(a.exitCode, null, `a died while no coordinator answered:\n${logs()}`);
      assert.equal(b.exitCode, null, `b died while no coordinator answered:\n${logs()}`);
      await cp.start();
      const resumed = await h.status();
      assert.ok(resumed.step >= before.step, `the new coordinator starts at step ${resumed.step}, the old one was at ${before.step}`);
      assert.equal(resumed.shards.done + resumed.shards.leased + resumed.shards.pending, 4);
      assert.equal(resumed.checkpoint?.key, before.checkpoint?.key, 'the latest checkpoint is part of the restored state');
      assert.deepEqual(resumed.members, before.members, 'the same generation goes on');

      const codes = await Promise.all([a.exited, b.exited]);
      assert.deepEqual(codes, [0, 0], `trainers failed:\n${logs()}`);

      // Both trainers took part in every applied step; the new coordinator's stage machine followed them.
      const { status: s } = await assertEpochExactlyOnce(h, ['a', 'b'], { shards: 4, samples: 64 }, logs);
      assert.equal(s.checkpoint?.step, s.step, 'rank 0 told the new coordinator about its final checkpoint');
      assert.match(cp.log(), /resumed run from JetStream KV/);
      const metrics = await cp.get('/metrics');
      const resumedAt = /^easel_coordinator_resumed_step\{[^}]*\} (\d+)$/m.exec(metrics)?.[1];
      assert.equal(Number(resumedAt), resumed.step, 'the new coordinator exports the step it resumed at');
    } finally {
      await h.stop();
    }
  });
});
