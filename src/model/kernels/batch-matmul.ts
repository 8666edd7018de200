// BatchMatMul rewritten so every product reaches wasm's fast path: one plain (untransposed, unbatched) 2-D matMul.
// Why: the stock wasm kernel runs ~20–30 GFLOP/s only for that case; with transposeA/transposeB (which matMul's own
// gradient always uses) or a batch dimension it falls back to a loop at 1–3 GFLOP/s. An explicit transpose costs a
// copy, far less than the slow product.
import * as tf from '@tensorflow/tfjs-core';
import { asTensor, type KernelArgs } from './replace.ts';

/** Below this m·k·n a per-batch loop of 2-D products loses to the stock batched loop (tfjs's per-op overhead). */
const LOOP_MIN_FLOPS = 32 * 32 * 32;

const size = (dims: number[]) => dims.reduce((a, b) => a * b, 1);

/** The matrix transpose of the last two axes, materialised. */
function transposeLast2(x: tf.Tensor): tf.Tensor {
  const perm = x.shape.map((_, i) => i);
  [perm[x.rank - 2], perm[x.rank - 1]] = [perm[x.rank - 1], perm[x.rank - 2]];
  return tf.transpose(x, perm);
}

export function batchMatMul(args: KernelArgs, stock: tf.KernelFunc | undefined): tf.TensorInfo | tf.TensorInfo[] {
  const { transposeA, transposeB } = args.attrs as unknown as tf.BatchMatMulAttrs;
  const a0 = asTensor(args.inputs.a), b0 = asTensor(args.inputs.b);
  const outerA = a0.shape.slice(0, -2), outerB = b0.shape.slice(0, -2);
  const batchA = size(outerA), batchB = size(outerB);
  if (!stock) throw new Error('BatchMatMul: the backend has no stock kernel to build on');
  if (!transposeA && !transposeB && batchA === 1 && batchB === 1) return stock(args);
  return tf.tidy(() => {
    const a = transposeA ? transposeLast2(a0) : a0;
    const b = transposeB ? transposeLast2(b0) : b0;
    const [m, k] = a.shape.slice(-2), n = b.shape[b.rank - 1];
    const outer = tf.backend_util.assertAndGetBroadcastShape(outerA, outerB);
    let out: tf.Tensor;
    if (batchB === 1) {
      // Every batch of a meets the same b: one [batchA·m, k] × [k, n] product.
      out = tf.matMul(tf.reshape(a, [batchA * m, k]), tf.reshape(b, [k, n]));
    } else if (batchA === 1) {
      // The same a meets every batch of b: a × [k, batchB·n], batches side by side.
      const bSide = tf.reshape(tf.transpose(tf.reshape(b, [batchB, k, n]), [1, 0, 2]), [k, batchB * n]);
      const prod = tf.matMul(tf.reshape(a, [m, k]), bSide);
      out = tf.transpose(tf.reshape(prod, [m, batchB, n]), [1, 0, 2]);
    } else if (batchA === batchB && m * k * n >= LOOP_MIN_FLOPS) {
      // Batched on both sides: one 2-D product per batch, when each is big enough to beat the per-op overhead.
      // (tf.slice, not tf.unstack: wasm's Unpack bypasses easel's fast Slice.)
      const a2 = tf.reshape(a, [batchA * m, k]), b2 = tf.reshape(b, [batchB * k, n]);
      const products = [];
      for (let i = 0; i < batchA; i++) products.push(tf.matMul(tf.slice(a2, [i * m, 0], [m, k]), tf.slice(b2, [i * k, 0], [k, n])));
      out = tf.concat(products);
    } else {
      // Many small products, or partial broadcasting ([2,1]×[1,3] batches): the stock kernel, untransposed.
      const prod = stock({ ...args, inputs: { a, b }, attrs: { ...args.attrs, transposeA: false, transposeB: false } });
      return asTensor(prod as tf.TensorInfo);
    }
    return tf.reshape(out, [...outer, m, n]);
  });
}
