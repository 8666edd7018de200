import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/model/backend.ts';
import { corruptLowRes, Decoder, DecoderConfig, snrLossWeight, upsampleNearest } from '../../src/model/unet.ts';
import { tokenize } from '../../src/model/tokenizer.ts';
import { alphaBar, makeSchedule, qSample, vFromX0Eps } from '../../src/model/diffusion.ts';
import { checkParamGradients } from '../helpers/gradients.ts';

before(async () => {
  await initBackend();
});

/** A decoder small enough to train for a few steps in a test. */
const TINY: Partial<DecoderConfig> = {
  imageSize: 16,
  channels: 8,
  channelMults: [1, 2],
  groups: 4,
  attentionHeads: 2,
  embedDim: 8,
  contextDim: 8,
  contextLength: 8,
  textHeads: 2,
};

const dispose = (d: Decoder) => tf.dispose([...d.params().values()]);
const maxAbsDiff = (a: tf.Tensor, b: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);

/** Zero-initialised output layers make a fresh UNet predict 0 for everything; give every weight some signal. */
function randomize(d: Decoder, seed: number): void {
  let i = 0;
  for (const v of d.params().values()) v.assign(tf.tidy(() => tf.add(v, tf.randomNormal(v.shape, 0, 0.2, 'float32', seed + i++))));
}

/** Four 16×16 images: a red, green, blue or yellow square on white. Embedding = one-hot of the colour. */
function colouredSquares() {
  const colours = [[1, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, -1]];
  const pixels = new Float32Array(4 * 16 * 16 * 3).fill(1);
  for (let b = 0; b < 4; b++) {
    for (let y = 3; y < 13; y++) for (let x = 3; x < 13; x++) for (let c = 0; c < 3; c++) pixels[((b * 16 + y) * 16 + x) * 3 + c] = colours[b][c];
  }
  const emb = new Float32Array(4 * 8);
  for (let b = 0; b < 4; b++) emb[b * 8 + b] = 1;
  return {
    images: tf.tensor4d(pixels, [4, 16, 16, 3]),
    imageEmb: tf.tensor2d(emb, [4, 8]),
    tokens: tokenize(['red', 'green', 'blue', 'yellow'], 8),
  };
}

test('2× nearest upsampling repeats every pixel, and its gradient sums the four copies, for batch > 1', () => {
  tf.tidy(() => {
    const x = tf.tensor4d(Float32Array.from({ length: 2 * 2 * 3 * 2 }, (_, i) => i), [2, 2, 3, 2]);
    const up = upsampleNearest(x);
    assert.deepEqual(up.shape, [2, 4, 6, 2]);
    const u = up.arraySync() as number[][][][];
    const v = x.arraySync() as number[][][][];
    for (let b = 0; b < 2; b++) for (let y = 0; y < 4; y++) for (let xx = 0; xx < 6; xx++) assert.deepEqual(u[b][y][xx], v[b][y >> 1][xx >> 1]);
    const weights = tf.randomNormal([2, 4, 6, 2], 0, 1, 'float32', 1);
    const grad = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(upsampleNearest(t as tf.Tensor4D), weights)))(x);
    // d/dx of Σ w·up(x): each input pixel collects the weights of its 2×2 block.
    const expected = tf.tidy(() => {
      const w = weights.arraySync() as number[][][][];
      const out = new Float32Array(2 * 2 * 3 * 2);
      for (let b = 0; b < 2; b++) for (let y = 0; y < 4; y++) for (let xx = 0; xx < 6; xx++) for (let c = 0; c < 2; c++) out[((b * 2 + (y >> 1)) * 3 + (xx >> 1)) * 2 + c] += w[b][y][xx][c];
      return tf.tensor4d(out, [2, 2, 3, 2]);
    });
    assert.ok(maxAbsDiff(grad, expected) < 1e-5);
  });
});

test('config errors name the field: channels not divisible by groups, image size not divisible by the levels', () => {
  assert.throws(() => new Decoder({ ...TINY, groups: 3 }, 1), /not divisible by 3 groups \(decoder config 'groups'\)/);
  assert.throws(() => new Decoder({ ...TINY, imageSize: 18, channelMults: [1, 2, 2] }, 1), /imageSize 18 is not divisible by 2\^2/);
  assert.throws(() => DecoderConfig.parse({ captionDrop: 2 }), /captionDrop/);
});

test('parameter names are ordered and stable; the same seed gives the same weights, another seed others', () => {
  const a = new Decoder(TINY, 7);
  const b = new Decoder(TINY, 7);
  const c = new Decoder(TINY, 8);
  const names = [...a.params().keys()];
  assert.deepEqual([...b.params().keys()], names);
  assert.equal(names[0], 'time.in.w');
  assert.ok(names.includes('down.1.0.attn.qkv.w') && names.includes('mid.attn.contextKv.w') && names.includes('up.0.1.res.conv2.w'));
  assert.equal(names.at(-1), 'out.conv.b');
  for (const name of names) {
    assert.deepEqual(a.params().get(name)!.dataSync(), b.params().get(name)!.dataSync(), name);
  }
  assert.notDeepEqual(a.params().get('down.0.0.res.conv1.w')!.dataSync(), c.params().get('down.0.0.res.conv1.w')!.dataSync());
  // Without caption context there are no text parameters, and nothing else moves.
  const noText = new Decoder({ ...TINY, captionContext: false }, 7);
  assert.ok(![...noText.params().keys()].some((n) => n.startsWith('text.')));
  [a, b, c, noText].forEach(dispose);
});

test('the predicted noise has the image’s shape, and the CLIP embedding and the caption both change it', () => {
  const d = new Decoder(TINY, 3);
  randomize(d, 100);
  tf.tidy(() => {
    const { images, imageEmb, tokens } = colouredSquares();
    const t = [10, 400, 700, 999];
    const base = d.predict(images, t, { imageEmb, tokens });
    assert.deepEqual(base.shape, [4, 16, 16, 3]);
    const zeroEmb = d.predict(images, t, { imageEmb: tf.zerosLike(imageEmb), tokens });
    const otherCaption = d.predict(images, t, { imageEmb, tokens: tokenize(['a', 'b', 'c', 'd'], 8) });
    const noCaption = d.predict(images, t, { imageEmb });
    assert.ok(maxAbsDiff(base, zeroEmb) > 1e-3, 'CLIP embedding ignored');
    assert.ok(maxAbsDiff(base, otherCaption) > 1e-3, 'caption ignored');
    assert.ok(maxAbsDiff(base, noCaption) > 1e-3, 'dropping the caption changed nothing');
    // The timestep matters too.
    assert.ok(maxAbsDiff(base, d.predict(images, [999, 10, 400, 700], { imageEmb, tokens })) > 1e-3);
  });
  dispose(d);
});

test('caption padding is masked out of attention: more padding after a caption changes no prediction, and the CLIP tokens stay attended', () => {
  // The same weights at context length 8 and 16: the longer decoder's extra positions are only ever padding.
  const short = new Decoder(TINY, 8);
  const long = new Decoder({ ...TINY, contextLength: 16 }, 8);
  randomize(short, 500);
  randomize(long, 600);
  for (const [name, v] of short.params()) {
    const w = long.params().get(name)!;
    if (name === 'text.null') continue; // [contextLength, C]: only used for dropped captions, which predict() never drops
    if (name === 'text.pos.table') w.assign(tf.tidy(() => tf.concat([v, tf.slice(w, [8, 0], [8, TINY.contextDim!])], 0)));
    else w.assign(v);
  }
  tf.tidy(() => {
    const { images, imageEmb } = colouredSquares();
    // 'yellow' fills the 8-token context exactly (BOS, 6 bytes, EOS); the others are followed by padding.
    const captions = ['red', 'green', 'blue', 'yellow'];
    const t = [10, 400, 700, 999];
    const a = short.predict(images, t, { imageEmb, tokens: tokenize(captions, 8) });
    const b = long.predict(images, t, { imageEmb, tokens: tokenize(captions, 16) });
    assert.ok(maxAbsDiff(a, b) < 1e-5, `8 more padding tokens changed the prediction by ${maxAbsDiff(a, b)}`);
    // The caption itself still matters.
    assert.ok(maxAbsDiff(a, short.predict(images, t, { imageEmb, tokens: tokenize(['gray', 'pink', 'cyan', 'violet'], 8) })) > 1e-3);
    // With the CLIP embedding's additive path zeroed, it reaches the UNet only through its context tokens.
    for (const name of ['clip.emb.w', 'clip.emb.b']) short.params().get(name)!.assign(tf.zerosLike(short.params().get(name)!));
    const viaTokens = short.predict(images, t, { imageEmb, tokens: tokenize(captions, 8) });
    const otherEmb = short.predict(images, t, { imageEmb: tf.reverse(imageEmb, 0) as tf.Tensor2D, tokens: tokenize(captions, 8) });
    assert.ok(maxAbsDiff(viaTokens, otherEmb) > 1e-3, 'CLIP context tokens not attended');
  });
  [short, long].forEach(dispose);
});

test('conditioning dropout masks follow the seed and drop about 10% of CLIP embeddings and 50% of captions', () => {
  const d = new Decoder(TINY, 1);
  const a = d.trainingMasks(2000, 5);
  assert.deepEqual(a, d.trainingMasks(2000, 5));
  assert.notDeepEqual(a.keepImage, d.trainingMasks(2000, 6).keepImage);
  const dropped = (m: Float32Array) => m.reduce((n, v) => n + (v === 0 ? 1 : 0), 0) / m.length;
  assert.ok(Math.abs(dropped(a.keepImage) - 0.1) < 0.03, `image drop ${dropped(a.keepImage)}`);
  assert.ok(Math.abs(dropped(a.keepCaption) - 0.5) < 0.05, `caption drop ${dropped(a.keepCaption)}`);
  assert.ok(a.t.every((t) => t >= 0 && t < 1000));
  dispose(d);
});

test('the loss is a finite scalar, the same for the same seed; bad shapes, samplers and step counts are refused', () => {
  const d = new Decoder(TINY, 1);
  tf.tidy(() => {
    const batch = colouredSquares();
    const l1 = d.loss(batch, 11);
    assert.equal(l1.rank, 0);
    assert.ok(Number.isFinite(l1.dataSync()[0]));
    assert.equal(d.loss(batch, 11).dataSync()[0], l1.dataSync()[0]);
    assert.notEqual(d.loss(batch, 12).dataSync()[0], l1.dataSync()[0]);
    assert.throws(() => d.loss({ ...batch, images: tf.zeros([4, 8, 8, 3]) as tf.Tensor4D }, 1), /expected \[B, 16, 16, 3\] \(config imageSize\)/);
    assert.throws(() => d.loss({ ...batch, imageEmb: tf.zeros([4, 5]) as tf.Tensor2D }, 1), /width 5, config embedDim is 8/);
    assert.throws(() => d.sample(batch, { steps: 2, guidance: 1, seed: 1, sampler: 'euler' as 'ddim' }), /unknown sampler 'euler'/);
    assert.throws(() => d.sample(batch, { steps: 1001, guidance: 1, seed: 1, sampler: 'ddim' }), /sampling steps must be an integer in 1…1000/);
  });
  dispose(d);
});

const TARGETS = { eps: 'the noise ε', v: 'v = √ᾱ·ε − √(1−ᾱ)·x0', x0: 'the clean image' } as const;
for (const objective of ['eps', 'v', 'x0'] as const) {
  test(`objective ${objective}: the loss regresses the UNet's output on ${TARGETS[objective]}, and x0FromPrediction inverts it`, () => {
    // No conditioning dropout, so loss() sees the same UNet output as predict().
    const d = new Decoder({ ...TINY, objective, imageEmbDrop: 0, captionDrop: 0 }, 5);
    randomize(d, 300);
    tf.tidy(() => {
      const batch = colouredSquares();
      const { t, noiseSeed } = d.trainingMasks(4, 21);
      const noise = tf.randomNormal(batch.images.shape, 0, 1, 'float32', noiseSeed);
      const abar = Array.from(t, (ti) => alphaBar(makeSchedule('cosine', 1000), ti));
      const xt = qSample(batch.images, noise, abar) as tf.Tensor4D;
      const target = objective === 'v' ? vFromX0Eps(batch.images, noise, abar) : objective === 'x0' ? batch.images : noise;
      const pred = d.predict(xt, t, batch);
      const byHand = tf.mean(tf.square(tf.sub(pred, target))).dataSync()[0];
      assert.ok(Math.abs(d.loss(batch, 21).dataSync()[0] - byHand) < 1e-5 * byHand);
      // A perfect prediction gives back the clean images.
      assert.ok(maxAbsDiff(d.x0FromPrediction(xt, target as tf.Tensor4D, abar), batch.images) < 1e-3);
    });
    dispose(d);
  });
}

test('snrLossWeight: x0-error weight max(min(SNR, γ), floor), divided by what the objective’s own MSE already weights', () => {
  // x0 objective: the weight is the x0 weight itself.
  assert.deepEqual([0.1, 3, 10].map((s) => snrLossWeight(s, 'x0', 5)), [0.1, 3, 5]);
  assert.deepEqual([0.1, 3, 10].map((s) => snrLossWeight(s, 'x0', 5, 1)), [1, 3, 5], 'the floor lifts only the high-noise steps');
  // v's MSE weights the x0 error by SNR + 1, ε's by SNR.
  assert.ok(Math.abs(snrLossWeight(0.1, 'v', 5, 1) - 1 / 1.1) < 1e-12);
  assert.ok(Math.abs(snrLossWeight(10, 'eps', 5) - 0.5) < 1e-12);
  assert.equal(snrLossWeight(3, 'eps', 5), 1);
});

test('a floor without Min-SNR, or with the ε objective (unbounded weights), is refused by the decoder config', () => {
  assert.throws(() => new Decoder({ ...TINY, snrWeightFloor: 1 }, 1), /set minSnrGamma > 0/);
  assert.throws(() => new Decoder({ ...TINY, objective: 'eps', minSnrGamma: 5, snrWeightFloor: 1 }, 1), /objective x0 or v/);
});

test('min-SNR-γ weighting: for every objective the loss is the mean of each example’s x0 error × max(min(SNR, γ), floor)', () => {
  for (const [objective, floor] of [['eps', 0], ['v', 0], ['x0', 0], ['v', 1], ['x0', 1]] as const) {
    const d = new Decoder({ ...TINY, objective, imageEmbDrop: 0, captionDrop: 0, minSnrGamma: 5, snrWeightFloor: floor }, 5);
    randomize(d, 300);
    tf.tidy(() => {
      const batch = colouredSquares();
      const seed = 23;
      const { t, noiseSeed } = d.trainingMasks(4, seed);
      const abar = Array.from(t, (ti) => alphaBar(makeSchedule('cosine', 1000), ti));
      const snr = abar.map((a) => a / (1 - a));
      // The draw covers both sides of γ, so both the clamp and the pass-through are exercised.
      assert.ok(snr.some((s) => s > 5) && snr.some((s) => s < 5), `SNRs ${snr}`);
      if (floor > 0) assert.ok(snr.some((s) => s < floor), `no SNR below the floor: ${snr}`);
      const noise = tf.randomNormal(batch.images.shape, 0, 1, 'float32', noiseSeed);
      const xt = qSample(batch.images, noise, abar) as tf.Tensor4D;
      const x0 = d.x0FromPrediction(xt, d.predict(xt, t, batch), abar);
      const x0Err = tf.mean(tf.square(tf.sub(x0, batch.images)), [1, 2, 3]).dataSync();
      const byHand = snr.reduce((sum, s, i) => sum + Math.max(Math.min(s, 5), floor) * x0Err[i], 0) / 4;
      const loss = d.loss(batch, seed).dataSync()[0];
      assert.ok(Math.abs(loss - byHand) < 2e-3 * byHand, `${objective}, floor ${floor}: loss ${loss}, by hand ${byHand}`);
    });
    dispose(d);
  }
});

test('a tiny decoder trained on coloured squares reduces its loss clearly, with no tensor leaks', () => {
  // ε's loss: its scale (1 at init) makes "clearly" one threshold; the v objective is checked by the demo's eval.
  const d = new Decoder({ ...TINY, objective: 'eps' }, 2);
  const batch = colouredSquares();
  const vars = [...d.params().values()];
  // Loss averaged over fixed seeds (timesteps and noise), so before/after compare like with like.
  const evalLoss = () => tf.tidy(() => [0, 1, 2, 3, 4, 5].reduce((s, k) => s + d.loss(batch, 1000 + k).dataSync()[0], 0) / 6);
  const before = evalLoss();
  const opt = tf.train.adam(3e-3);
  const counts: number[] = [];
  for (let step = 0; step < 25; step++) {
    opt.minimize(() => d.loss(batch, step), false, vars)?.dispose();
    counts.push(tf.memory().numTensors);
  }
  const after = evalLoss();
  assert.ok(after < 0.6 * before, `loss ${before.toFixed(3)} → ${after.toFixed(3)}`);
  assert.equal(new Set(counts.slice(1)).size, 1, `numTensors drifted: ${counts.join(',')}`);
  opt.dispose();
  tf.dispose(Object.values(batch));
  dispose(d);
});

for (const sampler of ['ddpm', 'ddim'] as const) {
  test(`${sampler} sampling: images in [-1,1] of the configured size, bit-reproducible for a seed, no tensor leaks`, () => {
    const d = new Decoder(TINY, 4);
    randomize(d, 200);
    const { images, imageEmb, tokens } = colouredSquares();
    const opts = { steps: 4, guidance: 3, seed: 9, sampler };
    const before = tf.memory().numTensors;
    const a = d.sample({ imageEmb, tokens }, opts);
    assert.equal(tf.memory().numTensors, before + 1, 'sampling leaked tensors');
    const b = d.sample({ imageEmb, tokens }, opts);
    const c = d.sample({ imageEmb, tokens }, { ...opts, seed: 10 });
    assert.deepEqual(a.shape, [4, 16, 16, 3]);
    const values = a.dataSync();
    assert.ok(values.every((v) => v >= -1 && v <= 1));
    assert.deepEqual(values, b.dataSync());
    assert.notDeepEqual(values, c.dataSync());
    tf.dispose([a, b, c, images, imageEmb, tokens]);
    dispose(d);
  });
}

test('guidance 0 is the unconditional model: the CLIP embedding and caption no longer matter', () => {
  const d = new Decoder(TINY, 5);
  randomize(d, 300);
  tf.tidy(() => {
    const { imageEmb, tokens } = colouredSquares();
    const opts = { steps: 3, seed: 4, sampler: 'ddim' as const };
    const uncondA = d.sample({ imageEmb, tokens }, { ...opts, guidance: 0 });
    const uncondB = d.sample({ imageEmb: tf.reverse(imageEmb, 0) as tf.Tensor2D }, { ...opts, guidance: 0 });
    assert.ok(maxAbsDiff(uncondA, uncondB) < 1e-5);
    const condA = d.sample({ imageEmb, tokens }, { ...opts, guidance: 1 });
    const guided = d.sample({ imageEmb, tokens }, { ...opts, guidance: 3 });
    assert.ok(maxAbsDiff(condA, uncondA) > 1e-3 && maxAbsDiff(guided, condA) > 1e-3);
  });
  dispose(d);
});

/**
 * Finite-difference check of d loss / d param for the largest-gradient element of each named parameter. The loss
 * is deterministic for a fixed seed, so central differences apply; float32 limits the agreement to a few percent.
 */

test('UNet gradients match finite differences (GroupNorm, strided conv, upsampling, attention over context, text encoder)', () => {
  const d = new Decoder({ ...TINY, imageEmbDrop: 0, captionDrop: 0 }, 6);
  randomize(d, 400);
  const batch = colouredSquares();
  checkParamGradients(d.params(), () => d.loss(batch, 3), [
    'in.w',
    'down.0.0.res.norm1.g',
    'down.0.downsample.w',
    'down.1.0.attn.qkv.w',
    'mid.attn.contextKv.w',
    'up.1.upsample.w',
    'up.0.1.res.conv2.w',
    'clip.tokens.w',
    'text.tokens.table',
    'text.blocks.0.mlp.fc.w',
    'out.conv.w',
  ]);
  tf.dispose(Object.values(batch));
  dispose(d);
});

test('scaleShiftNorm: each block’s embedding projection gives a scale and a shift per channel, and the CLIP embedding changes the prediction', () => {
  const plain = new Decoder(TINY, 3);
  const d = new Decoder({ ...TINY, scaleShiftNorm: true }, 3);
  const shapes = (m: Decoder) => new Map([...m.params()].map(([k, v]) => [k, v.shape]));
  // Same parameter names; only the embedding projections double their output width.
  assert.deepEqual([...shapes(d).keys()], [...shapes(plain).keys()]);
  for (const [name, shape] of shapes(d)) {
    const before = shapes(plain).get(name)!;
    if (/res\d?\.emb\.(w|b)$/.test(name)) assert.equal(shape.at(-1), 2 * before.at(-1)!, name);
    else assert.deepEqual(shape, before, name);
  }
  randomize(d, 100);
  tf.tidy(() => {
    const { images, imageEmb, tokens } = colouredSquares();
    const t = [10, 400, 700, 999];
    const base = d.predict(images, t, { imageEmb, tokens });
    assert.ok(maxAbsDiff(base, d.predict(images, t, { imageEmb: tf.zerosLike(imageEmb), tokens })) > 1e-3, 'CLIP embedding ignored');
  });
  dispose(plain);
  dispose(d);
});

test('scaleShiftNorm gradients match finite differences', () => {
  const d = new Decoder({ ...TINY, scaleShiftNorm: true, imageEmbDrop: 0, captionDrop: 0 }, 6);
  randomize(d, 400);
  const batch = colouredSquares();
  checkParamGradients(d.params(), () => d.loss(batch, 3), ['down.0.0.res.emb.w', 'mid.res1.emb.b', 'up.0.1.res.norm2.g', 'clip.emb.w', 'out.conv.w']);
  tf.dispose(Object.values(batch));
  dispose(d);
});

test('by default the decoder attends to 4 CLIP tokens projected from the image embedding, ahead of the caption', () => {
  const d = new Decoder({}, 1);
  const { clipTokens, contextLength, contextDim, embedDim } = d.config;
  assert.equal(clipTokens, 4);
  assert.equal(DecoderConfig.parse({}).clipTokens, 4);
  // The context is assembled privately (once per batch, for every attention layer); reach in to see its shape.
  type Conditioning = { context?: tf.Tensor3D; contextMask?: tf.Tensor2D };
  const condition = (d as unknown as { condition(e: tf.Tensor2D, t: tf.Tensor2D | undefined, k: Float32Array, c: Float32Array): Conditioning }).condition.bind(d);
  tf.tidy(() => {
    const keep = new Float32Array(2).fill(1);
    const context = (imageEmb: tf.Tensor2D, tokens?: tf.Tensor2D) => condition(imageEmb, tokens, keep, keep);
    const a = context(tf.randomNormal([2, embedDim], 0, 1, 'float32', 1) as tf.Tensor2D);
    const b = context(tf.randomNormal([2, embedDim], 0, 1, 'float32', 2) as tf.Tensor2D);
    assert.deepEqual(a.context!.shape, [2, 4 + contextLength, contextDim]);
    // Exactly the first 4 tokens come from the CLIP embedding; the rest (here the null caption) do not.
    const changed = (tf.max(tf.abs(tf.sub(a.context!, b.context!)), [0, 2]).arraySync() as number[]).map((x) => x > 0);
    assert.deepEqual(changed, [...new Array(4).fill(true), ...new Array(contextLength).fill(false)]);
    // With a caption, the attention mask covers the 4 CLIP tokens too, and always attends to them.
    const withCaption = context(tf.randomNormal([2, embedDim], 0, 1, 'float32', 1) as tf.Tensor2D, tokenize(['a red circle', 'a blue square'], contextLength));
    assert.deepEqual(withCaption.contextMask!.shape, [2, 4 + contextLength]);
    assert.deepEqual(tf.slice(withCaption.contextMask!, [0, 0], [2, 4]).arraySync(), [[1, 1, 1, 1], [1, 1, 1, 1]]);
  });
  dispose(d);
});

test('k× nearest upsampling repeats every pixel k × k times', () => {
  tf.tidy(() => {
    const x = tf.tensor4d(Float32Array.from({ length: 2 * 2 * 3 * 2 }, (_, i) => i), [2, 2, 3, 2]);
    const u = upsampleNearest(x, 4).arraySync() as number[][][][];
    const v = x.arraySync() as number[][][][];
    assert.equal(u[0].length, 8);
    for (let b = 0; b < 2; b++) for (let y = 0; y < 8; y++) for (let xx = 0; xx < 12; xx++) assert.deepEqual(u[b][y][xx], v[b][y >> 2][xx >> 2]);
    assert.equal(upsampleNearest(x, 1), x);
  });
});

/** An upsampler from 8×8 to TINY's 16×16. */
const UPSAMPLER: Partial<DecoderConfig> = { ...TINY, lowResSize: 8, clipTokens: 0, captionContext: false };

test('an upsampler sees the low-res image: it changes the prediction, and a missing or misshapen one is refused naming lowResSize', () => {
  const u = new Decoder(UPSAMPLER, 7);
  randomize(u, 500);
  const base = new Decoder(TINY, 7);
  tf.tidy(() => {
    const { images, imageEmb } = colouredSquares();
    const lowRes = tf.avgPool(images, 2, 2, 'valid') as tf.Tensor4D;
    const x = tf.randomNormal([4, 16, 16, 3], 0, 1, 'float32', 1) as tf.Tensor4D;
    const t = [500, 500, 500, 500];
    const a = u.predict(x, t, { imageEmb, lowRes });
    assert.deepEqual(a.shape, [4, 16, 16, 3]);
    const b = u.predict(x, t, { imageEmb, lowRes: tf.reverse(lowRes, 0) as tf.Tensor4D });
    assert.ok(maxAbsDiff(a, b) > 1e-3, 'the low-res image must change the prediction');
    assert.throws(() => u.predict(x, t, { imageEmb }), /upsampler needs a low-resolution image of shape \[4,8,8,3\] \(config lowResSize\), got none/);
    assert.throws(() => u.predict(x, t, { imageEmb, lowRes: images }), /\[4,8,8,3\].*got \[4,16,16,3\]/);
    assert.throws(() => base.predict(x, t, { imageEmb, lowRes }), /a base decoder \(lowResSize 0\) takes no low-resolution image/);
    assert.throws(() => DecoderConfig.parse({ imageSize: 16, lowResSize: 6 }), /lowResSize[\s\S]*must be below imageSize \(16\) and divide it, got 6/);
  });
  dispose(u);
  dispose(base);
});

test('noise-conditioning augmentation: each example gets noise of its own level, drawn from the training seed', () => {
  tf.tidy(() => {
    const lowRes = tf.zeros([3, 8, 8, 3]) as tf.Tensor4D;
    const noisy = corruptLowRes(lowRes, Float32Array.from([0, 0.1, 0.4]), 9);
    const std = tf.sqrt(tf.moments(noisy, [1, 2, 3]).variance).dataSync();
    assert.equal(std[0], 0);
    assert.ok(Math.abs(std[1] - 0.1) < 0.02 && Math.abs(std[2] - 0.4) < 0.08, `noise std per example: ${std}`);
  });
  const u = new Decoder({ ...UPSAMPLER, lowResNoise: 0.5 }, 7);
  const draws = u.trainingMasks(64, 3);
  assert.ok(draws.lowResSigma!.every((s) => s >= 0 && s <= 0.5) && Math.max(...draws.lowResSigma!) > 0.4);
  assert.deepEqual(u.trainingMasks(64, 3), draws);
  // A base decoder's draws are what they were before upsamplers existed: no low-res draws appended.
  const base = new Decoder(TINY, 7);
  assert.equal(base.trainingMasks(64, 3).lowResSigma, undefined);
  assert.equal(base.trainingMasks(64, 3).noiseSeed, draws.noiseSeed);
  dispose(u);
  dispose(base);
});

test('an upsampler samples at its own size from a low-res image, with guidance, leaking nothing', () => {
  const u = new Decoder(UPSAMPLER, 8);
  randomize(u, 600);
  const { images, imageEmb, tokens } = colouredSquares();
  const lowRes = tf.avgPool(images, 2, 2, 'valid') as tf.Tensor4D;
  const before = tf.memory().numTensors;
  const out = u.sample({ imageEmb, lowRes }, { steps: 3, seed: 2, sampler: 'ddim', guidance: 3 });
  assert.deepEqual(out.shape, [4, 16, 16, 3]);
  out.dispose();
  assert.equal(tf.memory().numTensors, before);
  tf.dispose([images, imageEmb, tokens, lowRes]);
  dispose(u);
});

test('upsampler gradients match finite differences (the stacked low-res input conv)', () => {
  const u = new Decoder({ ...UPSAMPLER, imageEmbDrop: 0, lowResNoise: 0.3 }, 9);
  randomize(u, 700);
  const { images, imageEmb, tokens } = colouredSquares();
  const lowRes = tf.avgPool(images, 2, 2, 'valid') as tf.Tensor4D;
  checkParamGradients(u.params(), () => u.loss({ images, imageEmb, lowRes }, 3), ['in.w', 'down.0.0.res.norm1.g', 'out.conv.w']);
  tf.dispose([images, imageEmb, tokens, lowRes]);
  dispose(u);
});

test('blur augmentation: each example is blended toward its blurred copy by its own weight, drawn after the noise draws', () => {
  tf.tidy(() => {
    // One bright pixel in the middle of an 8×8 image, twice: weight 0 keeps it, weight 1 spreads it over its neighbours.
    const pixels = new Float32Array(2 * 8 * 8 * 3);
    for (const b of [0, 1]) for (let c = 0; c < 3; c++) pixels[((b * 8 + 4) * 8 + 4) * 3 + c] = 1;
    const out = corruptLowRes(tf.tensor4d(pixels, [2, 8, 8, 3]), new Float32Array(2), 1, Float32Array.from([0, 1])).arraySync() as number[][][][];
    assert.equal(out[0][4][4][0], 1);
    assert.equal(out[0][4][5][0], 0);
    assert.ok(out[1][4][4][0] < 0.2 && out[1][4][5][0] > 0 && out[1][6][6][0] > 0, `blurred centre ${out[1][4][4][0]}`);
    // Blurring moves no brightness in from outside the image: the total is kept away from the borders.
    const total = (b: number) => out[b].flat(2).reduce((s, x) => s + x, 0);
    assert.ok(Math.abs(total(1) - total(0)) < 1e-5);
  });
  const plain = new Decoder({ ...UPSAMPLER, lowResNoise: 0.5 }, 7);
  const noisy = plain.trainingMasks(64, 3);
  const blurred = new Decoder({ ...UPSAMPLER, lowResNoise: 0.5, lowResBlur: 0.8 }, 7);
  const draws = blurred.trainingMasks(64, 3);
  assert.deepEqual(draws.lowResSigma, noisy.lowResSigma);
  assert.ok(draws.lowResBlur!.every((w) => w >= 0 && w <= 0.8) && Math.max(...draws.lowResBlur!) > 0.6);
  assert.equal(noisy.lowResBlur, undefined);
  dispose(blurred);
  dispose(plain);
});
