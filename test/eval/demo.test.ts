// `easel demo --smoke` end to end on a tiny run file: every stage runs and leaves its output under --out.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { stringify } from 'yaml';
import { DEMO_CONFIG, run as demo } from '../../src/cli/demo.ts';
import { loadRunConfig } from '../../src/trainer/config.ts';
import { tinyRun, withTempDir } from '../trainer/fixtures.ts';

test('examples/demo.yaml is a valid run file', async () => {
  const c = await loadRunConfig(DEMO_CONFIG);
  assert.equal(c.data.imageSize, c.stages.clip.model.imageSize);
  assert.equal(c.data.imageSize % c.stages.decoder.model.imageSize, 0);
});

test('easel demo --smoke writes the dataset, filtered shards, checkpoints, a grid and eval.json under --out (default ./demo-out)', async () => {
  await withTempDir(async (dir) => {
    const runFile = join(dir, 'tiny.yaml');
    // The fixtures' tiny models, an upsampler included; data and checkpoint URLs are the demo's to set.
    await writeFile(runFile, stringify(tinyRun('unused', 'unused', { clip: 3, prior: 3, decoder: 3, upsampler: 3 })));
    const out = join(dir, 'demo-out');
    assert.equal(await demo(['--smoke', '--config', runFile, '--out', out]), 0);
    const entries = (await readdir(out)).sort();
    assert.deepEqual(entries, ['checkpoints', 'data', 'demo.json', 'eval.json', 'samples', 'synth']);
    assert.ok((await readdir(join(out, 'synth', 'eval'))).some((f) => f.endsWith('.tar')));
    assert.ok((await readdir(join(out, 'data', 'train'))).some((f) => f.endsWith('.tar')));
    // --smoke trains every stage the run file trains, the upsampler too.
    assert.equal(JSON.parse(await readFile(join(out, 'checkpoints', 'latest.json'), 'utf8')).stage, 'upsampler');
    const grid = await sharp(join(out, 'samples', 'grid.png')).metadata();
    assert.equal(grid.format, 'png');
    const r = JSON.parse(await readFile(join(out, 'eval.json'), 'utf8'));
    for (const x of [r.clip.retrieval_top1, r.decoder.color_accuracy, r.decoder.shape_accuracy]) assert.ok(x >= 0 && x <= 1);
    assert.equal(typeof r.prior.cosine, 'number');
    assert.equal(typeof r.prior.text_baseline_cosine, 'number');
    // A second run without --out, started in <dir>, writes ./demo-out: the same folder, whose first run it replaces.
    await rm(join(out, 'eval.json'));
    const cwd = process.cwd();
    process.chdir(dir);
    try {
      assert.equal(await demo(['--smoke', '--config', runFile]), 0);
    } finally {
      process.chdir(cwd);
    }
    assert.deepEqual((await readdir(out)).sort(), entries);
    assert.equal(typeof JSON.parse(await readFile(join(out, 'eval.json'), 'utf8')).prior.cosine, 'number');
  });
});

test('easel demo refuses an --out folder holding files it did not write', async () => {
  await withTempDir(async (dir) => {
    await mkdir(join(dir, 'mine'));
    await writeFile(join(dir, 'mine', 'thesis.tex'), 'precious');
    await assert.rejects(demo(['--smoke', '--out', join(dir, 'mine')]), /holds files the demo did not write/);
    assert.equal(await readFile(join(dir, 'mine', 'thesis.tex'), 'utf8'), 'precious');
  });
});
