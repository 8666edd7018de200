// Held-out loss during training (validation.every): when it is due, that it is the same figure every time for the
// same weights, that it leaks nothing, and that a validated run trains exactly as one that is not.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import * as tf from '@tensorflow/tfjs-core';
import { parseRunConfig } from '../../src/trainer/config.ts';
import { train, type StepReport } from '../../src/trainer/train.ts';
import { Validation } from '../../src/trainer/validation.ts';
import { assertSameWeights, tinyRun, weights, withTempDir, writeTinyDataset } from './fixtures.ts';

const STEPS = { clip: 3, prior: 3, decoder: 3, upsampler: 3 };

/** The tiny run validating every 2 steps on 12 held-out pairs (the training shards stand in for them here). */
function validatedRun(data: string, ckpt: string, every = 2) {
  const run = tinyRun(data, ckpt, STEPS);
  return parseRunConfig({ ...run, data: { ...run.data, eval: data }, validation: { every, samples: 12 } });
}

test('every stage reports its held-out loss every N steps and at its end; a validated run ends with the same weights as one that is not', () =>
  withTempDir(async (dir) => {
    await writeTinyDataset(join(dir, 'data'));
    const reports: StepReport[] = [];
    const counts: Record<string, number[]> = {};
    const a = await train(validatedRun(join(dir, 'data'), join(dir, 'a')), {
      onStep: (s) => {
        reports.push(s);
        (counts[s.stage] ??= []).push(tf.memory().numTensors);
      },
    });
    const validated = reports.filter((s) => s.validationLoss !== undefined).map((s) => `${s.stage}${s.stageStep}`);
    assert.deepEqual(validated, ['clip2', 'clip3', 'prior2', 'prior3', 'decoder2', 'decoder3', 'upsampler2', 'upsampler3']);
    assert.ok(reports.every((s) => s.validationLoss === undefined || (Number.isFinite(s.validationLoss) && s.validationLoss > 0)));
    // Validation steps hold no more tensors than the others (the first step of a stage creates Adam's moments).
    for (const [stage, c] of Object.entries(counts)) assert.deepEqual(c.slice(1), new Array(c.length - 1).fill(c[1]), `${stage}: ${c}`);

    // Validation draws nothing training uses: the same run unvalidated ends bit for bit where this one did.
    const plain = tinyRun(join(dir, 'data'), join(dir, 'b'), STEPS);
    const b = await train(parseRunConfig(plain));
    assertSameWeights(weights(a), weights(b));

    // The same weights give the same held-out loss every time (fixed noise and masks), and training moved it.
    const v = (await Validation.open(validatedRun(join(dir, 'data'), join(dir, 'a'))))!;
    const last = reports.filter((s) => s.stage === 'decoder' && s.validationLoss !== undefined).at(-1)!.validationLoss!;
    const first = reports.find((s) => s.stage === 'decoder' && s.validationLoss !== undefined)!.validationLoss!;
    assert.notEqual(first, last);
    const before = tf.memory().numTensors;
    assert.equal(v.loss(a.models, 'prior'), v.loss(a.models, 'prior'));
    assert.equal(tf.memory().numTensors, before);
    for (const r of [a, b]) r.dispose();
  }));

test('validation without data.eval is refused naming the field; validation.every 0 reads nothing', async () => {
  const run = tinyRun('d', 'c');
  assert.throws(() => parseRunConfig({ ...run, validation: { every: 5 } }), /data\.eval: is required with validation\.every = 5/);
  assert.equal(await Validation.open(parseRunConfig({ ...run, data: { ...run.data, eval: '/nonexistent' } })), undefined);
  await assert.rejects(Validation.open(parseRunConfig({ ...run, data: { ...run.data, eval: '/nonexistent' }, validation: { every: 5 } })), /no shards/);
});
