// Spatial helpers shared by the conv backprop kernels.
import * as tf from '@tensorflow/tfjs-core';

/**
 * Rows [-top, height - top) and columns [-left, width - left) of an NHWC tensor: zero-padded where that range
 * leaves the tensor, cropped where it stays inside. Conv backprops need exactly the pixels their windows touch.
 */
export function window2d(x: tf.Tensor4D, top: number, height: number, left: number, width: number): tf.Tensor4D {
  const [, h, w] = x.shape;
  const r0 = Math.max(0, -top), r1 = Math.min(h, height - top);
  const c0 = Math.max(0, -left), c1 = Math.min(w, width - left);
  const inside = r0 === 0 && r1 === h && c0 === 0 && c1 === w ? x : tf.slice(x, [0, r0, c0, 0], [-1, r1 - r0, c1 - c0, -1]);
  const padTop = Math.max(0, top), padLeft = Math.max(0, left);
  const padBottom = height - padTop - (r1 - r0), padRight = width - padLeft - (c1 - c0);
  if (padTop === 0 && padLeft === 0 && padBottom === 0 && padRight === 0) return inside;
  return tf.pad(inside, [[0, 0], [padTop, padBottom], [padLeft, padRight], [0, 0]]);
}

/** Spreads an NHWC tensor's pixels `sh`/`sw` apart with zeros between them (the transpose of a strided read). */
export function dilate2d(x: tf.Tensor4D, sh: number, sw: number): tf.Tensor4D {
  if (sh === 1 && sw === 1) return x;
  const [b, h, w, c] = x.shape;
  const spread = tf.pad(tf.reshape(x, [b, h, 1, w, 1, c]), [[0, 0], [0, 0], [0, sh - 1], [0, 0], [0, sw - 1], [0, 0]]);
  return tf.reshape(spread, [b, h * sh, w * sw, c]);
}
