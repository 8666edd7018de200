import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/model/backend.ts';
import { DiffusionPrior, PriorConfig, pickMostAligned } from '../../src/model/prior.ts';
import { l2Normalize } from '../../src/model/nn.ts';
import { tokenize } from '../../src/model/tokenizer.ts';
import { checkParamGradients } from '../helpers/gradients.ts';

before(async () => {
  await initBackend();
});

const D = 16;
const TINY: Partial<PriorConfig> = { embedDim: D, width: 32, layers: 2, heads: 2, contextLength: 8 };
const dispose = (p: DiffusionPrior) => tf.dispose([...p.params().values()]);
const maxAbsDiff = (a: tf.Tensor, b: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);
/** Mean cosine similarity of matching rows. */
const meanCosine = (a: tf.Tensor2D, b: tf.Tensor2D) => tf.tidy(() => tf.mean(tf.sum(tf.mul(l2Normalize(a), l2Normalize(b)), 1)).dataSync()[0]);

/**
 * Eight captions; text embeddings random unit vectors, image embeddings a fixed random linear map of them
 * (so the text embedding itself is a poor guess of the image embedding, cosine ≈ 0).
 */
function syntheticPairs() {
  return tf.tidy(() => {
    const textEmb = l2Normalize(tf.randomNormal([8, D], 0, 1, 'float32', 1)) as tf.Tensor2D;
    const imageEmb = l2Normalize(tf.matMul(textEmb, tf.randomNormal([D, D], 0, 1, 'float32', 2))) as tf.Tensor2D;
    const tokens = tokenize(['red', 'green', 'blue', 'pink', 'black', 'white', 'grey', 'cyan'], 8);
    return { tokens, textEmb, imageEmb };
  });
}

test('config errors name the field', () => {
  assert.throws(() => new DiffusionPrior({ ...TINY, heads: 3 }, 1), /heads 3 must divide width 32/);
  assert.throws(() => PriorConfig.parse({ condDrop: -1 }), /condDrop/);
});

test('parameter names are ordered and stable; the same seed gives the same weights, another seed others', () => {
  const a = new DiffusionPrior(TINY, 7);
  const b = new DiffusionPrior(TINY, 7);
  const c = new DiffusionPrior(TINY, 8);
  const names = [...a.params().keys()];
  assert.deepEqual([...b.params().keys()], names);
  assert.deepEqual(names.slice(0, 4), ['tokens.table', 'tokens.null', 'text.w', 'text.b']);
  assert.ok(names.includes('blocks.1.attn.qkv.w') && names.includes('query'));
  assert.equal(names.at(-1), 'out.b');
  for (const name of names) assert.deepEqual(a.params().get(name)!.dataSync(), b.params().get(name)!.dataSync(), name);
  assert.notDeepEqual(a.params().get('blocks.0.attn.qkv.w')!.dataSync(), c.params().get('blocks.0.attn.qkv.w')!.dataSync());
  const noTokens = new DiffusionPrior({ ...TINY, captionTokens: false }, 7);
  assert.ok(![...noTokens.params().keys()].some((n) => n.startsWith('tokens.')));
  assert.equal(noTokens.sequenceLength, 4);
  assert.equal(a.sequenceLength, 12);
  [a, b, c, noTokens].forEach(dispose);
});

test('the clean-embedding prediction has shape [B, D] and depends on the text embedding, the tokens and t', () => {
  const p = new DiffusionPrior(TINY, 3);
  tf.tidy(() => {
    const { tokens, textEmb } = syntheticPairs();
    const x = tf.randomNormal([8, D], 0, 1, 'float32', 5) as tf.Tensor2D;
    const base = p.predictClean(x, 500, { tokens, textEmb });
    assert.deepEqual(base.shape, [8, D]);
    assert.ok(maxAbsDiff(base, p.predictClean(x, 500, { tokens, textEmb: tf.zerosLike(textEmb) })) > 1e-4, 'text embedding ignored');
    assert.ok(maxAbsDiff(base, p.predictClean(x, 500, { tokens: tf.reverse(tokens, 0) as tf.Tensor2D, textEmb })) > 1e-4, 'tokens ignored');
    assert.ok(maxAbsDiff(base, p.predictClean(x, 20, { tokens, textEmb })) > 1e-4, 'timestep ignored');
    assert.throws(() => p.predictClean(x, 500, { tokens: tf.zeros([8, 5], 'int32') as tf.Tensor2D, textEmb }), /expected \[8, 8\] \(config contextLength\)/);
    assert.throws(() => p.predictClean(x, 500, { tokens, textEmb: tf.zeros([8, 3]) as tf.Tensor2D }), /width 3, config embedDim is 16/);
  });
  dispose(p);
});

test('text-conditioning dropout follows the seed and drops about 10%', () => {
  const p = new DiffusionPrior(TINY, 1);
  const a = p.trainingDraws(2000, 5);
  assert.deepEqual(a, p.trainingDraws(2000, 5));
  assert.notDeepEqual(a.keep, p.trainingDraws(2000, 6).keep);
  const dropped = a.keep.reduce((n, v) => n + (v === 0 ? 1 : 0), 0) / a.keep.length;
  assert.ok(Math.abs(dropped - 0.1) < 0.03, `dropped ${dropped}`);
  dispose(p);
});

test('the prior loss gradient matches finite differences, through the null conditioning, the broadcast query and tokens, and the transformer', () => {
  const p = new DiffusionPrior({ embedDim: 8, width: 16, layers: 1, heads: 2, contextLength: 6, condDrop: 0.5 }, 2);
  // Away from the small initial weights every parameter's gradient is well above the check's 1e-4 floor.
  let i = 0;
  for (const v of p.params().values()) v.assign(tf.tidy(() => tf.add(v, tf.randomNormal(v.shape, 0, 0.2, 'float32', 400 + i++))));
  const batch = tf.tidy(() => ({
    tokens: tokenize(['red', 'green', 'blue', 'pink'], 6),
    textEmb: l2Normalize(tf.randomNormal([4, 8], 0, 1, 'float32', 1)) as tf.Tensor2D,
    imageEmb: l2Normalize(tf.randomNormal([4, 8], 0, 1, 'float32', 2)) as tf.Tensor2D,
  }));
  const seed = 2;
  // Captions 0 and 1 keep their conditioning, 2 and 3 get the learned nulls: both paths carry gradient.
  assert.deepEqual(Array.from(p.trainingDraws(4, seed).keep), [1, 1, 0, 0]);
  const names = ['tokens.null', 'text.null', 'query', 'tokens.table', 'text.w', 'time.in.w', 'image.w', 'pos.table', 'blocks.0.attn.qkv.w', 'blocks.0.mlp.fc.w', 'ln_final.g', 'out.w'];
  checkParamGradients(p.params(), () => p.loss(batch, seed), names, { rtol: 3e-2, requireGradient: true });
  tf.dispose(Object.values(batch));
  dispose(p);
});

test('of several candidates per caption, the one most aligned with the text embedding is kept', () => {
  tf.tidy(() => {
    const text = tf.tensor2d([[1, 0], [0, 1]]);
    // Rows c·B + i: candidate c for caption i.
    const candidates = tf.tensor2d([[0.2, 0.9], [0.1, 0.3], [0.9, 0.1], [0.8, 0.2], [0.5, 0.5], [0, 1]]);
    assert.deepEqual(pickMostAligned(candidates, text).arraySync(), [[0.9, 0.1], [0, 1]].map((r) => r.map(Math.fround)));
    assert.throws(() => pickMostAligned(tf.zeros([5, 2]) as tf.Tensor2D, text), /5 candidates do not split evenly over 2 captions/);
  });
});

test('a tiny prior trained on synthetic (text → image embedding) pairs cuts its loss and samples move to the targets', () => {
  const p = new DiffusionPrior(TINY, 1);
  const { tokens, textEmb, imageEmb } = syntheticPairs();
  const batch = tf.tidy(() => ({
    tokens: tf.concat([tokens, tokens]) as tf.Tensor2D,
    textEmb: tf.concat([textEmb, textEmb]) as tf.Tensor2D,
    imageEmb: tf.concat([imageEmb, imageEmb]) as tf.Tensor2D,
  }));
  const evalLoss = () => tf.tidy(() => [0, 1, 2, 3, 4, 5].reduce((s, k) => s + p.loss(batch, 1000 + k).dataSync()[0], 0) / 6);
  const sampleCosine = () => tf.tidy(() => meanCosine(p.sample({ tokens, textEmb }, { steps: 10, guidance: 1, seed: 3 }), imageEmb));
  const baseline = meanCosine(textEmb, imageEmb);
  const [lossBefore, cosBefore] = [evalLoss(), sampleCosine()];
  const opt = tf.train.adam(3e-3);
  const vars = [...p.params().values()];
  const counts: number[] = [];
  for (let step = 0; step < 50; step++) {
    opt.minimize(() => p.loss(batch, step), false, vars)?.dispose();
    counts.push(tf.memory().numTensors);
  }
  const [lossAfter, cosAfter] = [evalLoss(), sampleCosine()];
  assert.ok(lossAfter < 0.4 * lossBefore, `loss ${lossBefore.toFixed(3)} → ${lossAfter.toFixed(3)}`);
  assert.ok(cosBefore < 0.4 && cosAfter > 0.7 && cosAfter > baseline + 0.5, `cosine to targets ${cosBefore.toFixed(3)} → ${cosAfter.toFixed(3)} (text baseline ${baseline.toFixed(3)})`);
  assert.equal(new Set(counts.slice(1)).size, 1, `numTensors drifted: ${counts.join(',')}`);
  opt.dispose();
  tf.dispose([tokens, textEmb, imageEmb, ...Object.values(batch)]);
  dispose(p);
});

test('sampling: unit-length [B, D] embeddings, bit-reproducible for a seed, different for another, no tensor leaks', () => {
  const p = new DiffusionPrior(TINY, 4);
  const { tokens, textEmb, imageEmb } = syntheticPairs();
  const opts = { steps: 5, guidance: 2, seed: 9 };
  const before = tf.memory().numTensors;
  const a = p.sample({ tokens, textEmb }, opts);
  assert.equal(tf.memory().numTensors, before + 1, 'sampling leaked tensors');
  const b = p.sample({ tokens, textEmb }, opts);
  const c = p.sample({ tokens, textEmb }, { ...opts, seed: 10 });
  const stochastic = p.sample({ tokens, textEmb }, { ...opts, eta: 1, candidates: 3 });
  assert.deepEqual(a.shape, [8, D]);
  assert.deepEqual(stochastic.shape, [8, D]);
  assert.deepEqual(a.dataSync(), b.dataSync());
  assert.notDeepEqual(a.dataSync(), c.dataSync());
  tf.tidy(() => {
    const norms = tf.norm(a, 'euclidean', 1).dataSync();
    for (const n of norms) assert.ok(Math.abs(n - 1) < 1e-4, `norm ${n}`);
  });
  // Without tokens the prior still samples, from the text embedding alone.
  const noTokens = p.sample({ textEmb }, opts);
  assert.deepEqual(noTokens.shape, [8, D]);
  tf.dispose([a, b, c, stochastic, noTokens, tokens, textEmb, imageEmb]);
  dispose(p);
});

test('guidance 0 is the unconditional model: the text no longer matters', () => {
  const p = new DiffusionPrior(TINY, 5);
  tf.tidy(() => {
    const { tokens, textEmb } = syntheticPairs();
    // One candidate, so the text embedding plays no part in choosing either.
    const opts = { steps: 4, seed: 2, candidates: 1 };
    const a = p.sample({ tokens, textEmb }, { ...opts, guidance: 0 });
    const b = p.sample({ tokens: tf.reverse(tokens, 0) as tf.Tensor2D, textEmb: tf.reverse(textEmb, 0) as tf.Tensor2D }, { ...opts, guidance: 0 });
    assert.ok(maxAbsDiff(a, b) < 1e-5);
    assert.ok(maxAbsDiff(a, p.sample({ tokens, textEmb }, { ...opts, guidance: 1 })) > 1e-3);
  });
  dispose(p);
});

test('sampling draws 2 candidates per caption by default and keeps the one more aligned with the text embedding', () => {
  const p = new DiffusionPrior(TINY, 6);
  tf.tidy(() => {
    const cond = syntheticPairs();
    const opts = { steps: 3, guidance: 1, seed: 4 };
    const byDefault = p.sample(cond, opts);
    const [one, two] = [p.sample(cond, { ...opts, candidates: 1 }), p.sample(cond, { ...opts, candidates: 2 })];
    assert.deepEqual(byDefault.dataSync(), two.dataSync());
    assert.ok(maxAbsDiff(byDefault, one) > 1e-3, 'the default sample is the single-candidate one');
    // The first of 2 candidates is the single-candidate draw (same noise), so the kept one is at least as aligned.
    const alignment = (x: tf.Tensor2D) => tf.sum(tf.mul(x, cond.textEmb), 1).arraySync() as number[];
    const [a1, a2] = [alignment(one), alignment(byDefault)];
    a1.forEach((a, i) => assert.ok(a2[i] >= a - 1e-6, `caption ${i}: ${a2[i]} < ${a}`));
    assert.ok(a2.some((a, i) => a > a1[i] + 1e-6), 'no caption picked its second candidate');
  });
  dispose(p);
});
