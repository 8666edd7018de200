// The optional fourth stage: a diffusion upsampler from the decoder's resolution to its own. Trained like the other
// stages (deterministic, leak-free, resumable bit for bit), absent from runs that give it no steps, addable to a
// run saved without one, and used by loadCheckpoint only once it has trained.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import * as tf from '@tensorflow/tfjs-core';
import { readCheckpoint } from '../../src/trainer/checkpoint.ts';
import { parseRunConfig, resumeCompatibility } from '../../src/trainer/config.ts';
import { loadCheckpoint } from '../../src/trainer/models.ts';
import { train, type StepReport } from '../../src/trainer/train.ts';
import { assertSameWeights, IMAGE_SIZE, tinyConfig, tinyRun, weights, withTempDir, writeTinyDataset } from './fixtures.ts';

const STEPS = { clip: 2, prior: 1, decoder: 2, upsampler: 4 };
/** The tiny upsampler's low resolution (the tiny decoder's size with an upsampler): not the default upsampler's. */
const TINY_LOW_RES = IMAGE_SIZE / 2;

test('an upsampler stage trains after the decoder: bit-identical across runs, tensors flat across its steps, its weights and EMA checkpointed', () =>
  withTempDir(async (dir) => {
    await writeTinyDataset(join(dir, 'data'));
    const counts: number[] = [];
    const reports: StepReport[] = [];
    const a = await train(tinyConfig(join(dir, 'data'), join(dir, 'a'), STEPS), {
      onStep: (s) => {
        reports.push(s);
        if (s.stage === 'upsampler') counts.push(tf.memory().numTensors);
      },
    });
    assert.equal(a.finished, true);
    assert.deepEqual(reports.filter((s) => s.stage === 'upsampler').map((s) => s.stageStep), [1, 2, 3, 4]);
    assert.ok(reports.every((s) => Number.isFinite(s.loss) && !s.skipped));
    // The first step creates Adam's moments; after that nothing may accumulate.
    assert.deepEqual(counts.slice(1), new Array(counts.length - 1).fill(counts[1]), `tensors per upsampler step: ${counts}`);
    const w = weights(a);
    assert.ok([...w.keys()].some((k) => k.startsWith('upsampler.')) && [...w.keys()].some((k) => k.startsWith('ema.upsampler.')));
    const saved = await readCheckpoint(join(dir, 'a'));
    assert.equal(saved.manifest.stage, 'upsampler');
    assert.ok(saved.weights.has('upsampler.in.w') && saved.weights.has('ema.upsampler.in.w'));
    // The upsampler sees 6 input channels: the noised image and the low-res one scaled up.
    assert.deepEqual(saved.weights.get('upsampler.in.w')!.shape.slice(2), [6, 8]);

    const b = await train(tinyConfig(join(dir, 'data'), join(dir, 'b'), STEPS));
    assertSameWeights(weights(a), weights(b));
    for (const r of [a, b]) r.dispose();
  }));

test('a run without upsampler steps builds and saves no upsampler; giving it steps on resume trains one as the uninterrupted run would', () =>
  withTempDir(async (dir) => {
    await writeTinyDataset(join(dir, 'data'));
    const full = await train(tinyConfig(join(dir, 'data'), join(dir, 'full'), STEPS));
    const expected = weights(full);
    full.dispose();

    // The same run, first saved as a three-stage run whose run file has no upsampler section at all (so the saved
    // config holds the default upsampler, another architecture), then resumed with the upsampler's steps.
    const { upsampler: _none, ...stages } = tinyRun(join(dir, 'data'), join(dir, 'parts'), STEPS).stages;
    const three = parseRunConfig({ ...tinyRun(join(dir, 'data'), join(dir, 'parts'), STEPS), stages });
    assert.equal(three.stages.upsampler.steps, 0);
    assert.notEqual(three.stages.upsampler.model.lowResSize, TINY_LOW_RES);
    const first = await train(three);
    assert.equal(first.models.upsampler, undefined);
    first.dispose();
    const saved = await readCheckpoint(join(dir, 'parts'));
    assert.ok(![...saved.weights.keys()].some((k) => k.includes('upsampler')));
    assert.deepEqual(resumeCompatibility(saved.manifest.config, tinyConfig(join(dir, 'data'), join(dir, 'parts'), STEPS)).incompatible, []);
    // Stop mid-upsampler (optimiser state saved), then finish.
    const cfg = tinyConfig(join(dir, 'data'), join(dir, 'parts'), STEPS);
    const part = await train(cfg, { resume: 'latest', stopAtStep: 7 });
    assert.equal(part.finished, false);
    part.dispose();
    assert.equal((await readCheckpoint(join(dir, 'parts'))).manifest.stage_step, 2);
    const rest = await train(cfg, { resume: 'latest' });
    assert.equal(rest.finished, true);
    assertSameWeights(weights(rest), expected);
    rest.dispose();
  }));

test('loadCheckpoint uses an upsampler only once it has trained, with its EMA weights', () =>
  withTempDir(async (dir) => {
    await writeTinyDataset(join(dir, 'data'));
    const cfg = tinyConfig(join(dir, 'data'), join(dir, 'ckpt'), STEPS);
    // Stopped in the decoder stage: the upsampler exists (and is saved) but has not trained.
    const early = await train(cfg, { stopAtStep: 4 });
    early.dispose();
    const before = await loadCheckpoint(join(dir, 'ckpt'));
    assert.equal(before.manifest.stage, 'decoder');
    assert.equal(before.models.upsampler, undefined);
    before.dispose();

    const done = await train(cfg, { resume: 'latest' });
    const trained = weights(done);
    done.dispose();
    const after = await loadCheckpoint(join(dir, 'ckpt'));
    assert.ok(after.models.upsampler);
    const ema = new Map([...after.models.upsampler.params()].map(([n, v]) => [`ema.upsampler.${n}`, Buffer.from((v.dataSync() as Float32Array).buffer)]));
    assertSameWeights(ema, new Map([...trained].filter(([k]) => k.startsWith('ema.upsampler.'))));
    after.dispose();
  }));

test('an upsampler that does not fit the run is refused naming the field; one with no steps is not checked', () => {
  const run = tinyRun('d', 'c', STEPS);
  const bad = (patch: (r: typeof run) => void, pattern: RegExp) => {
    const r = structuredClone(run);
    patch(r);
    assert.throws(() => parseRunConfig(r), pattern);
  };
  bad((r) => (r.stages.upsampler!.model.lowResSize = IMAGE_SIZE / 4), /stages\.upsampler\.model\.lowResSize: must equal stages\.decoder\.model\.imageSize \(8\), got 4/);
  bad((r) => (r.stages.upsampler!.model.embedDim = 32), /stages\.upsampler\.model\.embedDim: must equal stages\.clip\.model\.embedDim/);
  bad((r) => (r.stages.upsampler!.model.lowResSize = 12), /stages\.upsampler\.model\.lowResSize: must be below imageSize \(16\) and divide it/);
  bad((r) => Object.assign(r.stages.upsampler!.model, { imageSize: 48, lowResSize: 8 }), /stages\.upsampler\.model\.imageSize: must divide data\.imageSize \(16\)/);
  bad((r) => Object.assign(r.stages.decoder.model, { lowResSize: 4 }), /stages\.decoder\.model\.lowResSize: must be 0/);
  const idle = structuredClone(run);
  idle.stages.upsampler!.steps = 0;
  idle.stages.upsampler!.model.embedDim = 32;
  assert.equal(parseRunConfig(idle).stages.upsampler.steps, 0);
});
