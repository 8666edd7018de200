import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/model/backend.ts';
import type { StageName } from '../../src/trainer/config.ts';
import { readCheckpoint } from '../../src/trainer/checkpoint.ts';
import { train, type StepReport } from '../../src/trainer/train.ts';
import { loadCheckpoint } from '../../src/trainer/models.ts';
import { assertSameWeights, tinyConfig, weights, withTempDir, writeTinyDataset } from './fixtures.ts';

before(async () => {
  await initBackend();
});

test('two runs with the same seed end with bit-identical weights, and tensors stay flat across steps', () =>
  withTempDir(async (dir) => {
    await writeTinyDataset(join(dir, 'data'));
    const counts: Record<string, number[]> = { clip: [], prior: [], decoder: [] };
    const steps: StepReport[] = [];
    const a = await train(tinyConfig(join(dir, 'data'), join(dir, 'a'), { clip: 4, prior: 4, decoder: 4 }), {
      onStep: (s) => {
        counts[s.stage].push(tf.memory().numTensors);
        steps.push(s);
      },
    });
    assert.equal(a.finished, true);
    assert.equal(a.globalStep, 12);
    assert.deepEqual(steps.map((s) => `${s.stage}${s.stageStep}`), ['clip1', 'clip2', 'clip3', 'clip4', 'prior1', 'prior2', 'prior3', 'prior4', 'decoder1', 'decoder2', 'decoder3', 'decoder4']);
    assert.ok(steps.every((s) => Number.isFinite(s.loss) && !s.skipped));
    // The first step of a stage creates Adam's moments; after that nothing may accumulate.
    for (const s of Object.keys(counts)) assert.deepEqual(counts[s].slice(1), new Array(counts[s].length - 1).fill(counts[s][1]), `${s}: ${counts[s]}`);

    const b = await train(tinyConfig(join(dir, 'data'), join(dir, 'b'), { clip: 4, prior: 4, decoder: 4 }));
    assertSameWeights(weights(a), weights(b));
    // And the run did something: CLIP moved, the EMA differs from the live decoder weights.
    const init = await train(tinyConfig(join(dir, 'data'), join(dir, 'c'), { clip: 0, prior: 0, decoder: 0 }));
    assert.ok(!weights(init).get('clip.visual.proj.w')!.equals(weights(a).get('clip.visual.proj.w')!));
    for (const r of [a, b, init]) r.dispose();
  }));

test('a run stopped and resumed — inside a stage and across a stage boundary — ends bit-identical to the uninterrupted run', () =>
  withTempDir(async (dir) => {
    await writeTinyDataset(join(dir, 'data'));
    const steps = { clip: 3, prior: 3, decoder: 2 };
    const full = await train(tinyConfig(join(dir, 'data'), join(dir, 'full'), steps));
    const expected = weights(full);
    full.dispose();

    const cfg = tinyConfig(join(dir, 'data'), join(dir, 'parts'), steps);
    // Stop mid-CLIP (optimiser state saved), then exactly at the CLIP → prior boundary, then mid-prior.
    for (const stopAt of [2, 3, 5]) {
      const part = await train(cfg, { resume: 'latest', stopAtStep: stopAt });
      assert.equal(part.finished, false);
      assert.equal(part.globalStep, stopAt);
      part.dispose();
      const m = (await readCheckpoint(join(dir, 'parts'))).manifest;
      assert.equal(m.global_step, stopAt);
    }
    const rest = await train(cfg, { resume: 'latest' });
    assert.equal(rest.finished, true);
    assert.equal(rest.globalStep, 8);
    assertSameWeights(weights(rest), expected);
    rest.dispose();
  }));

test('a non-finite gradient skips the step, is counted, and training goes on', () =>
  withTempDir(async (dir) => {
    await writeTinyDataset(join(dir, 'data'));
    let calls = 0;
    const poisonSecond = async (flat: Float32Array) => {
      calls++;
      if (calls !== 2) return flat;
      const out = flat.slice();
      out[0] = NaN;
      return out;
    };
    const reports: StepReport[] = [];
    const r = await train(tinyConfig(join(dir, 'data'), join(dir, 'ckpt'), { clip: 3, prior: 0, decoder: 0 }), { reduce: poisonSecond, onStep: (s) => reports.push(s) });
    assert.deepEqual(reports.map((s) => s.skipped), [false, true, false]);
    assert.deepEqual(r.skippedSteps, { clip: 1 });
    for (const v of r.models.clip.params().values()) assert.ok((v.dataSync() as Float32Array).every(Number.isFinite));
    assert.deepEqual((await readCheckpoint(join(dir, 'ckpt'))).manifest.skipped_steps, { clip: 1 });
    r.dispose();
  }));

test('loadCheckpoint gives the trained CLIP and the EMA prior and decoder (or the live ones on request)', () =>
  withTempDir(async (dir) => {
    await writeTinyDataset(join(dir, 'data'));
    const r = await train(tinyConfig(join(dir, 'data'), join(dir, 'ckpt'), { clip: 2, prior: 2, decoder: 2 }));
    const trained = weights(r);
    const ema = await loadCheckpoint(join(dir, 'ckpt'));
    assert.equal(ema.manifest.global_step, 6);
    assert.equal(ema.config.name, 'tiny');
    const bytesOf = (m: Map<string, tf.Variable>, prefix: string) => new Map([...m].map(([n, v]) => [prefix + n, Buffer.from((v.dataSync() as Float32Array).buffer)]));
    const pick = (prefix: string) => new Map([...trained].filter(([k]) => k.startsWith(prefix)));
    assertSameWeights(bytesOf(ema.models.clip.params(), 'clip.'), pick('clip.'));
    assertSameWeights(bytesOf(ema.models.prior.params(), 'ema.prior.'), pick('ema.prior.'));
    assertSameWeights(bytesOf(ema.models.decoder.params(), 'ema.decoder.'), pick('ema.decoder.'));
    const live = await loadCheckpoint(join(dir, 'ckpt'), { weights: 'live' });
    assertSameWeights(bytesOf(live.models.decoder.params(), 'decoder.'), pick('decoder.'));
    for (const x of [r, ema, live]) x.dispose();
  }));

test('aborting finishes the current step, writes a checkpoint, and resuming from it completes the run', () =>
  withTempDir(async (dir) => {
    await writeTinyDataset(join(dir, 'data'));
    const cfg = tinyConfig(join(dir, 'data'), join(dir, 'ckpt'), { clip: 4, prior: 0, decoder: 0 });
    const abort = new AbortController();
    const r = await train(cfg, { signal: abort.signal, onStep: (s) => s.globalStep === 1 && abort.abort() });
    assert.equal(r.finished, false);
    assert.equal(r.globalStep, 1);
    assert.match(r.lastCheckpoint!, /step-000000001$/);
    r.dispose();
    const rest = await train(cfg, { resume: 'latest' });
    assert.equal(rest.finished, true);
    assert.equal(rest.globalStep, 4);
    rest.dispose();
  }));

test('with everyMinutes elapsed, a checkpoint is written after every step', () =>
  withTempDir(async (dir) => {
    await writeTinyDataset(join(dir, 'data'));
    const cfg = tinyConfig(join(dir, 'data'), join(dir, 'ckpt'), { clip: 3, prior: 0, decoder: 0 });
    cfg.checkpoint = { ...cfg.checkpoint, everySteps: 0, everyMinutes: 1e-9, keep: 10 };
    const r = await train(cfg);
    const written = (await readdir(join(dir, 'ckpt'))).filter((f) => f.startsWith('step-')).sort();
    assert.deepEqual(written, ['step-000000001', 'step-000000002', 'step-000000003']);
    r.dispose();
  }));

test('a data URL without shards fails with a clear error and frees the models it built', () =>
  withTempDir(async (dir) => {
    const before = tf.memory().numTensors;
    await assert.rejects(train(tinyConfig(join(dir, 'empty'), join(dir, 'ckpt'))), /no shards \(NNNNN\.tar\) under data\.train = .*empty/);
    assert.equal(tf.memory().numTensors, before);
  }));

test('CLIP is frozen after its stage: the prior and decoder stages change their own weights and not one bit of CLIP', () =>
  withTempDir(async (dir) => {
    await writeTinyDataset(join(dir, 'data'));
    const cfg = tinyConfig(join(dir, 'data'), join(dir, 'ckpt'), { clip: 2, prior: 2, decoder: 2 });
    // Only the stage-end checkpoints, all kept: step 2 is CLIP as its stage left it.
    cfg.checkpoint = { ...cfg.checkpoint, everySteps: 0, everyMinutes: 0, keep: 10 };
    const r = await train(cfg);
    const atClipEnd = (await readCheckpoint(join(dir, 'ckpt', 'step-000000002'))).weights;
    assert.equal(r.globalStep, 6);
    const saved = (name: string) => Buffer.from((atClipEnd.get(name)!.data as Float32Array).buffer);
    const final = weights(r);
    const stageNames = (s: string) => [...final.keys()].filter((k) => k.startsWith(`${s}.`));
    const changed = (s: string) => stageNames(s).filter((k) => !saved(k).equals(final.get(k)!));
    assert.ok(stageNames('clip').length > 0);
    assert.deepEqual(changed('clip'), [], 'CLIP weights that moved after the CLIP stage');
    // The later stages did train. (Not all their weights move in 2 steps: zero-initialised output layers pass no
    // gradient back until they have moved themselves.)
    for (const s of ['prior', 'decoder']) assert.ok(changed(s).length > 0, `${s}: none of its ${stageNames(s).length} weights moved`);
    r.dispose();
  }));

test("each stage's learning rate follows that stage's own optimizer.lr, warmup and final ratio", () =>
  withTempDir(async (dir) => {
    await writeTinyDataset(join(dir, 'data'));
    const cfg = tinyConfig(join(dir, 'data'), join(dir, 'ckpt'), { clip: 3, prior: 3, decoder: 3 });
    const set = (s: StageName, lr: number, warmupSteps: number, minLrRatio: number) => {
      cfg.stages[s].optimizer.lr = lr;
      cfg.stages[s].schedule = { warmupSteps, minLrRatio };
    };
    set('clip', 2e-3, 1, 0.5);
    set('prior', 4e-4, 0, 0.25);
    set('decoder', 9e-4, 3, 0.1);
    const reported: Record<string, number[]> = { clip: [], prior: [], decoder: [] };
    const r = await train(cfg, { onStep: (s) => reported[s.stage].push(s.lr) });
    // By hand: warmup climbs linearly to lr, then a half cosine falls to minLrRatio × lr at the stage's last step.
    const expected = {
      clip: [2e-3, 2e-3, 1e-3], // 1 warmup step; cosine over the 2 steps after it
      prior: [4e-4, 2.5e-4, 1e-4], // no warmup: 0.25·lr + ½·0.75·lr·(1 + cos(π·k/2))
      decoder: [3e-4, 6e-4, 9e-4], // all warmup
    };
    for (const s of ['clip', 'prior', 'decoder'] as const) {
      assert.equal(reported[s].length, 3, s);
      reported[s].forEach((lr, k) => assert.ok(Math.abs(lr - expected[s][k]) < 1e-12, `${s} step ${k + 1}: lr ${lr}, expected ${expected[s][k]}`));
    }
    r.dispose();
  }));
