// Finite-difference checks of model parameters' gradients, shared by the model tests.
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';

/**
 * For each named parameter, at its entry with the largest analytic gradient (for an embedding table: a row that
 * is used), compares the gradient of `loss` with the central difference of step `h`: |numeric − analytic| ≤
 * rtol·|analytic| + 1e-4. With `requireGradient`, that entry's gradient must also exceed 1e-4 (a parameter the
 * loss does not reach fails instead of passing trivially).
 */
export function checkParamGradients(
  params: Map<string, tf.Variable>,
  loss: () => tf.Scalar,
  names: string[],
  { h = 1e-2, rtol = 0.05, requireGradient = false }: { h?: number; rtol?: number; requireGradient?: boolean } = {},
): void {
  const { value, grads } = tf.variableGrads(loss, names.map((n) => params.get(n)!));
  try {
    for (const name of names) {
      const v = params.get(name)!;
      const g = grads[v.name].dataSync();
      let i = 0;
      for (let j = 1; j < g.length; j++) if (Math.abs(g[j]) > Math.abs(g[i])) i = j;
      const original = v.dataSync().slice();
      const at = (delta: number) => {
        const values = original.slice();
        values[i] += delta;
        v.assign(tf.tensor(values, v.shape));
        return tf.tidy(() => loss().dataSync()[0]);
      };
      const numeric = (at(h) - at(-h)) / (2 * h);
      v.assign(tf.tensor(original, v.shape));
      if (requireGradient) assert.ok(Math.abs(g[i]) > 1e-4, `${name} has a gradient`);
      assert.ok(Math.abs(numeric - g[i]) <= rtol * Math.abs(g[i]) + 1e-4, `${name}[${i}]: analytic ${g[i]}, numeric ${numeric}`);
    }
  } finally {
    tf.dispose([value, ...Object.values(grads)]);
  }
}
