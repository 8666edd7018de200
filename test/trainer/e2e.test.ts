// The real entry point, end to end: `easel train --config run.yaml` in a child process on a few dozen samples.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { stringify } from 'yaml';
import { readCheckpoint } from '../../src/trainer/checkpoint.ts';
import { tinyRun, withTempDir, writeTinyDataset } from './fixtures.ts';

function easel(args: string[]) {
  return spawnSync(process.execPath, ['bin/easel.js', ...args], { encoding: 'utf8', env: { ...process.env, EASEL_LOG: 'info' } });
}

test('easel train runs all three stages from a run file, writes checkpoints, and latest resolves', () =>
  withTempDir(async (dir) => {
    await writeTinyDataset(join(dir, 'data'));
    const run = join(dir, 'run.yaml');
    await writeFile(run, stringify(tinyRun(join(dir, 'data'), join(dir, 'ignored'), { clip: 2, prior: 2, decoder: 2 })));

    const first = easel(['train', '--config', run, '--out', join(dir, 'ckpt'), '--stop-at', '3']);
    assert.equal(first.status, 0, first.stderr);
    assert.match(first.stdout, /stopped after step 3; .*continue with --resume latest/);
    assert.match(first.stderr, /\[train\] clip step=1\/2 loss=[\d.]+ .*samples\/s=/);

    const second = easel(['train', '--config', run, '--out', join(dir, 'ckpt'), '--resume', 'latest']);
    assert.equal(second.status, 0, second.stderr);
    assert.match(second.stderr, /resuming .*global_step=3/);
    assert.match(second.stdout, /trained 6 steps; checkpoint .*step-000000006/);

    const ckpt = await readCheckpoint(join(dir, 'ckpt'));
    assert.equal(ckpt.manifest.stage, 'decoder');
    assert.equal(ckpt.manifest.stage_step, 2);
    assert.equal(ckpt.manifest.global_step, 6);
    assert.ok(ckpt.weights.has('ema.decoder.' + [...ckpt.weights.keys()].find((k) => k.startsWith('decoder.'))!.slice('decoder.'.length)));
    const folders = (await readdir(join(dir, 'ckpt'))).filter((f) => f.startsWith('step-'));
    assert.ok(folders.includes('step-000000006'));
  }));

test('easel train with a bad run file exits 2 and names the field', () =>
  withTempDir(async (dir) => {
    const run = join(dir, 'run.yaml');
    await writeFile(run, 'stages:\n  decoder:\n    steps: -3\n');
    const r = easel(['train', '--config', run]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /stages\.decoder\.steps: /);
    const missing = easel(['train']);
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /--config is required/);
  }));

test('easel train --resume <checkpoint url> continues from that step-… folder, into a fresh --out, bit-identical to the uninterrupted run', () =>
  withTempDir(async (dir) => {
    await writeTinyDataset(join(dir, 'data'));
    const run = join(dir, 'run.yaml');
    // everySteps 2 writes step 2, prior step 1 of 2: mid-stage, with its Adam state. keep 10 holds every checkpoint.
    const spec = tinyRun(join(dir, 'data'), join(dir, 'ignored'), { clip: 1, prior: 2, decoder: 1 });
    await writeFile(run, stringify({ ...spec, checkpoint: { ...spec.checkpoint, keep: 10 } }));
    const steps = async (out: string) => (await readdir(out)).filter((f) => f.startsWith('step-')).sort();

    const full = easel(['train', '--config', run, '--out', join(dir, 'full')]);
    assert.equal(full.status, 0, full.stderr);
    assert.deepEqual(await steps(join(dir, 'full')), ['step-000000001', 'step-000000002', 'step-000000003', 'step-000000004']);

    const from = pathToFileURL(join(dir, 'full', 'step-000000002')).href;
    const resumed = easel(['train', '--config', run, '--out', join(dir, 'resumed'), '--resume', from]);
    assert.equal(resumed.status, 0, resumed.stderr);
    assert.match(resumed.stderr, /resuming .*stage=prior step=1 global_step=2/);
    assert.match(resumed.stdout, /trained 4 steps; checkpoint .*step-000000004/);
    // Only the steps after the one resumed from ran: a run that started over would also write steps 1 and 2.
    assert.deepEqual(await steps(join(dir, 'resumed')), ['step-000000003', 'step-000000004']);

    const weights = (out: string) => readFile(join(dir, out, 'step-000000004', 'weights.safetensors'));
    assert.ok((await weights('resumed')).equals(await weights('full')), 'final weights.safetensors differ');
  }));
