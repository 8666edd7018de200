// Exponential moving average of a model's weights (used for sampling from the prior and the decoder).
// The effective decay warms up as min(decay, (1 + n) / (10 + n)) after n updates, so a short run's average is not
// dominated by the random initialisation; n comes from the caller's step counter, so a resume needs no extra state.
import * as tf from '@tensorflow/tfjs-core';

export function emaDecayAt(decay: number, updates: number): number {
  return Math.min(decay, (1 + updates) / (10 + updates));
}

export class Ema {
  /** Shadow weights, same names and order as the model's params(). */
  readonly shadow: Map<string, tf.Variable>;

  constructor(params: Map<string, tf.Variable>) {
    this.shadow = new Map([...params].map(([name, v]) => [name, tf.variable(v, false)]));
  }

  /** shadow ← shadow − (1 − d)(shadow − w), with d = emaDecayAt(decay, updates). */
  update(params: Map<string, tf.Variable>, decay: number, updates: number): void {
    const d = emaDecayAt(decay, updates);
    tf.tidy(() => {
      for (const [name, v] of params) {
        const s = this.shadow.get(name)!;
        s.assign(tf.sub(s, tf.mul(tf.sub(s, v), 1 - d)));
      }
    });
  }

  /** Copies the averaged weights into `params` (e.g. to sample with them). */
  copyTo(params: Map<string, tf.Variable>): void {
    for (const [name, v] of params) v.assign(this.shadow.get(name)!);
  }

  dispose(): void {
    tf.dispose([...this.shadow.values()]);
  }
}
