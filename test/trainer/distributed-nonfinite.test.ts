// One run, two specifications: a non-finite gradient on one rank in a real distributed step makes every rank skip
// that step together, and rank 0 checkpoints by time (checkpoint.everyMinutes) when no step rule would fire.
//
// The cheapest real way to make one rank's gradient infinite: trainer b's run file weights the decoder loss with a
// Min-SNR floor beyond float32's range (snrWeightFloor 1e300 → Inf), so every batch b reads gives an infinite loss
// and gradient while a's are finite. (The in-process coordinator holds no run file to compare theirs with, as in
// distributed-divergence.test.ts.) 3 shards × 8 samples, decoder batch 4 per rank, shard i read by rank i mod 2: in
// steps 1–2 both ranks read (b's gradient is Inf: skipped), in steps 3–4 only rank 0 reads (shard 2: applied).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { assertEpochExactlyOnce, metricValue, startHarness, type Harness } from './distributed-harness.ts';
import type { Manifest } from '../../src/trainer/checkpoint.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('a run in which rank 1 computes an infinite gradient in steps 1–2 of 4', { timeout: 180_000 }, () => {
  let dir: string;
  let h: Harness;
  let traces: Record<string, Array<Record<string, any>>>;
  let logs: () => string;

  // The run takes its time here, hence the hook's own timeout: the suite's does not cover its before hook, and a
  // hook that never ends would keep after() from stopping the trainers.
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'easel-nonfinite-'));
    h = await startHarness(dir, { steps: { clip: 0, prior: 0, decoder: 100 }, shards: 3, perShard: 8, minTrainers: 2 });
    const run = parse(await readFile(h.configPath, 'utf8'));
    // No checkpoint by step count (0: only at stage ends, and the decoder's budget outlasts the data): any
    // checkpoint before the end is the time rule's.
    run.checkpoint = { ...run.checkpoint, everySteps: 0, everyMinutes: 1e-9, keep: 10 };
    const finite = join(dir, 'finite.yaml');
    const infinite = join(dir, 'infinite.yaml');
    await writeFile(finite, stringify(run));
    const decoder = run.stages.decoder;
    await writeFile(infinite, stringify({ ...run, stages: { ...run.stages, decoder: { ...decoder, model: { ...decoder.model, minSnrGamma: 5, snrWeightFloor: 1e300 } } } }));
    // Ranks follow registration order: a registers first and is rank 0.
    const a = h.spawnTrainer('a', { config: finite });
    while ((await h.status()).registered < 1) {
      if (a.exitCode !== null) assert.fail(`a exited before registering:\n${a.log()}`);
      await sleep(100);
    }
    const b = h.spawnTrainer('b', { config: infinite });
    logs = () => `--- a ---\n${a.log()}\n--- b ---\n${b.log()}`;
    assert.deepEqual(await Promise.all([a.exited, b.exited]), [0, 0], logs());
    traces = { a: await h.trace('a'), b: await h.trace('b') };
  }, { timeout: 180_000 });

  after(async () => {
    await h?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('every rank skips the steps together with identical weights, the skips are counted, and training goes on', async () => {
    const { a, b } = traces;
    const why = () => `${JSON.stringify(traces)}\n${logs()}`;
    assert.deepEqual(a.map((r) => r.globalStep), [1, 2, 3, 4], why());
    assert.deepEqual(a.map((r) => r.skipped), [true, true, false, false], `a's skipped steps\n${why()}`);
    assert.deepEqual(b.map((r) => r.skipped), [true, true, false, false], `b's skipped steps\n${why()}`);
    assert.deepEqual(b.map((r) => r.own), [4, 4, 0, 0], 'b read in the skipped steps only');
    // The skipped steps changed nothing (not even the EMA); the steps after them did.
    assert.equal(a[1].weights, a[0].weights, 'weights moved in a skipped step');
    assert.notEqual(a[2].weights, a[1].weights, 'the step after the skips trained');
    // Same steps, same weights on both ranks after every step; every sample counted once, skipped steps' included.
    await assertEpochExactlyOnce(h, ['a', 'b'], { shards: 3, samples: 24 }, logs);
    assert.equal((logs().match(/non-finite gradient on some rank: step skipped by all/g) ?? []).length, 4, 'each rank logged both skips');
    // The coordinator heard every step of both ranks, the skipped ones too.
    const metrics = await h.coordinator.metrics.registry.metrics();
    assert.equal(metricValue(metrics, 'easel_step_seconds_count'), 8, logs());
    // …and counted each skipped step once, under its stage (what the EaselStepsSkipped alert watches).
    assert.match(metrics, /^easel_steps_skipped_total\{stage="decoder",run="[^"]+"\} 2$/m);
    // Rank 0's checkpoints carry the count of skipped steps (a resumed run goes on counting from it).
    assert.deepEqual((await manifest(4)).skipped_steps, { decoder: 2 });
  });

  test('rank 0 writes a checkpoint once everyMinutes passed, although everySteps would not fire', async () => {
    // Every step took longer than 1e-9 minutes: a checkpoint after each; 4 is also the end of the data.
    const written = (await readdir(join(dir, 'ckpt'))).filter((f) => f.startsWith('step-')).sort();
    assert.deepEqual(written, ['step-000000001', 'step-000000002', 'step-000000003', 'step-000000004'], logs());
    assert.deepEqual((await manifest(1)).skipped_steps, { decoder: 1 }, 'step 1 was checkpointed after it was skipped');
    assert.equal((await h.status()).checkpoint?.step, 4, 'the coordinator heard of the last one');
  });

  const manifest = async (step: number): Promise<Manifest> => JSON.parse(await readFile(join(dir, 'ckpt', `step-${String(step).padStart(9, '0')}`, 'manifest.json'), 'utf8'));
});
