import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/model/backend.ts';
import { LOGIT_SCALE_MAX, contrastiveLoss, logitScaleValue } from '../../src/model/losses.ts';
import { Clip } from '../../src/model/clip.ts';
import { tokenize } from '../../src/model/tokenizer.ts';

before(async () => {
  await initBackend();
});

test('the contrastive loss of a 2×2 batch equals the hand-computed symmetric cross-entropy', () => {
  const value = tf.tidy(() => {
    const images = tf.tensor2d([[1, 0], [0, 1]]);
    const texts = tf.tensor2d([[0.6, 0.8], [0, 1]]);
    return contrastiveLoss(images, texts, tf.scalar(Math.log(2))).dataSync()[0];
  });
  // logits = 2 · images · textsᵀ = [[1.2, 0], [1.6, 2]] (row = image, column = text).
  const ce = (target: number, other: number) => -Math.log(Math.exp(target) / (Math.exp(target) + Math.exp(other)));
  const imageToText = ce(1.2, 0) + ce(2, 1.6); // each image row against both texts
  const textToImage = ce(1.2, 1.6) + ce(2, 0); // each text column against both images
  const expected = (imageToText + textToImage) / 4;
  assert.ok(Math.abs(value - expected) < 1e-6, `${value} vs ${expected}`);
});

test('identical embeddings give ln N; well-separated pairs give a loss near 0', () => {
  tf.tidy(() => {
    const same = tf.fill([4, 3], 1 / Math.sqrt(3)) as tf.Tensor2D;
    assert.ok(Math.abs(contrastiveLoss(same, same, tf.scalar(0)).dataSync()[0] - Math.log(4)) < 1e-6);
    const eye = tf.eye(4) as tf.Tensor2D;
    assert.ok(contrastiveLoss(eye, eye, tf.scalar(Math.log(100))).dataSync()[0] < 1e-6);
  });
});

test('the logit scale is exp(logitScale) clamped at 100, with no gradient while clamped', () => {
  tf.tidy(() => {
    assert.ok(Math.abs(logitScaleValue(tf.scalar(Math.log(50))).dataSync()[0] - 50) < 1e-4);
    assert.equal(logitScaleValue(tf.scalar(Math.log(1000))).dataSync()[0], LOGIT_SCALE_MAX);
    const images = tf.tensor2d([[1, 0], [0.6, 0.8]]);
    const texts = tf.tensor2d([[0.8, 0.6], [0, 1]]);
    const grad = (s: number) => tf.grad((ls: tf.Tensor) => contrastiveLoss(images, texts, ls))(tf.scalar(Math.log(s))).dataSync()[0];
    assert.equal(grad(1000), 0);
    assert.notEqual(grad(50), 0);
  });
});

test('the loss gradients w.r.t. both embeddings and the logit scale match finite differences', () => {
  const images = tf.randomNormal([3, 4], 0, 1, 'float32', 21);
  const texts = tf.randomNormal([3, 4], 0, 1, 'float32', 22);
  const scale = tf.scalar(Math.log(3));
  const f = (a: tf.Tensor, b: tf.Tensor, s: tf.Tensor) => contrastiveLoss(a as tf.Tensor2D, b as tf.Tensor2D, s);
  const grads = tf.grads(f)([images, texts, scale]).map((g) => g.dataSync());
  const inputs = [images, texts, scale];
  const eps = 1e-2;
  inputs.forEach((input, which) => {
    const base = input.dataSync();
    for (let i = 0; i < base.length; i += 2) {
      const at = (delta: number) =>
        tf.tidy(() => {
          const moved = Float32Array.from(base);
          moved[i] += delta;
          const args = inputs.map((t, k) => (k === which ? tf.tensor(moved, t.shape) : t));
          return f(args[0], args[1], args[2]).dataSync()[0];
        });
      const numeric = (at(eps) - at(-eps)) / (2 * eps);
      assert.ok(Math.abs(numeric - grads[which][i]) < 1e-2 * Math.max(1, Math.abs(numeric)), `input ${which}[${i}]: ${grads[which][i]} vs ${numeric}`);
    }
  });
  tf.dispose(inputs);
});

test('mismatched embeddings and an own slice outside the batch are refused', () => {
  tf.tidy(() => {
    const a = tf.zeros([4, 3]) as tf.Tensor2D;
    const ls = tf.scalar(0);
    assert.throws(() => contrastiveLoss(a, tf.zeros([3, 3]) as tf.Tensor2D, ls), /same shape/);
    assert.throws(() => contrastiveLoss(a, a, ls, { offset: 3, size: 2 }), /not inside the global batch of 4/);
    assert.throws(() => contrastiveLoss(a, a, ls, { offset: 0, size: 0 }), /not inside the global batch of 4/);
    assert.throws(() => contrastiveLoss(a, a, ls, { offset: -1, size: 2 }), /not inside the global batch of 4/);
  });
});

/** Gradients of `loss` w.r.t. every CLIP parameter, by dotted name. */
function gradsOf(clip: Clip, loss: () => tf.Scalar): Map<string, Float32Array> {
  const params = clip.params();
  const { value, grads } = tf.variableGrads(loss, [...params.values()]);
  const out = new Map<string, Float32Array>();
  for (const [name, v] of params) out.set(name, grads[v.name].dataSync() as Float32Array);
  tf.dispose([value, ...Object.values(grads)]);
  return out;
}

test('two ranks’ gradients, averaged, equal one process’s gradient on the whole global batch', () => {
  const clip = new Clip({ imageSize: 8, patchSize: 4, width: 16, layers: 1, heads: 2, contextLength: 12, textWidth: 16, textLayers: 1, textHeads: 2, embedDim: 8 }, 3);
  const images = tf.randomUniform([4, 8, 8, 3], -1, 1, 'float32', 5) as tf.Tensor4D;
  const tokens = tokenize(['red', 'green', 'blue', 'yellow'], 12);
  // Sharper logits than the default, so the scale's gradient is not negligible.
  clip.logitScale.assign(tf.scalar(Math.log(30)));
  const rows = (t: tf.Tensor, rank: number) => tf.slice(t, [rank * 2], [2]);

  const single = gradsOf(clip, () => clip.loss({ images, tokens }));

  // Each rank: its own rows live, the other rank's embeddings arrive as plain numbers (constants).
  const perRank = [0, 1].map((rank) => {
    const other = 1 - rank;
    const [otherImage, otherText] = tf.tidy(() => [
      clip.encodeImage(rows(images, other) as tf.Tensor4D).dataSync() as Float32Array,
      clip.encodeText(rows(tokens, other) as tf.Tensor2D).dataSync() as Float32Array,
    ]);
    return gradsOf(clip, () => {
      const ownImage = clip.encodeImage(rows(images, rank) as tf.Tensor4D);
      const ownText = clip.encodeText(rows(tokens, rank) as tf.Tensor2D);
      const order = (own: tf.Tensor2D, gathered: Float32Array) => {
        const constant = tf.tensor2d(gathered, [2, 8]);
        return tf.concat(rank === 0 ? [own, constant] : [constant, own], 0) as tf.Tensor2D;
      };
      return contrastiveLoss(order(ownImage, otherImage), order(ownText, otherText), clip.logitScale, { offset: rank * 2, size: 2 });
    });
  });

  // The same with live tensors for the other rank's rows: contrastiveLoss detaches them itself.
  const liveOthers = gradsOf(clip, () => contrastiveLoss(clip.encodeImage(images), clip.encodeText(tokens), clip.logitScale, { offset: 2, size: 2 }));

  // Without `own` a rank would see only its own rows as negatives: a different (wrong) gradient.
  const localOnly = gradsOf(clip, () => clip.loss({ images: rows(images, 0) as tf.Tensor4D, tokens: rows(tokens, 0) as tf.Tensor2D }));

  let worst = 0;
  let scale = 0;
  let localWorst = 0;
  for (const [name, g] of single) {
    const [a, b] = perRank.map((r) => r.get(name)!);
    const live = liveOthers.get(name)!;
    for (let i = 0; i < g.length; i++) {
      worst = Math.max(worst, Math.abs((a[i] + b[i]) / 2 - g[i]));
      worst = Math.max(worst, Math.abs(live[i] - b[i]));
      scale = Math.max(scale, Math.abs(g[i]));
      localWorst = Math.max(localWorst, Math.abs(localOnly.get(name)![i] - g[i]));
    }
  }
  assert.ok(scale > 1e-3, 'gradients are not trivially zero');
  assert.ok(worst < 1e-4 * scale + 1e-7, `averaged rank gradients differ from the global one by ${worst} (scale ${scale})`);
  assert.ok(localWorst > 1e-2 * scale, 'a local-only loss should not match the global gradient');
  assert.ok(Math.abs(single.get('logitScale')![0]) > 1e-4, 'logit scale gets a gradient');
  tf.dispose([images, tokens]);
  clip.dispose();
});
