// Resuming compares the run file with the config in the checkpoint's manifest: another model architecture is
// refused naming the field; budgets, learning rates, logging and checkpoint cadence may change (with a warning).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { UsageError } from '../../src/cli/args.ts';
import { Coordinator } from '../../src/coordinator/service.ts';
import { CoordinatorConfig } from '../../src/coordinator/config.ts';
import { initBackend } from '../../src/model/backend.ts';
import { checkResumable, readCheckpoint } from '../../src/trainer/checkpoint.ts';
import { parseRunConfig, resumeCompatibility } from '../../src/trainer/config.ts';
import { train } from '../../src/trainer/train.ts';
import { closeNats, openNats } from '../../src/transport/connection.ts';
import { runEasel } from '../helpers/easel.ts';
import { startNats } from '../helpers/nats.ts';
import { tinyRun, withTempDir, writeTinyDataset } from './fixtures.ts';

const base = () => tinyRun('/data', '/ckpt');

test('a changed model architecture is incompatible; budgets, lr, logging, checkpoint cadence, guidance dropout and loss weighting are only changes', () => {
  const saved = parseRunConfig(base());
  const next = base();
  next.stages.decoder.model.channels = 16;
  next.stages.clip.model.layers = 2;
  next.stages.clip.steps = 10;
  Object.assign(next.stages.prior, { optimizer: { lr: 1e-4 } });
  next.logEvery = 5;
  next.checkpoint.everySteps = 7;
  Object.assign(next.stages.decoder.model, { captionDrop: 0.2, minSnrGamma: 5, snrWeightFloor: 1 });
  const r = resumeCompatibility(saved, parseRunConfig(next));
  assert.deepEqual(r.incompatible, [
    { path: 'stages.clip.model.layers', a: 1, b: 2 },
    { path: 'stages.decoder.model.channels', a: 8, b: 16 },
  ]);
  assert.deepEqual(
    r.changed.map((d) => d.path),
    [
      'logEvery',
      'stages.clip.steps',
      'stages.prior.optimizer.lr',
      'stages.decoder.model.minSnrGamma',
      'stages.decoder.model.snrWeightFloor',
      'stages.decoder.model.captionDrop',
      'checkpoint.everySteps',
    ],
  );
  assert.deepEqual(resumeCompatibility(saved, saved), { incompatible: [], changed: [] });
});

test('refusing names each architecture field with both values; a manifest from before a section existed takes its defaults', () => {
  const saved = parseRunConfig(base());
  const next = base();
  next.stages.decoder.model.channels = 32;
  assert.throws(
    () => checkResumable({ url: 'file:///ckpt/step-000000002', manifest: { config: saved } }, parseRunConfig(next)),
    (e: Error) => e instanceof UsageError && e.message.includes('cannot resume from file:///ckpt/step-000000002') && e.message.includes('stages.decoder.model.channels: checkpoint has 8, run file has 32'),
  );
  // An older checkpoint's manifest has no `coordinator` section: the defaults fill it, so nothing differs.
  const { coordinator: _, ...old } = saved;
  assert.deepEqual(checkResumable({ url: 'x', manifest: { config: old } }, saved), { incompatible: [], changed: [] });
});

test('easel train --resume refuses another architecture before training, and continues with a longer budget and new lr', () =>
  withTempDir(async (dir) => {
    await initBackend();
    await writeTinyDataset(join(dir, 'data'));
    const run = tinyRun(join(dir, 'data'), join(dir, 'ckpt'), { clip: 2, prior: 0, decoder: 0 });
    (await train(parseRunConfig(run), {})).dispose();

    const wider = structuredClone(run);
    wider.stages.clip.model.width = 32;
    await assert.rejects(train(parseRunConfig(wider), { resume: 'latest' }), /stages\.clip\.model\.width: checkpoint has 16, run file has 32/);

    const longer = structuredClone(run);
    longer.stages.clip.steps = 3;
    Object.assign(longer.stages.clip, { optimizer: { lr: 5e-4 } });
    const r = await train(parseRunConfig(longer), { resume: 'latest' });
    assert.equal(r.globalStep, 3);
    r.dispose();
  }));

test('easel trainer --resume refuses a checkpoint of another architecture (exit 2, field named)', { timeout: 60_000 }, (t) =>
  withTempDir(async (dir) => {
    await initBackend();
    await writeTinyDataset(join(dir, 'data'));
    const run = tinyRun(join(dir, 'data'), join(dir, 'ckpt'), { clip: 1, prior: 0, decoder: 0 });
    (await train(parseRunConfig(run), {})).dispose();
    const ckpt = (await readCheckpoint(join(dir, 'ckpt'))).url;

    const nats = await startNats();
    const nc = await openNats({ servers: nats.url, name: 'test' });
    const other = structuredClone(run);
    other.stages.prior.model.width = 32;
    const c = await Coordinator.start({
      nc,
      run: 'compat',
      config: CoordinatorConfig.parse({ httpPort: 0 }),
      runConfig: parseRunConfig({ ...other, name: 'compat' }),
      budgets: { clip: 1, prior: 0, decoder: 0, upsampler: 0 },
      shards: [{ key: '00000.tar', samples: 16 }],
      ticking: false,
    });
    try {
      const { code, log } = await runEasel(t, ['trainer', '--nats', nats.url, '--run', 'compat', '--resume', ckpt], { EASEL_BACKEND: 'cpu' });
      assert.equal(code, 2, log);
      assert.match(log, /stages\.prior\.model\.width: checkpoint has 16, run file has 32/);
    } finally {
      await c.stop();
      await closeNats(nc);
      await nats.stop();
    }
  }));
