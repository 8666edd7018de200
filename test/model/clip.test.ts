import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/model/backend.ts';
import { Clip, ClipConfig } from '../../src/model/clip.ts';
import { LOGIT_SCALE_INIT } from '../../src/model/losses.ts';
import { EOS, tokenize } from '../../src/model/tokenizer.ts';
import { checkParamGradients } from '../helpers/gradients.ts';

before(async () => {
  await initBackend();
});

const TINY = { imageSize: 16, patchSize: 4, width: 32, layers: 1, heads: 2, contextLength: 32, textWidth: 32, textLayers: 1, textHeads: 2, embedDim: 32 };

test('the default config is a small CPU model, and a bad config names the field', () => {
  const c = ClipConfig.parse({});
  assert.equal(c.imageSize, 32);
  assert.equal(c.imageSize % c.patchSize, 0);
  const bad = ClipConfig.safeParse({ imageSize: 32, patchSize: 5 });
  assert.equal(bad.success, false);
  assert.deepEqual(bad.error!.issues[0].path, ['patchSize']);
  assert.deepEqual(ClipConfig.safeParse({ width: 30, heads: 4 }).error!.issues[0].path, ['heads']);
  assert.deepEqual(ClipConfig.safeParse({ textWidth: -1 }).error!.issues[0].path, ['textWidth']);
});

test('CLIP encodes images and captions to unit vectors of the embedding width', () => {
  const clip = new Clip({}, 1);
  const { imageSize, contextLength, embedDim } = clip.config;
  tf.tidy(() => {
    const images = tf.randomUniform([3, imageSize, imageSize, 3], -1, 1, 'float32', 2) as tf.Tensor4D;
    const img = clip.encodeImage(images);
    const txt = clip.encodeText(tokenize(['a red square', '红色', ''], contextLength));
    assert.deepEqual(img.shape, [3, embedDim]);
    assert.deepEqual(txt.shape, [3, embedDim]);
    for (const e of [img, txt]) {
      for (const n of tf.norm(e, 'euclidean', 1).dataSync()) assert.ok(Math.abs(n - 1) < 1e-4, `norm ${n}`);
    }
    assert.throws(() => clip.encodeImage(tf.zeros([1, 8, 8, 3]) as tf.Tensor4D), /expects images \[B, 32, 32, 3\]/);
    assert.throws(() => clip.encodeText(tf.zeros([1, contextLength + 1], 'int32') as tf.Tensor2D), /context is 48 tokens/);
  });
  assert.ok(Math.abs(clip.logitScale.dataSync()[0] - LOGIT_SCALE_INIT) < 1e-6);
  clip.dispose();
});

test('the text embedding is pooled at EOS: whatever follows EOS changes nothing', () => {
  const clip = new Clip(TINY, 2);
  tf.tidy(() => {
    const tokens = tokenize(['a blue square'], 32);
    const row = tokens.arraySync()[0];
    const eos = row.indexOf(EOS);
    const garbage = row.map((id, i) => (i > eos ? (i * 37) % 256 : id));
    const a = clip.encodeText(tokens).dataSync();
    const b = clip.encodeText(tf.tensor2d([garbage], [1, 32], 'int32')).dataSync();
    assert.deepEqual(Array.from(a), Array.from(b));
    const c = clip.encodeText(tokenize(['a blue squarf'], 32)).dataSync();
    assert.notDeepEqual(Array.from(a), Array.from(c));
  });
  clip.dispose();
});

test('params() has the same names in the same order for every construction; the same seed gives the same weights', () => {
  const a = new Clip(TINY, 7);
  const b = new Clip(TINY, 7);
  const c = new Clip(TINY, 8);
  const names = [...a.params().keys()];
  assert.deepEqual(names, [...b.params().keys()]);
  assert.deepEqual(names, [...c.params().keys()]);
  assert.deepEqual(names.slice(0, 4), ['visual.patch.w', 'visual.patch.b', 'visual.classToken', 'visual.pos.table']);
  assert.ok(names.includes('visual.blocks.0.attn.qkv.w'));
  assert.ok(names.includes('text.blocks.0.mlp.fc.w'));
  assert.equal(names.at(-1), 'logitScale');
  assert.equal(new Set(names).size, names.length);
  let differs = false;
  for (const name of names) {
    const va = a.params().get(name)!.dataSync();
    assert.deepEqual(Array.from(va), Array.from(b.params().get(name)!.dataSync()), name);
    const vc = c.params().get(name)!.dataSync();
    if (va.some((x, i) => x !== vc[i])) differs = true;
  }
  assert.ok(differs, 'another seed gives other weights');
  [a, b, c].forEach((m) => m.dispose());
});


test('the CLIP loss gradient matches finite differences in both encoders and the logit scale', () => {
  const clip = new Clip({ ...TINY, imageSize: 8, contextLength: 12 }, 4);
  const images = tf.randomUniform([3, 8, 8, 3], -1, 1, 'float32', 5) as tf.Tensor4D;
  const tokens = tokenize(['red', 'green', 'blue'], 12);
  const loss = () => clip.loss({ images, tokens });
  checkParamGradients(clip.params(), loss, ['visual.patch.w', 'visual.classToken', 'visual.pos.table', 'visual.blocks.0.attn.qkv.w', 'visual.proj.w', 'text.token.table', 'text.pos.table', 'text.blocks.0.mlp.fc.w', 'text.lnFinal.g', 'logitScale'], { rtol: 3e-2, requireGradient: true });
  tf.dispose([images, tokens]);
  clip.dispose();
});

const COLORS: Record<string, [number, number, number]> = { red: [1, -1, -1], green: [-1, 1, -1], blue: [-1, -1, 1] };

/** A white 16×16 image with a centred 8×8 square or a 14×4 bar of `color`. */
function render(color: [number, number, number], shape: 'square' | 'bar'): Float32Array {
  const s = 16;
  const px = new Float32Array(s * s * 3).fill(1);
  const [y0, y1, x0, x1] = shape === 'square' ? [4, 12, 4, 12] : [6, 10, 1, 15];
  for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) px.set(color, (y * s + x) * 3);
  return px;
}

test('a tiny CLIP trained on six coloured shapes retrieves every caption’s image, without leaking tensors', () => {
  const shapes = ['square', 'bar'] as const;
  const pairs = Object.entries(COLORS).flatMap(([name, rgb]) => shapes.map((shape) => ({ caption: `a ${name} ${shape}`, pixels: render(rgb, shape) })));
  const images = tf.tensor4d(Float32Array.from(pairs.flatMap((p) => Array.from(p.pixels))), [pairs.length, 16, 16, 3]);
  const tokens = tokenize(pairs.map((p) => p.caption), TINY.contextLength);
  const clip = new Clip(TINY, 11);
  const optimizer = tf.train.adam(3e-3);
  const vars = [...clip.params().values()];
  const losses: number[] = [];
  let tensorsAfterFirstSteps = 0;
  for (let step = 0; step < 30; step++) {
    const loss = optimizer.minimize(() => clip.loss({ images, tokens }), true, vars)!;
    losses.push(loss.dataSync()[0]);
    loss.dispose();
    if (step === 2) tensorsAfterFirstSteps = tf.memory().numTensors;
  }
  assert.equal(tf.memory().numTensors, tensorsAfterFirstSteps, 'tensor count grows across training steps');
  assert.ok(losses.at(-1)! < 0.1, `loss ${losses[0]} → ${losses.at(-1)}`);

  const similarity = tf.tidy(() => tf.matMul(clip.encodeText(tokens), clip.encodeImage(images), false, true).arraySync()) as number[][];
  similarity.forEach((row, i) => {
    const best = row.indexOf(Math.max(...row));
    assert.equal(best, i, `"${pairs[i].caption}" retrieved the image of "${pairs[best].caption}"`);
  });
  tf.dispose([images, tokens]);
  optimizer.dispose();
  clip.dispose();
});

test('convStem: tokens from stride-2 convolutions — unit embeddings, a bad patch size names the field, gradients match finite differences', () => {
  assert.deepEqual(ClipConfig.safeParse({ imageSize: 24, patchSize: 6, convStem: true }).error!.issues[0].path, ['convStem']);
  assert.deepEqual(ClipConfig.safeParse({ imageSize: 32, patchSize: 1, convStem: true }).error!.issues[0].path, ['convStem']);
  const clip = new Clip({ ...TINY, imageSize: 8, contextLength: 12, convStem: true }, 4);
  // patchSize 4 → two stride-2 convolutions (8 → 16 → 32 channels here), then the 1×1 projection to width.
  const names = [...clip.params().keys()];
  assert.deepEqual(names.filter((n) => n.startsWith('visual.stem.') || n.startsWith('visual.patch.')), ['visual.stem.0.w', 'visual.stem.0.b', 'visual.stem.1.w', 'visual.stem.1.b', 'visual.patch.w', 'visual.patch.b']);
  assert.deepEqual(clip.params().get('visual.stem.1.w')!.shape, [3, 3, 16, 32]);
  const images = tf.randomUniform([3, 8, 8, 3], -1, 1, 'float32', 5) as tf.Tensor4D;
  tf.tidy(() => {
    const e = clip.encodeImage(images);
    assert.deepEqual(e.shape, [3, 32]);
    for (const n of tf.norm(e, 'euclidean', 1).dataSync()) assert.ok(Math.abs(n - 1) < 1e-4);
    // A change confined to one 4×4 cell reaches the embedding (through that cell's token).
    const moved = tf.add(images, tf.pad(tf.fill([1, 4, 4, 3], 0.5), [[2, 0], [4, 0], [4, 0], [0, 0]])) as tf.Tensor4D;
    const diff = tf.max(tf.abs(tf.sub(clip.encodeImage(moved), e)), 1).dataSync();
    assert.ok(diff[0] < 1e-6 && diff[1] < 1e-6 && diff[2] > 1e-4, `only image 2 changed: ${[...diff]}`);
  });
  const tokens = tokenize(['red', 'green', 'blue'], 12);
  const loss = () => clip.loss({ images, tokens });
  checkParamGradients(clip.params(), loss, ['visual.stem.0.w', 'visual.stem.1.b', 'visual.patch.w'], { rtol: 3e-2, requireGradient: true });
  tf.dispose([images, tokens]);
  clip.dispose();
});
