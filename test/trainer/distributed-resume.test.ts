// Resume determinism of a distributed run: two trainers stopped mid-run and resumed from the checkpoint (by two new
// trainer processes) apply the same batches as the uninterrupted run, so every step after the checkpoint ends with
// the same weights, bit for bit, and the epoch is read exactly once. The run crosses an epoch boundary and a stage
// boundary after the checkpoint. See docs/coordinator.md, Determinism.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { readCheckpoint } from '../../src/trainer/checkpoint.ts';
import { startHarness, type Harness } from './distributed-harness.ts';
import { withTempDir } from './fixtures.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// 4 shards × 16 samples, batch 8 per rank, 2 ranks: an epoch is 4 steps; 2 epochs. CLIP 3 steps, prior 5.
const BASE = { steps: { clip: 3, prior: 5, decoder: 0 }, shards: 4, epochs: 2, minTrainers: 2 };
const SAMPLES = 2 * 4 * 16;

type Trainer = ReturnType<Harness['spawnTrainer']>;

async function until(what: () => Promise<boolean>, trainers: Trainer[], label: string): Promise<void> {
  while (!(await what())) {
    for (const t of trainers) if (t.exitCode !== null) assert.fail(`${label}: a trainer exited early (${t.exitCode}):\n${trainers.map((x) => x.log()).join('\n---\n')}`);
    await sleep(100);
  }
}

async function finish(trainers: Trainer[]): Promise<void> {
  const codes = await Promise.all(trainers.map((t) => t.exited));
  assert.deepEqual(codes, trainers.map(() => 0), `trainers failed:\n${trainers.map((x) => x.log()).join('\n---\n')}`);
}

/** The run's weights checksum after each global step, from one trainer's trace. */
async function weightsByStep(h: Harness, id: string): Promise<Map<number, string>> {
  return new Map((await h.trace(id)).map((r) => [r.globalStep, r.weights]));
}

// Byte tokens, and BPE merges that every trainer learns from the data on its own and must get the same.
for (const merges of [0, 40]) {
  const RUN = { ...BASE, tokenizerMerges: merges };
  test(`a distributed run stopped mid-run and resumed from its checkpoint reproduces the uninterrupted run bit for bit (${merges ? `${merges} BPE merges, learnt by each trainer` : 'byte tokens'})`, { timeout: 420_000 }, async (t) => {
    await withTempDir(async (dir) => {
      // Run A: uninterrupted.
      await mkdir(join(dir, 'a'));
      const a = await startHarness(join(dir, 'a'), RUN);
      t.after(() => a.stop());
      let reference: Map<number, string>;
      try {
        const ts = [a.spawnTrainer('a0'), a.spawnTrainer('a1')];
        await finish(ts);
        reference = await weightsByStep(a, 'a0');
        const s = await a.status();
        assert.equal(s.samples_seen, SAMPLES);
        assert.equal(s.expected_samples, SAMPLES);
        assert.equal(s.step, 8);
        assert.deepEqual([...reference.keys()], [1, 2, 3, 4, 5, 6, 7, 8]);
        assert.deepEqual(await weightsByStep(a, 'a1'), reference, 'both ranks of run A hold the same weights');
        const saved = (await readCheckpoint(join(dir, 'a', 'ckpt'))).manifest.tokenizer?.merges.length ?? 0;
        if (merges) assert.ok(saved > 0 && saved <= merges, `the checkpoint carries the learnt merges (${saved})`);
        else assert.equal(saved, 0, 'a byte-level checkpoint carries no merges');
      } finally {
        await a.stop();
      }

      // Run B: Ctrl-C on one trainer after step 2; every rank stops after the same step and rank 0 checkpoints it.
      // Two new trainers resume from that checkpoint (the second starts first: ranks may change hands).
      await mkdir(join(dir, 'b'));
      const b = await startHarness(join(dir, 'b'), RUN);
      t.after(() => b.stop());
      try {
        const first = [b.spawnTrainer('b0'), b.spawnTrainer('b1')];
        await until(async () => (await b.trace('b0')).length >= 2, first, 'run B');
        first[0].kill('SIGINT');
        await finish(first);
        const stoppedAt = (await b.trace('b0')).at(-1)!.globalStep as number;
        assert.ok(stoppedAt >= 2 && stoppedAt < 8, `stopped after step ${stoppedAt}`);
        assert.equal((await b.status()).checkpoint?.step, stoppedAt, 'rank 0 checkpointed the last applied step');

        const second = [b.spawnTrainer('b3', { resume: 'latest' })];
        await sleep(300);
        second.push(b.spawnTrainer('b2', { resume: 'latest' }));
        await finish(second);
        const resumed = await weightsByStep(b, 'b2');
        assert.deepEqual([...resumed.keys()], [1, 2, 3, 4, 5, 6, 7, 8].filter((s) => s > stoppedAt), 'the resumed run continued after the checkpoint');
        for (const [step, w] of resumed) assert.equal(w, reference.get(step), `weights after step ${step} differ from the uninterrupted run's`);
        const s = await b.status();
        assert.deepEqual(s.shards, { done: 4, leased: 0, pending: 0 });
        assert.equal(s.samples_seen, SAMPLES, 'every sample of both epochs applied once over the stopped and the resumed part');
        assert.equal(s.step, 8);
        assert.match(second.map((t) => t.log()).join('\n'), /data rewound to the checkpoint/);
      } finally {
        await b.stop();
      }

      // Run C: both trainers killed (-9) after step 3, a step after the periodic checkpoint of step 2: the coordinator
      // recorded progress past the checkpoint, which the resumed run must discard (rewind) to read those samples
      // again — once. The new trainers start with --resume none, knowing nothing of a checkpoint (run B resumed with
      // --resume latest): rank 0 finds itself behind the run and catches up from the latest checkpoint the coordinator
      // recorded, rank 1 takes rank 0's state.
      await mkdir(join(dir, 'c'));
      const c = await startHarness(join(dir, 'c'), { ...RUN, heartbeatTimeoutMs: 2000 });
      t.after(() => c.stop());
      try {
        const first = [c.spawnTrainer('c0'), c.spawnTrainer('c1')];
        // (Checkpoints are written in the background: wait until the coordinator has heard of step 2's.)
        await until(async () => (await c.trace('c0')).length >= 3 && (await c.trace('c1')).length >= 3 && ((await c.status()).checkpoint?.step ?? 0) >= 2, first, 'run C');
        for (const t of first) t.kill('SIGKILL');
        await Promise.all(first.map((t) => t.exited));
        const before = await c.status();
        assert.ok(before.step >= 3, `the coordinator is at step ${before.step}`);
        const ckpt = before.checkpoint!.step;

        const second = [c.spawnTrainer('c2', { resume: 'none' }), c.spawnTrainer('c3', { resume: 'none' })];
        await finish(second);
        const resumed = await weightsByStep(c, 'c2');
        assert.equal(Math.min(...resumed.keys()), ckpt + 1, 'the resumed run continued after the checkpoint');
        for (const [step, w] of resumed) assert.equal(w, reference.get(step), `weights after step ${step} differ from the uninterrupted run's`);
        assert.deepEqual(await weightsByStep(c, 'c3'), resumed, 'both new trainers hold the same weights after every step');
        const caughtUp = second.map((t) => t.log()).join('\n').match(/this trainer is behind the run: continuing from its latest checkpoint.*/g) ?? [];
        assert.ok(caughtUp.length > 0, `no trainer caught up from the checkpoint:\n${second.map((t) => t.log()).join('\n---\n')}`);
        for (const line of caughtUp) assert.match(line, new RegExp(` step=${ckpt} `), 'caught up from the latest checkpoint');
        const s = await c.status();
        assert.equal(s.samples_seen, SAMPLES, `samples counted once although the coordinator had seen step ${before.step} and the checkpoint was step ${ckpt}`);
        assert.equal(s.step, 8);
      } finally {
        await c.stop();
      }
    });
  });
}
