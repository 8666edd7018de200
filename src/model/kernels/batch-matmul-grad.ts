// The gradient of BatchMatMul, with broadcast batch dimensions summed back to each input's shape.
// Why: tfjs 4.22's own gradient returns the broadcast shape, so training any matMul that broadcasts a batch
// (x [B,T,C] × w [C,D], or [B,H,T,D] × [H,D,E]) throws "gradient … does not match the shape of the input" on
// every backend. Backend-independent: installed once by initBackend.
import * as tf from '@tensorflow/tfjs-core';

/** `g` summed over the axes along which `shape` was broadcast to reach g's shape. */
function unbroadcast(g: tf.Tensor, shape: number[]): tf.Tensor {
  if (tf.util.arraysEqual(g.shape, shape)) return g;
  const axes = tf.backend_util.getReductionAxes(shape, g.shape);
  return tf.reshape(axes.length ? tf.sum(g, axes) : g, shape);
}

export const batchMatMulGradConfig: tf.GradConfig = {
  kernelName: 'BatchMatMul',
  inputsToSave: ['a', 'b'],
  gradFunc: (dy, saved, attrs) => {
    const [a, b] = saved;
    const { transposeA, transposeB } = attrs as unknown as tf.BatchMatMulAttrs;
    const g = dy as tf.Tensor;
    // y = op(a)·op(b); the four cases of which operand enters transposed.
    const [da, db] = !transposeA && !transposeB ? [() => tf.matMul(g, b, false, true), () => tf.matMul(a, g, true, false)]
      : !transposeA ? [() => tf.matMul(g, b), () => tf.matMul(g, a, true, false)]
      : !transposeB ? [() => tf.matMul(b, g, false, true), () => tf.matMul(a, g)]
      : [() => tf.matMul(b, g, true, true), () => tf.matMul(g, a, true, true)];
    return { a: () => unbroadcast(da(), a.shape), b: () => unbroadcast(db(), b.shape) };
  },
};

/** Replaces tfjs's BatchMatMul gradient (idempotent). */
export function useBatchMatMulGrad(): void {
  if (tf.getGradient('BatchMatMul') === batchMatMulGradConfig) return;
  tf.unregisterGradient('BatchMatMul');
  tf.registerGradient(batchMatMulGradConfig);
}
