// Gaussian diffusion math shared by the prior and the decoder: noise schedules, noising, the x0 ⇄ ε identities,
// the DDPM posterior step, the DDIM step and classifier-free guidance.
//
// Schedules are plain Float64Arrays computed in JS; per-timestep coefficients are computed there too and only the
// final multiply-adds run as tensor ops. A timestep t is an index 0…T-1; ᾱ at t = -1 is 1 (the clean sample), so
// the last sampling step goes from the smallest sampled t to x0 with the same formulas as every other step.
import * as tf from '@tensorflow/tfjs-core';
import { z } from 'zod';

export const ScheduleKind = z.enum(['cosine', 'linear']);
export type ScheduleKind = z.infer<typeof ScheduleKind>;

export interface NoiseSchedule {
  readonly kind: ScheduleKind;
  /** Number of diffusion steps T. */
  readonly timesteps: number;
  readonly betas: Float64Array;
  readonly alphas: Float64Array;
  /** ᾱ_t = ∏_{s≤t} (1 - β_s). */
  readonly alphasCumprod: Float64Array;
}

/** ᾱ(t) of the cosine schedule in closed form (Nichol & Dhariwal 2021, eq. 17), for t in [0, T]. */
export function cosineAlphaBar(t: number, timesteps: number, s = 0.008): number {
  const f = (u: number) => Math.cos(((u / timesteps + s) / (1 + s)) * (Math.PI / 2)) ** 2;
  return f(t) / f(0);
}

/** Cosine schedule: β_t = 1 - ᾱ(t+1)/ᾱ(t), clipped at maxBeta so the last steps stay finite. */
export function cosineBetaSchedule(timesteps: number, s = 0.008, maxBeta = 0.999): Float64Array {
  const betas = new Float64Array(timesteps);
  for (let t = 0; t < timesteps; t++) {
    betas[t] = Math.min(1 - cosineAlphaBar(t + 1, timesteps, s) / cosineAlphaBar(t, timesteps, s), maxBeta);
  }
  return betas;
}

/** Linear schedule of Ho et al. (1e-4 … 0.02 at T = 1000), rescaled by 1000/T so any T spans the same noise. */
export function linearBetaSchedule(timesteps: number, start = 1e-4, end = 0.02): Float64Array {
  const scale = 1000 / timesteps;
  const betas = new Float64Array(timesteps);
  for (let t = 0; t < timesteps; t++) {
    betas[t] = scale * start + (timesteps === 1 ? 0 : ((scale * end - scale * start) * t) / (timesteps - 1));
  }
  return betas;
}

export function makeSchedule(kind: ScheduleKind, timesteps: number): NoiseSchedule {
  if (!Number.isInteger(timesteps) || timesteps < 1) throw new Error(`timesteps must be a positive integer, got ${timesteps}`);
  const betas = kind === 'cosine' ? cosineBetaSchedule(timesteps) : linearBetaSchedule(timesteps);
  const alphas = betas.map((b) => 1 - b);
  const alphasCumprod = new Float64Array(timesteps);
  let prod = 1;
  for (let t = 0; t < timesteps; t++) alphasCumprod[t] = prod *= alphas[t];
  return { kind, timesteps, betas, alphas, alphasCumprod };
}

/** ᾱ_t, with ᾱ_{-1} = 1. */
export function alphaBar(schedule: NoiseSchedule, t: number): number {
  if (t < 0) return 1;
  if (t >= schedule.timesteps || !Number.isInteger(t)) throw new Error(`timestep ${t} outside 0…${schedule.timesteps - 1}`);
  return schedule.alphasCumprod[t];
}

/**
 * Evenly spaced timesteps for sampling with fewer steps than T, largest first, always starting at T-1
 * and ending at 0 (DDIM's "uniform" subsequence).
 */
export function samplingTimesteps(timesteps: number, steps: number): number[] {
  if (!Number.isInteger(steps) || steps < 1 || steps > timesteps) throw new Error(`sampling steps must be an integer in 1…${timesteps}, got ${steps}`);
  if (steps === 1) return [timesteps - 1];
  const ts = new Set<number>();
  for (let i = 0; i < steps; i++) ts.add(Math.round((i * (timesteps - 1)) / (steps - 1)));
  return [...ts].sort((a, b) => b - a);
}

/**
 * A coefficient that is either one number for the whole batch (sampling) or one number per example along
 * axis 0 (training, where every example has its own t).
 */
export type Coefficient = number | ArrayLike<number>;

function coef(c: Coefficient, f: (a: number) => number, rank: number): number | tf.Tensor {
  if (typeof c === 'number') return f(c);
  const values = Float32Array.from(c, f);
  return tf.tensor(values, [values.length, ...new Array<number>(rank - 1).fill(1)]);
}

const mulAdd = (a: number | tf.Tensor, x: tf.Tensor, b: number | tf.Tensor, y: tf.Tensor): tf.Tensor => tf.add(tf.mul(x, a), tf.mul(y, b));

/** q(x_t | x_0): √ᾱ·x0 + √(1-ᾱ)·ε. `abar` is ᾱ_t (one number, or one per example). */
export function qSample(x0: tf.Tensor, noise: tf.Tensor, abar: Coefficient): tf.Tensor {
  return tf.tidy(() => mulAdd(coef(abar, Math.sqrt, x0.rank), x0, coef(abar, (a) => Math.sqrt(1 - a), x0.rank), noise));
}

/** x0 = (x_t - √(1-ᾱ)·ε) / √ᾱ. */
export function x0FromEps(xt: tf.Tensor, eps: tf.Tensor, abar: Coefficient): tf.Tensor {
  return tf.tidy(() => mulAdd(coef(abar, (a) => 1 / Math.sqrt(a), xt.rank), xt, coef(abar, (a) => -Math.sqrt((1 - a) / a), xt.rank), eps));
}

/** ε = (x_t - √ᾱ·x0) / √(1-ᾱ). */
export function epsFromX0(xt: tf.Tensor, x0: tf.Tensor, abar: Coefficient): tf.Tensor {
  return tf.tidy(() => mulAdd(coef(abar, (a) => 1 / Math.sqrt(1 - a), xt.rank), xt, coef(abar, (a) => -Math.sqrt(a / (1 - a)), xt.rank), x0));
}

/**
 * The v-parameterisation (Salimans & Ho 2022): v = √ᾱ·ε - √(1-ᾱ)·x0. A network that predicts v gives x0 with
 * coefficients ≤ 1 at every t, where x0 from a predicted ε is amplified by 1/√ᾱ (→ ∞ as t → T): at high noise a
 * small ε error becomes a large x0 error, which sampling then never removes.
 */
export function vFromX0Eps(x0: tf.Tensor, eps: tf.Tensor, abar: Coefficient): tf.Tensor {
  return tf.tidy(() => mulAdd(coef(abar, Math.sqrt, x0.rank), eps, coef(abar, (a) => -Math.sqrt(1 - a), x0.rank), x0));
}

/** x0 = √ᾱ·x_t - √(1-ᾱ)·v. */
export function x0FromV(xt: tf.Tensor, v: tf.Tensor, abar: Coefficient): tf.Tensor {
  return tf.tidy(() => mulAdd(coef(abar, Math.sqrt, xt.rank), xt, coef(abar, (a) => -Math.sqrt(1 - a), xt.rank), v));
}

/**
 * The DDPM posterior q(x_prev | x_t, x0) between any two timesteps (prev < t), so a respaced subsequence works too:
 * with β = 1 - ᾱ_t/ᾱ_prev, mean = coefX0·x0 + coefXt·x_t and variance = β(1-ᾱ_prev)/(1-ᾱ_t).
 */
export function ddpmPosterior(abarT: number, abarPrev: number): { coefX0: number; coefXt: number; variance: number } {
  const beta = 1 - abarT / abarPrev;
  return {
    coefX0: (Math.sqrt(abarPrev) * beta) / (1 - abarT),
    coefXt: (Math.sqrt(1 - beta) * (1 - abarPrev)) / (1 - abarT),
    variance: (beta * (1 - abarPrev)) / (1 - abarT),
  };
}

/** One ancestral DDPM step: a draw from q(x_prev | x_t, x0) given the predicted x0 and standard normal noise. */
export function ddpmStep(xt: tf.Tensor, x0: tf.Tensor, abarT: number, abarPrev: number, noise: tf.Tensor): tf.Tensor {
  const { coefX0, coefXt, variance } = ddpmPosterior(abarT, abarPrev);
  return tf.tidy(() => tf.add(mulAdd(coefX0, x0, coefXt, xt), tf.mul(noise, Math.sqrt(variance))));
}

/** DDIM's σ for a step t → prev (Song et al. 2021, eq. 16): η = 0 is deterministic, η = 1 is the DDPM posterior. */
export function ddimSigma(abarT: number, abarPrev: number, eta: number): number {
  return eta * Math.sqrt(((1 - abarPrev) / (1 - abarT)) * (1 - abarT / abarPrev));
}

/** One DDIM step: x_prev = √ᾱ_prev·x0 + √(1-ᾱ_prev-σ²)·ε + σ·z. `noise` may be omitted when σ = 0. */
export function ddimStep(x0: tf.Tensor, eps: tf.Tensor, abarPrev: number, sigma: number, noise?: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const mean = mulAdd(Math.sqrt(abarPrev), x0, Math.sqrt(Math.max(1 - abarPrev - sigma * sigma, 0)), eps);
    if (sigma === 0) return mean;
    if (!noise) throw new Error('ddimStep with σ > 0 needs noise');
    return tf.add(mean, tf.mul(noise, sigma));
  });
}

/** Classifier-free guidance: uncond + scale·(cond - uncond); scale 1 is the conditional model alone. */
export function classifierFreeGuidance(cond: tf.Tensor, uncond: tf.Tensor, scale: number): tf.Tensor {
  return tf.tidy(() => tf.add(uncond, tf.mul(tf.sub(cond, uncond), scale)));
}

/**
 * Which examples keep their conditioning in a training batch (classifier-free guidance): 1 = keep, 0 = drop,
 * each dropped with probability `dropProb`, drawn from `rng`-style uniform floats so the mask follows the seed.
 */
export function keepMask(batch: number, dropProb: number, uniform: () => number): Float32Array {
  const mask = new Float32Array(batch);
  for (let i = 0; i < batch; i++) mask[i] = uniform() < dropProb ? 0 : 1;
  return mask;
}

/**
 * Classifier-free-guidance dropout: row i of x where keep[i] = 1, the (learned) null value where keep[i] = 0.
 * `nul` broadcasts against one row of x (e.g. [D] for x [B, D], [K, C] for x [B, K, C]).
 */
export function replaceDropped<T extends tf.Tensor>(x: T, nul: tf.Tensor, keep: Float32Array): T {
  if (keep.length !== x.shape[0]) throw new Error(`keep mask has ${keep.length} entries for a batch of ${x.shape[0]}`);
  return tf.tidy(() => {
    const k = tf.tensor(keep, [keep.length, ...new Array<number>(x.rank - 1).fill(1)]);
    return tf.add(tf.mul(x, k), tf.mul(nul, tf.sub(1, k)));
  }) as T;
}
