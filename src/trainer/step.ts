// One optimisation step, shared by the single-process loop and the distributed trainer:
//   gradients of the loss w.r.t. the params (in params() order) → one flat Float32Array → `reduce`
//   (identity here, ring all-reduce over NATS in a distributed run, which also averages over ranks)
//   → a NaN/Inf anywhere skips the step → clip to a maximum global norm → rebuild per-param tensors
//   → optimizer.applyGradients.
// Skipping and clipping act on the *reduced* vector, so every rank of a distributed run sees the same NaN, the
// same norm and the same scale, and the ranks' weights stay identical.
import * as tf from '@tensorflow/tfjs-core';
import type { NamedTensor } from '@tensorflow/tfjs-core/dist/tensor_types.js';

export type Reduce = (flat: Float32Array) => Promise<Float32Array>;

/** The single-process `reduce`: this process is the whole world. */
export const identityReduce: Reduce = async (flat) => flat;

export interface StepInput {
  /** The trainable variables, in the model's params() order (the order of the flat gradient vector). */
  params: Map<string, tf.Variable>;
  /** The scalar loss; called under tf.variableGrads, so its intermediates are freed. */
  loss: () => tf.Scalar;
  optimizer: tf.Optimizer;
  reduce: Reduce;
  /** Learning rate for this step (from the LR schedule). */
  learningRate: number;
  /** Decoupled (AdamW-style) weight decay per unit learning rate, applied to matrices and kernels (rank ≥ 2). */
  weightDecay?: number;
  /** Largest global L2 norm of the applied gradient; a larger one is scaled down to it (0 or absent: no clipping). */
  clipGradNorm?: number;
}

export interface StepResult {
  /** This process's loss before the update. */
  loss: number;
  /** L2 norm of the reduced gradient before clipping (NaN when skipped). */
  gradNorm: number;
  /** True when the reduced gradient held a NaN or Inf and nothing was updated. */
  skipped: boolean;
}

/** Total number of scalars in params, i.e. the length of the flat gradient vector. */
export function paramCount(params: Map<string, tf.Variable>): number {
  let n = 0;
  for (const v of params.values()) n += v.size;
  return n;
}

/** Gradients of `loss` as one flat vector in params() order; a param the loss does not touch contributes zeros. */
export function flatGradients(params: Map<string, tf.Variable>, loss: () => tf.Scalar): { loss: number; flat: Float32Array } {
  const vars = [...params.values()];
  const { value, grads } = tf.variableGrads(loss, vars);
  try {
    const flat = new Float32Array(paramCount(params));
    let offset = 0;
    for (const v of vars) {
      const g = grads[v.name];
      if (g) flat.set(g.dataSync() as Float32Array, offset);
      offset += v.size;
    }
    return { loss: value.dataSync()[0], flat };
  } finally {
    value.dispose();
    tf.dispose(Object.values(grads));
  }
}

/** Sum of squares, or NaN if any element is NaN or ±Inf. */
function finiteNormSquared(flat: Float32Array): number {
  let s = 0;
  for (let i = 0; i < flat.length; i++) s += flat[i] * flat[i];
  return Number.isFinite(s) ? s : NaN;
}

/**
 * The factor that brings a gradient of L2 norm `norm` down to at most `maxNorm` (global-norm clipping, as
 * PyTorch's clip_grad_norm_): 1 when it is already within, or when `maxNorm` is 0 (off).
 */
export function clipScale(norm: number, maxNorm: number): number {
  return maxNorm > 0 && norm > maxNorm ? maxNorm / norm : 1;
}

/** tfjs's Adam reads its learning rate at every applyGradients; the field is protected, not readonly. */
export function setLearningRate(optimizer: tf.Optimizer, lr: number): void {
  (optimizer as unknown as { learningRate: number }).learningRate = lr;
}

/** Applies a flat (already reduced) gradient vector to params through the optimizer. */
export function applyFlatGradients(params: Map<string, tf.Variable>, flat: Float32Array, optimizer: tf.Optimizer): void {
  const named: NamedTensor[] = [];
  let offset = 0;
  for (const v of params.values()) {
    named.push({ name: v.name, tensor: tf.tensor(flat.subarray(offset, offset + v.size), v.shape, 'float32') });
    offset += v.size;
  }
  if (offset !== flat.length) throw new Error(`gradient vector has ${flat.length} values, the params need ${offset}`);
  try {
    // An array (not a name map) keeps Adam's moments positional, in params() order.
    optimizer.applyGradients(named);
  } finally {
    tf.dispose(named.map((n) => n.tensor));
  }
}

export async function trainStep(input: StepInput): Promise<StepResult> {
  const { params, optimizer } = input;
  const local = flatGradients(params, input.loss);
  const flat = await input.reduce(local.flat);
  const normSq = finiteNormSquared(flat);
  if (Number.isNaN(normSq)) return { loss: local.loss, gradNorm: NaN, skipped: true };
  const norm = Math.sqrt(normSq);
  const scale = clipScale(norm, input.clipGradNorm ?? 0);
  // A copy: `reduce` may hand back a buffer it still owns (the identity reduce returns the local gradient).
  const applied = scale === 1 ? flat : flat.map((g) => g * scale);

  setLearningRate(optimizer, input.learningRate);
  applyFlatGradients(params, applied, optimizer);
  const decay = (input.weightDecay ?? 0) * input.learningRate;
  if (decay > 0) {
    tf.tidy(() => {
      for (const v of params.values()) if (v.rank >= 2) v.assign(tf.mul(v, 1 - decay));
    });
  }
  return { loss: local.loss, gradNorm: norm, skipped: false };
}
