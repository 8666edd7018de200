// generate, variations and eval on a freshly trained tiny checkpoint (a couple of steps per stage): the files
// they write exist, decode with sharp and have the right size; eval.json has every field, each in range.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { openStore } from '../../src/data/store/index.ts';
import { drawSpec, renderImage } from '../../src/data/synth/index.ts';
import { writeShard } from '../../src/data/webdataset/index.ts';
import { train } from '../../src/trainer/train.ts';
import { Rng } from '../../src/util/rng.ts';
import { run as generate, sampleFlags } from '../../src/cli/generate.ts';
import { run as variations } from '../../src/cli/variations.ts';
import { run as evalCli } from '../../src/cli/eval.ts';
import { UsageError } from '../../src/cli/args.ts';
import { IMAGE_SIZE, tinyConfig, writeTinyEvalDataset } from '../trainer/fixtures.ts';

let dir: string;
let ckpt: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'easel-eval-'));
  await writeTinyEvalDataset(join(dir, 'data'));
  ckpt = join(dir, 'ckpt');
  const result = await train(tinyConfig(join(dir, 'data'), ckpt, { clip: 2, prior: 2, decoder: 2 }));
  result.dispose();
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function pngSize(path: string) {
  const m = await sharp(path).metadata();
  return { format: m.format, width: m.width, height: m.height };
}

test('easel generate writes n PNGs per prompt at the model size and one grid, from the run folder (latest checkpoint)', async () => {
  const out = join(dir, 'gen');
  const code = await generate(['--checkpoint', ckpt, '--prompt', 'a green triangle', '--prompt', 'a red circle on a white background', '--n', '2', '--rerank', '3', '--steps', '2', '--prior-steps', '2', '--out', out]);
  assert.equal(code, 0);
  const files = (await readdir(out)).sort();
  assert.equal(files.length, 5, files.join(', '));
  assert.ok(files.includes('grid.png'));
  for (const f of files.filter((f) => f !== 'grid.png')) assert.deepEqual(await pngSize(join(out, f)), { format: 'png', width: IMAGE_SIZE, height: IMAGE_SIZE });
  const grid = await pngSize(join(out, 'grid.png'));
  // 2 rows × 2 columns of images scaled to ≈ 128-pixel cells (8× at 16 px) with 2-pixel gaps.
  const scale = Math.round(128 / IMAGE_SIZE);
  assert.deepEqual(grid, { format: 'png', width: 2 * IMAGE_SIZE * scale + 3 * 2, height: 2 * IMAGE_SIZE * scale + 3 * 2 });
});

test('easel generate is deterministic for a seed', async () => {
  const a = join(dir, 'det-a');
  const b = join(dir, 'det-b');
  for (const out of [a, b]) assert.equal(await generate(['--checkpoint', ckpt, '--prompt', 'a blue square', '--n', '1', '--steps', '2', '--prior-steps', '2', '--seed', '7', '--out', out]), 0);
  const f = '00-a-blue-square-0.png';
  assert.deepEqual(await readFile(join(a, f)), await readFile(join(b, f)));
});

test('easel generate passes --guidance and --prior-guidance on to the sampling settings', () => {
  assert.deepEqual(sampleFlags({ guidance: '4.5', 'prior-guidance': '2', rerank: '6', n: '2' }), { guidance: 4.5, priorGuidance: 2, rerank: 6, n: 2 });
});

test('easel generate refuses rerank below n and a bad number, naming the field', async () => {
  await assert.rejects(generate(['--checkpoint', ckpt, '--prompt', 'x', '--n', 'four', '--out', join(dir, 'bad')]), (e: Error) => e instanceof UsageError && /n:/.test(e.message));
  await assert.rejects(generate(['--checkpoint', ckpt, '--prompt', 'a red circle', '--n', '4', '--rerank', '2', '--steps', '1', '--prior-steps', '1', '--out', join(dir, 'bad')]), /rerank/);
  await assert.rejects(generate(['--prompt', 'x', '--out', join(dir, 'bad')]), /--checkpoint is required/);
});

test('easel variations writes n PNGs of one input image and a grid', async () => {
  const rng = new Rng(1);
  const input = join(dir, 'input.png');
  await sharp(await renderImage(drawSpec(rng, { color: 'blue', shape: 'circle' }, 40, 40), 'png')).toFile(input);
  const out = join(dir, 'var');
  assert.equal(await variations(['--checkpoint', ckpt, '--image', input, '--n', '3', '--steps', '2', '--out', out]), 0);
  const files = (await readdir(out)).sort();
  assert.deepEqual(files, ['grid.png', 'variation-0.png', 'variation-1.png', 'variation-2.png']);
  assert.deepEqual(await pngSize(join(out, 'variation-1.png')), { format: 'png', width: IMAGE_SIZE, height: IMAGE_SIZE });
});

test('easel variations names a file that is not an image', async () => {
  const bogus = join(dir, 'input.txt');
  await import('node:fs/promises').then((fs) => fs.writeFile(bogus, 'not an image'));
  await assert.rejects(variations(['--checkpoint', ckpt, '--image', bogus, '--out', join(dir, 'var2')]), /not an image sharp can decode/);
});

test('easel eval writes eval.json with every figure, each in range', async () => {
  const out = join(dir, 'eval.json');
  assert.equal(await evalCli(['--checkpoint', ckpt, '--data', join(dir, 'data', 'eval'), '--out', out, '--generate', '4', '--steps', '2', '--prior-steps', '2', '--sampler', 'ddpm']), 0);
  const r = JSON.parse(await readFile(out, 'utf8'));
  assert.equal(r.config.sampler, 'ddpm');
  const inUnit = (x: unknown) => typeof x === 'number' && x >= 0 && x <= 1;
  const inCos = (x: unknown) => typeof x === 'number' && x >= -1 - 1e-6 && x <= 1 + 1e-6;
  assert.ok(inUnit(r.clip.retrieval_top1) && inUnit(r.clip.retrieval_top1_color_shape), JSON.stringify(r.clip));
  assert.ok(inCos(r.prior.cosine) && inCos(r.prior.text_baseline_cosine), JSON.stringify(r.prior));
  assert.ok(inUnit(r.decoder.color_accuracy) && inUnit(r.decoder.shape_accuracy), JSON.stringify(r.decoder));
  // The same scores for images decoded from the held-out images' own CLIP embeddings (no prior), over the same samples.
  const fromImage = r.decoder_from_image_embedding;
  assert.ok(inUnit(fromImage.color_accuracy) && inUnit(fromImage.shape_accuracy) && inUnit(fromImage.blank), JSON.stringify(fromImage));
  assert.deepEqual(Object.keys(fromImage.by_pair), Object.keys(r.decoder.by_pair));
  for (const [pair, v] of Object.entries(fromImage.by_pair) as [string, { n: number }][]) assert.equal(v.n, r.decoder.by_pair[pair].n, pair);
  assert.deepEqual(r.counts, { retrieval: 6, prior: 6, decoder: 4 });
  assert.equal(r.decoder_reranked, undefined, 'scored only when asked for');
});

test('easel eval --rerank K also scores the best of K candidates per caption, over the same captions', async () => {
  const out = join(dir, 'eval-rerank.json');
  assert.equal(await evalCli(['--checkpoint', ckpt, '--data', join(dir, 'data', 'eval'), '--out', out, '--generate', '3', '--steps', '2', '--prior-steps', '2', '--rerank', '3']), 0);
  const r = JSON.parse(await readFile(out, 'utf8'));
  assert.equal(r.config.rerank, 3);
  const rr = r.decoder_reranked;
  assert.ok([rr.color_accuracy, rr.shape_accuracy, rr.blank].every((x: number) => x >= 0 && x <= 1), JSON.stringify(rr));
  assert.deepEqual(Object.keys(rr.by_pair), Object.keys(r.decoder.by_pair));
  for (const [pair, v] of Object.entries(rr.by_pair) as [string, { n: number }][]) assert.equal(v.n, r.decoder.by_pair[pair].n, pair);
  await assert.rejects(evalCli(['--checkpoint', ckpt, '--data', join(dir, 'data', 'eval'), '--rerank', '-1']), /rerank/);
});

test('easel eval refuses an unknown sampler, naming the field', async () => {
  await assert.rejects(evalCli(['--checkpoint', ckpt, '--data', join(dir, 'data', 'eval'), '--sampler', 'euler']), /sampler/);
});

test('easel eval names a data URL without the synthetic ground truth', async () => {
  await assert.rejects(evalCli(['--checkpoint', ckpt, '--data', join(dir, 'nothing-here')]), /no shards/);
});

test('easel eval on shards without synthetic ground truth scores retrieval against each caption’s own image, the prior and CLIP scores, and no colour or shape', async () => {
  // Real-world shards: img2dataset-style .json without "synth", captions that are not the synthetic vocabulary's.
  const store = await openStore(join(dir, 'real'));
  const rng = new Rng(2);
  const samples = await Promise.all(
    (['red', 'blue', 'green', 'yellow'] as const).map(async (color, i) => ({
      key: String(i).padStart(9, '0'),
      image: { ext: 'png', bytes: await renderImage(drawSpec(rng, { color, shape: 'circle' }, 24, 24), 'png') },
      caption: Buffer.from(`photo number ${i} of something ${color}`),
      json: Buffer.from(JSON.stringify({ url: `https://example.com/${i}.png`, status: 'success' })),
      extra: {},
    })),
  );
  await writeShard(store, '00000.tar', samples);
  await store.close();
  const out = join(dir, 'eval-real.json');
  assert.equal(await evalCli(['--checkpoint', ckpt, '--data', join(dir, 'real'), '--out', out, '--generate', '3', '--steps', '2', '--prior-steps', '2', '--rerank', '2']), 0);
  const r = JSON.parse(await readFile(out, 'utf8'));
  assert.ok(r.clip.retrieval_top1 >= 0 && r.clip.retrieval_top1 <= 1);
  // Four images: each caption's top 5 holds all of them, its own included.
  assert.equal(r.clip.retrieval_top5, 1);
  assert.equal(r.clip.retrieval_top1_color_shape, undefined);
  for (const d of [r.decoder, r.decoder_from_image_embedding, r.decoder_reranked]) {
    assert.deepEqual(Object.keys(d), ['clip_score', 'real_clip_score'], JSON.stringify(d));
    assert.ok(Math.abs(d.clip_score) <= 1 + 1e-6 && Math.abs(d.real_clip_score) <= 1 + 1e-6, JSON.stringify(d));
  }
  assert.deepEqual(r.counts, { retrieval: 4, prior: 4, decoder: 3 });
});

test('eval retrieval: on real captions only the caption’s own image is a hit; on synthetic ones any image showing what it names', async () => {
  const { loadCheckpoint } = await import('../../src/trainer/models.ts');
  const { evaluate, readEvalSamples } = await import('../../src/eval/evaluate.ts');
  const loaded = await loadCheckpoint(ckpt);
  try {
    // The same sample twice: both captions retrieve the first image (a tie goes to the lower index).
    const [one] = await readEvalSamples(join(dir, 'data', 'eval'), IMAGE_SIZE, 1);
    const settings = { generate: 1, steps: 1, priorSteps: 1 };
    const synthetic = await evaluate(loaded.models, [one, one], settings);
    assert.equal(synthetic.clip.retrieval_top1, 1);
    const real = await evaluate(loaded.models, [one, one].map((s) => ({ ...s, truth: undefined })), settings);
    assert.equal(real.clip.retrieval_top1, 0.5);
    // The CLIP score of the real images is the same figure whichever embedding the decoder drew from.
    assert.equal(real.decoder.real_clip_score, real.decoder_from_image_embedding.real_clip_score);
    assert.ok(typeof synthetic.decoder.clip_score === 'number' && typeof synthetic.decoder.color_accuracy === 'number');
  } finally {
    loaded.dispose();
  }
});
