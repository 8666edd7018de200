// generate, variations and eval on a tiny run with an upsampler stage (decoder at 8×8, upsampler to 16×16): before
// the upsampler has trained they draw at the decoder's size, after it at the upsampler's.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { drawSpec, renderImage } from '../../src/data/synth/index.ts';
import { train } from '../../src/trainer/train.ts';
import { Rng } from '../../src/util/rng.ts';
import { run as generate, sampleFlags } from '../../src/cli/generate.ts';
import { run as variations } from '../../src/cli/variations.ts';
import { run as evalCli } from '../../src/cli/eval.ts';
import { IMAGE_SIZE, tinyConfig, writeTinyEvalDataset } from '../trainer/fixtures.ts';

let dir: string;
let ckpt: string;
const STEPS = { clip: 2, prior: 2, decoder: 2, upsampler: 2 };

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'easel-upsampler-'));
  await writeTinyEvalDataset(join(dir, 'data'));
  ckpt = join(dir, 'ckpt');
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function sizes(out: string): Promise<number[]> {
  const files = (await readdir(out)).filter((f) => f !== 'grid.png');
  return Promise.all(files.map(async (f) => (await sharp(join(out, f)).metadata()).width!));
}

const draw = (out: string, extra: string[] = []) =>
  generate(['--checkpoint', ckpt, '--prompt', 'a red circle', '--n', '2', '--steps', '2', '--prior-steps', '2', '--upsampler-steps', '2', '--out', out, ...extra]);

test('generate draws at the decoder’s size until the upsampler has trained, then at the upsampler’s, deterministically', async () => {
  const early = await train(tinyConfig(join(dir, 'data'), ckpt, STEPS), { stopAtStep: 6 });
  early.dispose();
  assert.equal(await draw(join(dir, 'early')), 0);
  assert.deepEqual(await sizes(join(dir, 'early')), [IMAGE_SIZE / 2, IMAGE_SIZE / 2]);

  const rest = await train(tinyConfig(join(dir, 'data'), ckpt, STEPS), { resume: 'latest' });
  assert.equal(rest.finished, true);
  rest.dispose();
  for (const out of ['late-a', 'late-b']) assert.equal(await draw(join(dir, out), ['--seed', '5']), 0);
  assert.deepEqual(await sizes(join(dir, 'late-a')), [IMAGE_SIZE, IMAGE_SIZE]);
  const f = '00-a-red-circle-1.png';
  assert.deepEqual(await readFile(join(dir, 'late-a', f)), await readFile(join(dir, 'late-b', f)));
  // The upsampler's step count reaches the sampler: fewer steps, another image.
  assert.equal(await draw(join(dir, 'late-c'), ['--seed', '5', '--upsampler-steps', '1']), 0);
  assert.notDeepEqual(await readFile(join(dir, 'late-c', f)), await readFile(join(dir, 'late-a', f)));
  assert.deepEqual(sampleFlags({ 'upsampler-steps': '7' }), { upsamplerSteps: 7 });
});

test('variations and eval go through the upsampler too', async () => {
  const input = join(dir, 'input.png');
  await sharp(await renderImage(drawSpec(new Rng(1), { color: 'blue', shape: 'square' }, 40, 40), 'png')).toFile(input);
  assert.equal(await variations(['--checkpoint', ckpt, '--image', input, '--n', '2', '--steps', '2', '--upsampler-steps', '2', '--out', join(dir, 'var')]), 0);
  assert.deepEqual(await sizes(join(dir, 'var')), [IMAGE_SIZE, IMAGE_SIZE]);
  const out = join(dir, 'eval.json');
  assert.equal(await evalCli(['--checkpoint', ckpt, '--data', join(dir, 'data', 'eval'), '--out', out, '--generate', '2', '--steps', '2', '--prior-steps', '2', '--upsampler-steps', '2']), 0);
  const r = JSON.parse(await readFile(out, 'utf8'));
  assert.equal(r.config.upsamplerSteps, 2);
  assert.ok(r.decoder.color_accuracy >= 0 && r.decoder.color_accuracy <= 1, JSON.stringify(r.decoder));
  await assert.rejects(evalCli(['--checkpoint', ckpt, '--data', join(dir, 'data', 'eval'), '--upsampler-steps', '0']), /upsamplerSteps/);
});
