// CLIP's symmetric contrastive (InfoNCE) loss over a global batch that may be spread over several trainers.
//
// Distributed use. Rank r holds n_r rows of a global batch of N = Σ n_r pairs (ranks may hold different numbers
// of rows). Each rank:
//   1. encodes its own rows (live tensors: gradients flow into the model),
//   2. receives the other ranks' embeddings as plain numbers (an all-gather of the embedding values) and makes
//      them tensors — constants, nothing flows back to them,
//   3. builds the global [N, D] matrices as concat([before, own, after]) in rank order, and calls
//      contrastiveLoss(images, texts, logitScale, { offset: n_0 + … + n_(r-1), size: n_r }).
// The returned value is the loss of the whole global batch (the same number on every rank). Its gradient on
// one rank is only the part that flows through that rank's own rows: ∂L/∂E_own · ∂E_own/∂θ. Summed over ranks
// those parts are exactly the single-process gradient; the trainer's all-reduce takes the *sample-weighted mean*
// Σ n_r·g_r / N, so the own rows' gradient is scaled by N/size here (with equal shares: the number of ranks, and
// the weighted mean is the plain mean). The logit scale is live on every rank and each already computes its full
// ∂L/∂s, which any weighted mean leaves as it is. Rows outside `own` are detached here too, so a caller may pass
// live tensors for them (tests do) without their gradient being counted twice.
import * as tf from '@tensorflow/tfjs-core';

/** CLIP's initial logit scale, in log space: ln(1/0.07) (temperature 0.07). */
export const LOGIT_SCALE_INIT = Math.log(1 / 0.07);
/** exp(logitScale) never exceeds this (as in CLIP: temperatures below 0.01 make training unstable). */
export const LOGIT_SCALE_MAX = 100;

/** The multiplier applied to cosine similarities: min(exp(logitScale), 100). No gradient while clamped. */
export function logitScaleValue(logitScale: tf.Tensor): tf.Scalar {
  return tf.minimum(tf.exp(tf.reshape(logitScale, [])), LOGIT_SCALE_MAX);
}

/** The rows of the global batch this trainer computed itself. */
export interface OwnSlice {
  offset: number;
  size: number;
}

/** Identity forward, gradient multiplied by `factor` (0: tfjs's missing stopGradient). */
function scaleGradient<T extends tf.Tensor>(x: T, factor: number): T {
  const f = tf.customGrad((...inputs) => ({
    value: tf.clone(inputs[0] as tf.Tensor),
    gradFunc: (dy: tf.Tensor) => (factor === 0 ? tf.zerosLike(dy) : tf.mul(dy, factor)),
  }));
  return f(x) as T;
}

/** [N, D] → concat(detached rows before, own rows with gradient × N/size, detached rows after). */
function withOwnRows(emb: tf.Tensor2D, own: OwnSlice): tf.Tensor2D {
  const [n, d] = emb.shape;
  const parts: tf.Tensor2D[] = [];
  if (own.offset > 0) parts.push(scaleGradient(tf.slice(emb, [0, 0], [own.offset, d]), 0));
  parts.push(scaleGradient(tf.slice(emb, [own.offset, 0], [own.size, d]), n / own.size));
  const end = own.offset + own.size;
  if (end < n) parts.push(scaleGradient(tf.slice(emb, [end, 0], [n - end, d]), 0));
  return tf.concat(parts, 0);
}

function checkOwn(own: OwnSlice, n: number): void {
  const { offset, size } = own;
  if (!Number.isInteger(offset) || !Number.isInteger(size) || size < 1 || offset < 0 || offset + size > n) {
    throw new Error(`own slice {offset: ${offset}, size: ${size}} is not inside the global batch of ${n} rows`);
  }
}

/**
 * Symmetric InfoNCE over N pairs: row i of imageEmb matches row i of textEmb, every other row is a negative.
 * imageEmb, textEmb: [N, D], L2-normalised. logitScale: log-space scalar variable.
 * Returns (CE(image→text) + CE(text→image)) / 2, each averaged over the N rows.
 * With `own`, gradients are set up for data-parallel training as described at the top of this file.
 */
export function contrastiveLoss(imageEmb: tf.Tensor2D, textEmb: tf.Tensor2D, logitScale: tf.Tensor, own?: OwnSlice): tf.Scalar {
  const [n, d] = imageEmb.shape;
  if (textEmb.shape[0] !== n || textEmb.shape[1] !== d) {
    throw new Error(`image embeddings [${imageEmb.shape}] and text embeddings [${textEmb.shape}] must have the same shape`);
  }
  if (own) {
    checkOwn(own, n);
    imageEmb = withOwnRows(imageEmb, own);
    textEmb = withOwnRows(textEmb, own);
  }
  const logits = tf.mul(tf.matMul(imageEmb, textEmb, false, true), logitScaleValue(logitScale)); // [N images, N texts]
  const eye = tf.eye(n);
  const imageToText = tf.sub(logits, tf.logSumExp(logits, 1, true)); // log p(text j | image i)
  const textToImage = tf.sub(logits, tf.logSumExp(logits, 0, true)); // log p(image i | text j)
  const matched = tf.add(tf.sum(tf.mul(imageToText, eye)), tf.sum(tf.mul(textToImage, eye)));
  return tf.div(matched, -2 * n);
}
