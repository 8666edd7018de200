// nats-server restarted mid-run (same port, same JetStream store): trainers and coordinator reconnect, the
// coordinator keeps its state (memory and JetStream KV), a collective caught by the outage is abandoned and its
// step redone, and the run finishes with every sample of the epoch applied exactly once.
import { test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import assert from 'node:assert/strict';
import { assertEpochExactlyOnce, startHarness } from './distributed-harness.ts';
import { withTempDir } from './fixtures.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('a nats-server restarted mid-run: everyone reconnects, no trainer is declared dead, nothing lost or doubled', { timeout: 120_000 }, async (t) => {
  await withTempDir(async (dir) => {
    // 4 shards × 16 samples, batch 8 per rank, 2 ranks: the epoch is 4 steps of 16 samples.
    const h = await startHarness(dir, { steps: { clip: 100, prior: 0, decoder: 0 }, shards: 4, minTrainers: 2, heartbeatTimeoutMs: 3000 });
    t.after(() => h.stop());
    const a = h.spawnTrainer('a');
    const b = h.spawnTrainer('b');
    const logs = () => `--- a ---\n${a.log()}\n--- b ---\n${b.log()}\n--- nats ---\n${h.nats.logTail()}`;
    try {
      while (h.coordinator.status().step < 1) {
        if (a.exitCode !== null || b.exitCode !== null) assert.fail(`a trainer exited early:\n${logs()}`);
        await sleep(100);
      }
      const before = h.coordinator.status();
      // Down for longer than the heartbeat timeout: the coordinator must not count its own outage against the trainers.
      await h.nats.restart({ downMs: 4000 });
      const codes = await Promise.all([a.exited, b.exited]);
      assert.deepEqual(codes, [0, 0], `trainers failed:\n${logs()}`);

      const { status: s, why } = await assertEpochExactlyOnce(h, ['a', 'b'], { shards: 4, samples: 64 }, logs);
      assert.ok(s.generation > before.generation, 'after the reconnect the ranks met in a new generation');
      const metrics = await h.coordinator.metrics.registry.metrics();
      const value = (name: string) => Number(new RegExp(`^${name}\\{[^}]*\\} (\\S+)$`, 'm').exec(metrics)?.[1] ?? NaN);
      assert.equal(value('easel_trainer_deaths_total'), 0, `a trainer was declared dead during the outage:\n${why()}`);
      assert.ok(value('easel_coordinator_nats_disconnects_total') >= 1, 'the disconnect is counted');
      assert.ok(value('easel_coordinator_nats_reconnects_total') >= 1, 'the reconnect is counted');
    } finally {
      await h.stop();
    }
  });
});

test('a trainer asked to stop while NATS is down exits promptly, without a minute of retries to say goodbye', { timeout: 120_000 }, async (t) => {
  await withTempDir(async (dir) => {
    // minTrainers 2 and one trainer: it registers and waits for a generation that never forms.
    const h = await startHarness(dir, { steps: { clip: 100, prior: 0, decoder: 0 }, minTrainers: 2 });
    t.after(() => h.stop());
    const a = h.spawnTrainer('a');
    try {
      while (!/registered/.test(a.log())) {
        assert.equal(a.exitCode, null, a.log());
        await sleep(100);
      }
      await h.nats.stop();
      a.kill('SIGINT');
      // Leaving the run used to retry for the coordinator client's 60 s of patience; one attempt takes 5 s.
      const code = await Promise.race([a.exited, delay(40_000, 'still running after 40 s', { ref: false })]);
      assert.equal(code, 0, a.log());
      assert.match(a.log(), /could not leave the run/);
      assert.match(a.log(), /trainer stopped at step 0/);
    } finally {
      await h.stop();
    }
  });
});
