// BatchMatMul rewritten so every product reaches one of wasm's fast (XNNPACK) paths.
// Why: the stock wasm kernel runs ~20–30 GFLOP/s only for a plain (untransposed, unbatched) 2-D product; with
// transposeA/transposeB (which matMul's own gradient always uses) or a batch dimension it falls back to a scalar
// loop at 1–3 GFLOP/s. So: transpose explicitly (a copy costs far less than the slow product), fold a shared
// operand's batch into one 2-D product, and run products batched on both sides as one depthwise convolution.
import * as tf from '@tensorflow/tfjs-core';
import { asTensor, type KernelArgs } from './replace.ts';

const size = (dims: number[]) => dims.reduce((a, b) => a * b, 1);

/** The matrix transpose of the last two axes, materialised. */
function transposeLast2(x: tf.Tensor): tf.Tensor {
  const perm = x.shape.map((_, i) => i);
  [perm[x.rank - 2], perm[x.rank - 1]] = [perm[x.rank - 1], perm[x.rank - 2]];
  return tf.transpose(x, perm);
}

/**
 * C_i = op(A_i)·op(B_i) for every batch i, as one depthwise conv: batch i is channel i, A_i's rows are image rows,
 * its k columns are a 1×k window, and B_i [k, n] is channel i's filter with channel multiplier n:
 * out[0, r, 0, i·n + q] = Σ_j A_i[r, j] · B_i[j, q]. The transposes that lay the operands out absorb transposeA/B.
 */
function depthwiseBatchMatMul(a: tf.Tensor, b: tf.Tensor, transposeA: boolean, transposeB: boolean, batch: number): tf.Tensor3D {
  const [m, k] = transposeA ? [a.shape[a.rank - 1], a.shape[a.rank - 2]] : a.shape.slice(-2);
  const n = transposeB ? b.shape[b.rank - 2] : b.shape[b.rank - 1];
  const a3 = tf.reshape(a, [batch, ...a.shape.slice(-2)]), b3 = tf.reshape(b, [batch, ...b.shape.slice(-2)]);
  const image = tf.reshape(tf.transpose(a3, transposeA ? [2, 1, 0] : [1, 2, 0]), [1, m, k, batch]);
  const filter = tf.reshape(tf.transpose(b3, transposeB ? [2, 0, 1] : [1, 0, 2]), [1, k, batch, n]);
  const out = tf.depthwiseConv2d(image as tf.Tensor4D, filter as tf.Tensor4D, 1, 'valid'); // [1, m, 1, batch·n]
  return tf.transpose(tf.reshape(out, [m, batch, n]), [1, 0, 2]);
}

export function batchMatMul(args: KernelArgs, stock: tf.KernelFunc | undefined): tf.TensorInfo | tf.TensorInfo[] {
  const { transposeA, transposeB } = args.attrs as unknown as tf.BatchMatMulAttrs;
  const a0 = asTensor(args.inputs.a), b0 = asTensor(args.inputs.b);
  const outerA = a0.shape.slice(0, -2), outerB = b0.shape.slice(0, -2);
  const batchA = size(outerA), batchB = size(outerB);
  if (!stock) throw new Error('BatchMatMul: the backend has no stock kernel to build on');
  if (!transposeA && !transposeB && batchA === 1 && batchB === 1) return stock(args);
  return tf.tidy(() => {
    const outer = tf.backend_util.assertAndGetBroadcastShape(outerA, outerB);
    if (batchA === batchB && batchA > 1) {
      const out = depthwiseBatchMatMul(a0, b0, transposeA, transposeB, batchA);
      return tf.reshape(out, [...outer, ...out.shape.slice(1)]);
    }
    const a = transposeA ? transposeLast2(a0) : a0;
    const b = transposeB ? transposeLast2(b0) : b0;
    const [m, k] = a.shape.slice(-2), n = b.shape[b.rank - 1];
    let out: tf.Tensor;
    if (batchB === 1) {
      // Every batch of a meets the same b: one [batchA·m, k] × [k, n] product.
      out = tf.matMul(tf.reshape(a, [batchA * m, k]), tf.reshape(b, [k, n]));
    } else if (batchA === 1) {
      // The same a meets every batch of b: a × [k, batchB·n], batches side by side.
      const bSide = tf.reshape(tf.transpose(tf.reshape(b, [batchB, k, n]), [1, 0, 2]), [k, batchB * n]);
      const prod = tf.matMul(tf.reshape(a, [m, k]), bSide);
      out = tf.transpose(tf.reshape(prod, [m, batchB, n]), [1, 0, 2]);
    } else {
      // Partial broadcasting ([2,1]×[1,3] batches): rare; the stock kernel, untransposed.
      const prod = stock({ ...args, inputs: { a, b }, attrs: { ...args.attrs, transposeA: false, transposeB: false } });
      return asTensor(prod as tf.TensorInfo);
    }
    return tf.reshape(out, [...outer, m, n]);
  });
}
