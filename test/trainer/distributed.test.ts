// Trainers and the real coordinator over a real nats-server train the tiny synthetic set.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Dtype, HEADER_BYTES } from '../../src/transport/chunks.ts';
import { assertEpochExactlyOnce, metricValue, startHarness, watchRing } from './distributed-harness.ts';
import { withTempDir } from './fixtures.ts';

/**
 * `trainers` trainers train the epoch (one shard of 16 samples per trainer, batch 8 per rank: 2 steps) with `wire`;
 * checks that they read every sample exactly once with bit-identical weights after every step, and that
 * easel_allreduce_bytes_total is what their rings put on the wire. Returns what the rings sent and the coordinator's
 * metrics. The harness is stopped after `t`, even if it times out.
 */
async function trainEpoch(t: TestContext, dir: string, wire: 'f32' | 'bf16' | 'f16', trainers: number) {
  const shards = trainers;
  const samples = 16 * shards;
  // Budgets larger than one epoch: the run ends when the data is read.
  const h = await startHarness(dir, { steps: { clip: 100, prior: 0, decoder: 0 }, shards, minTrainers: trainers, wire });
  t.after(() => h.stop());
  try {
    const traffic = watchRing(h);
    const ids = Array.from({ length: trainers }, (_, i) => String.fromCharCode(97 + i));
    const procs = ids.map((id) => h.spawnTrainer(id));
    const codes = await Promise.all(procs.map((p) => p.exited));
    const logs = () => procs.map((p, i) => `--- ${ids[i]} ---\n${p.log()}`).join('\n');
    if (process.env.EASEL_TEST_LOGS) console.log(logs());
    assert.deepEqual(codes, ids.map(() => 0), `trainers failed:\n${logs()}`);
    await traffic.stop();
    // Every shard done, samples_seen = expected, every trainer applied the same steps (whose samples add up to the
    // epoch, counted once) with the same weights after each.
    const { status: s, traces } = await assertEpochExactlyOnce(h, ids, { shards, samples }, logs);
    assert.ok(traces[0].length >= 2, `a applied ${traces[0].length} steps`);
    // Each sample was read by one rank only.
    assert.equal(traces.flat().reduce((n, r) => n + r.own, 0), samples);
    assert.deepEqual(new Set(traces.flat().map((r) => r.world)), new Set([trainers]));
    // The bytes the trainers reported are the chunks their rings sent for the applied steps (all-reduces and CLIP's
    // gathers; the last collective, at the final step's number, only found the data read and was not reported).
    const metrics = await h.coordinator.metrics.registry.metrics();
    const last = s.step;
    const sent = traffic.bytes('ar', last) + traffic.bytes('ag', last);
    assert.ok(traffic.bytes('ar', last) > 0 && traffic.bytes('ag', last) > 0, 'both all-reduces and gathers went over the wire');
    assert.equal(metricValue(metrics, 'easel_allreduce_bytes_total'), sent, 'easel_allreduce_bytes_total is what the rings sent');
    return { traffic, metrics };
  } finally {
    await h.stop();
  }
}

// With three ranks, rank 0's state broadcast can go out before its successor (which learns its rank from a later
// heartbeat) has opened the generation's ring; the ring's readiness handshake (docs/transport.md, Subjects) makes it
// wait instead of losing the broadcast, timing out and forming another generation.
test('three trainers read every sample of the epoch exactly once and hold bit-identical weights after every step', { timeout: 240_000 }, async (t) => {
  await withTempDir(async (dir) => {
    const { traffic, metrics } = await trainEpoch(t, dir, 'f32', 3);
    assert.ok(traffic.allReduceChunks.length > 0 && traffic.allReduceChunks.every((c) => c.dtype === Dtype.F32 && c.bodyBytes === 4 * c.elements), 'the default wire is float32');
    // Every step metric has a plausible value after a real run (their exact plumbing: test/coordinator/service.test.ts).
    const value = (name: string) => metricValue(metrics, name);
    assert.equal(value('easel_generation_changes_total'), 0, 'the first generation formed once: no collective was lost to a rank that had not opened its ring');
    assert.ok(value('easel_step_seconds_count') >= 6, 'each trainer reported both steps');
    assert.ok(value('easel_checkpoint_seconds_count') >= 1, 'rank 0 reported its checkpoints');
    for (const name of ['easel_step_seconds_sum', 'easel_samples_per_second', 'easel_grad_norm', 'easel_allreduce_seconds_total', 'easel_data_wait_seconds_total', 'easel_checkpoint_seconds_sum']) {
      assert.ok(value(name) > 0, `${name} = ${value(name)}`);
    }
  });
});

// f16 keeps 3 more mantissa bits than bf16 and overflows to ±Inf above 65504 (a skipped step); both halve the bytes.
for (const [wire, dtype] of [['bf16', Dtype.BF16], ['f16', Dtype.F16]] as const) {
  test(`with coordinator.wire ${wire} the gradient travels in 16 bits: half the bytes, the same exactly-once and identical ranks`, { timeout: 120_000 }, async (t) => {
    await withTempDir(async (dir) => {
      const { traffic } = await trainEpoch(t, dir, wire, 2);
      const chunks = traffic.allReduceChunks;
      assert.ok(chunks.length > 0 && chunks.every((c) => c.dtype === dtype && c.bodyBytes === 2 * c.elements), `every all-reduce chunk is ${wire}`);
      const sent = chunks.reduce((n, c) => n + HEADER_BYTES + c.bodyBytes, 0);
      const asF32 = chunks.reduce((n, c) => n + HEADER_BYTES + 4 * c.elements, 0);
      assert.ok(sent < 0.51 * asF32, `all-reduces sent ${sent} bytes, ${asF32} in float32`);
    });
  });
}

test('a distributed trainer holds the same number of tensors after every step of each of the four stages, validations and sample grids included', { timeout: 120_000 }, async (t) => {
  await withTempDir(async (dir) => {
    const h = await startHarness(dir, { steps: { clip: 4, prior: 3, decoder: 3, upsampler: 2 }, shards: 4, epochs: 2 });
    t.after(() => h.stop());
    try {
      const tf = await import('@tensorflow/tfjs-core');
      const { loadRunConfig } = await import('../../src/trainer/config.ts');
      const { trainDistributed } = await import('../../src/trainer/distributed.ts');
      const { parseRunConfig } = await import('../../src/trainer/config.ts');
      const file = await loadRunConfig(h.configPath);
      // Rank 0 validates every 2 steps on 8 held-out pairs (the training shards stand in for them) and draws a grid.
      const samples = { every: 2, prompts: ['a red circle'], n: 1, steps: 1 };
      const config = parseRunConfig({ ...file, data: { ...file.data, eval: file.data.train }, validation: { every: 2, samples: 8 }, samples });
      const counts: number[] = [];
      const validated: string[] = [];
      const r = await trainDistributed({
        nats: h.nats.url,
        run: h.run,
        config,
        id: 'solo',
        resume: 'none',
        heartbeatMs: 300,
        onStep: (s) => {
          counts.push(tf.memory().numTensors);
          if (s.validationLoss !== undefined) validated.push(`${s.stage}${s.stageStep}`);
        },
      });
      assert.equal(r.ended, 'finished');
      // The trainer computes in the coordinator's own process, blocking it for whole steps (seconds on a loaded
      // machine, longer than the heartbeat timeout): that stall is not the trainer's silence, so the first
      // generation is the only one (a trainer declared dead registers again, forming another).
      assert.equal(h.coordinator.status().generation, 1, 'the coordinator declared the trainer dead while it computed a step in the same process');
      assert.equal(counts.length, 12);
      assert.deepEqual(validated, ['clip2', 'clip4', 'prior2', 'prior3', 'decoder2', 'decoder3', 'upsampler2']);
      // Grids after decoder steps 2 and 3 (global 9, 10) and upsampler step 2 (global 12), beside the checkpoints.
      const { readdir } = await import('node:fs/promises');
      assert.deepEqual((await readdir(join(config.checkpoint.url, 'samples'))).sort(), ['step-000000009.png', 'step-000000010.png', 'step-000000012.png']);
      // Rank 0's held-out losses reach the coordinator's metrics, by stage.
      const metrics = await h.coordinator.metrics.registry.metrics();
      const held = /^easel_validation_loss\{stage="upsampler",run="[^"]+"\} (\S+)$/m.exec(metrics);
      assert.ok(held && Number(held[1]) > 0, metrics.split('\n').filter((l) => l.includes('validation')).join('\n'));
      // Each stage has its own optimiser (moments sized by its model), so the count may change at a stage boundary;
      // within a stage it must stay flat.
      const perStage = [counts.slice(0, 4), counts.slice(4, 7), counts.slice(7, 10), counts.slice(10)];
      for (const c of perStage) assert.ok(c.every((n) => n === c[0]), `tensors per step: ${counts.join(' ')}`);
      // Across stages the only difference is Adam's two moments per trained variable: the old optimiser was freed.
      const { buildModels, disposeModels } = await import('../../src/trainer/models.ts');
      const m = buildModels(config);
      const vars = [m.clip.params().size, m.prior.params().size, m.decoder.params().size, m.upsampler!.params().size];
      disposeModels(m);
      const rest = perStage.map((c, i) => c[0] - 2 * vars[i]);
      assert.deepEqual(rest, [rest[0], rest[0], rest[0], rest[0]], `tensors per step: ${counts.join(' ')}; variables per stage: ${vars.join(' ')}`);
    } finally {
      await h.stop();
    }
  });
});
