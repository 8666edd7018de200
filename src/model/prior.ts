// The unCLIP diffusion prior: turns a CLIP text embedding (and the caption's tokens) into a CLIP image embedding.
//
// A decoder-only (causal) transformer reads one sequence per example (Ramesh et al. 2022, §2.2):
//   [caption tokens…, text embedding, timestep, noised image embedding, learned query]
// and the output at the query position is the prediction of the CLEAN image embedding (x0-prediction, as in
// DALL·E 2 / DALLE2-pytorch; the loss is the MSE to it). Embeddings are L2-normalised by CLIP, so they are scaled
// by √D inside the prior: each coordinate then has about unit variance, like the diffusion noise.
// For classifier-free guidance, the text conditioning (tokens and text embedding together) is replaced by learned
// null values for `condDrop` of the training examples. Sampling runs DDIM with few steps and guidance, draws
// `candidates` embeddings per caption and keeps the one with the largest dot product with the text embedding.
//
// Shape letters: B batch, D CLIP embedding width, K caption tokens, W transformer width, S = K + 4 sequence length.
import * as tf from '@tensorflow/tfjs-core';
import { z } from 'zod';
import { Embedding, LayerNorm, Linear, ParamStore, PositionalEmbedding, Transformer, gelu, l2Normalize, timestepEmbedding } from './nn.ts';
import {
  alphaBar,
  classifierFreeGuidance,
  ddimSigma,
  ddimStep,
  epsFromX0,
  keepMask,
  makeSchedule,
  qSample,
  replaceDropped,
  samplingTimesteps,
  ScheduleKind,
  type NoiseSchedule,
} from './diffusion.ts';
import { PAD, VOCAB_SIZE } from './tokenizer.ts';
import { Rng } from '../util/rng.ts';

export const PriorConfig = z
  .object({
    embedDim: z.number().int().min(1).default(64).describe('CLIP embedding width D (must equal the CLIP model’s)'),
    width: z.number().int().min(1).default(128).describe('width of the prior transformer'),
    layers: z.number().int().min(1).default(3).describe('blocks of the prior transformer'),
    heads: z.number().int().min(1).default(4).describe('attention heads; must divide width'),
    captionTokens: z.boolean().default(true).describe('put the caption tokens in the sequence (otherwise only the text embedding conditions)'),
    contextLength: z.number().int().min(2).default(48).describe('caption tokens per example (the tokenizer context length, as in CLIP)'),
    timesteps: z.number().int().min(1).default(1000).describe('diffusion steps T in training'),
    schedule: ScheduleKind.default('cosine').describe('noise schedule: cosine (Nichol & Dhariwal) or linear (Ho et al.)'),
    condDrop: z.number().min(0).max(1).default(0.1).describe('fraction of training examples whose text conditioning is dropped (classifier-free guidance)'),
  })
  .superRefine((c, ctx) => {
    if (c.width % c.heads !== 0) ctx.addIssue({ code: 'custom', path: ['heads'], message: `heads ${c.heads} must divide width ${c.width}` });
  });
export type PriorConfig = z.infer<typeof PriorConfig>;

export interface PriorBatch {
  /** int32 [B, K] caption tokens (ignored unless captionTokens; absent = tokens replaced by the null tokens). */
  tokens?: tf.Tensor2D;
  /** [B, D] CLIP text embeddings. */
  textEmb: tf.Tensor2D;
  /** [B, D] CLIP image embeddings: the targets. */
  imageEmb: tf.Tensor2D;
}

export interface PriorSampleOptions {
  steps: number;
  /** Classifier-free guidance scale: 1 = conditional model alone, 0 = unconditional, > 1 = guided. */
  guidance: number;
  seed: number;
  /** DDIM's η (default 0: deterministic given the starting noise). */
  eta?: number;
  /** Embeddings drawn per caption; the one most aligned with the text embedding is kept (default 2). */
  candidates?: number;
}

/**
 * Of n candidate embeddings per caption (rows c·B + i, c < n, for caption i of B), the one with the largest dot
 * product with the caption's text embedding: [n·B, D] → [B, D] (unCLIP's choice among 2 samples).
 */
export function pickMostAligned(candidates: tf.Tensor2D, textEmb: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const b = textEmb.shape[0];
    const n = candidates.shape[0] / b;
    if (!Number.isInteger(n) || n < 1) throw new Error(`${candidates.shape[0]} candidates do not split evenly over ${b} captions`);
    const scores = tf.sum(tf.mul(candidates, tf.tile(textEmb, [n, 1])), 1).dataSync(); // [n·B]
    const pick = new Int32Array(b);
    for (let i = 0; i < b; i++) for (let c = 1; c < n; c++) if (scores[c * b + i] > scores[pick[i] * b + i]) pick[i] = c;
    return tf.gather(candidates, Int32Array.from(pick, (c, i) => c * b + i)) as tf.Tensor2D;
  });
}

export class DiffusionPrior {
  readonly config: PriorConfig;
  readonly schedule: NoiseSchedule;
  private readonly ps: ParamStore;
  /** √D: CLIP embeddings are unit vectors; the diffusion runs on √D·embedding. */
  private readonly scale: number;
  private readonly tokenEmb?: Embedding;
  private readonly nullTokens?: tf.Variable;
  private readonly textIn: Linear;
  private readonly nullTextEmb: tf.Variable;
  private readonly timeIn: Linear;
  private readonly timeOut: Linear;
  private readonly imageIn: Linear;
  private readonly query: tf.Variable;
  private readonly pos: PositionalEmbedding;
  private readonly transformer: Transformer;
  private readonly lnFinal: LayerNorm;
  private readonly out: Linear;

  constructor(config: Partial<PriorConfig> | PriorConfig, seed: number, vocabSize = VOCAB_SIZE) {
    const cfg = (this.config = PriorConfig.parse(config));
    this.schedule = makeSchedule(cfg.schedule, cfg.timesteps);
    this.scale = Math.sqrt(cfg.embedDim);
    const ps = (this.ps = new ParamStore(seed));
    const w = cfg.width;
    if (cfg.captionTokens) {
      this.tokenEmb = new Embedding(ps.scope('tokens'), vocabSize, w);
      this.nullTokens = ps.normal('tokens.null', [cfg.contextLength, w]);
    }
    this.textIn = new Linear(ps.scope('text'), cfg.embedDim, w);
    this.nullTextEmb = ps.normal('text.null', [cfg.embedDim], 1);
    this.timeIn = new Linear(ps.scope('time.in'), w, w);
    this.timeOut = new Linear(ps.scope('time.out'), w, w);
    this.imageIn = new Linear(ps.scope('image'), cfg.embedDim, w);
    this.query = ps.normal('query', [w]);
    this.pos = new PositionalEmbedding(ps.scope('pos'), this.sequenceLength, w);
    this.transformer = new Transformer(ps, { width: w, layers: cfg.layers, heads: cfg.heads });
    this.lnFinal = new LayerNorm(ps.scope('ln_final'), w);
    this.out = new Linear(ps.scope('out'), w, cfg.embedDim);
  }

  params(): Map<string, tf.Variable> {
    return this.ps.vars;
  }

  /** S: caption tokens (if any) + text embedding + timestep + noised image embedding + query. */
  get sequenceLength(): number {
    return (this.config.captionTokens ? this.config.contextLength : 0) + 4;
  }

  /**
   * Predicted clean (√D-scaled) image embeddings [B, D] for noised ones x at timesteps t. `keep` holds 1 (use the
   * text conditioning) or 0 (replace tokens and text embedding by the learned nulls) per example.
   */
  private denoise(x: tf.Tensor2D, t: ArrayLike<number>, tokens: tf.Tensor2D | undefined, textEmb: tf.Tensor2D, keep: Float32Array): tf.Tensor2D {
    const cfg = this.config;
    const b = x.shape[0];
    const w = cfg.width;
    const parts: tf.Tensor3D[] = [];
    let keyMask: tf.Tensor2D | undefined;
    if (this.tokenEmb) {
      const nullTokens = tf.broadcastTo(this.nullTokens!, [b, cfg.contextLength, w]) as tf.Tensor3D;
      if (tokens) {
        parts.push(replaceDropped(this.tokenEmb.apply(tokens), nullTokens, keep));
        // Padding after EOS is ignored; a dropped caption's null tokens are all attended to.
        const notPad = tf.cast(tf.notEqual(tokens, PAD), 'float32');
        keyMask = tf.concat([replaceDropped(notPad, tf.onesLike(notPad), keep), tf.ones([b, 4])], 1) as tf.Tensor2D;
      } else {
        parts.push(nullTokens);
      }
    }
    const text = replaceDropped(tf.mul(textEmb, this.scale) as tf.Tensor2D, this.nullTextEmb, keep);
    const time = this.timeOut.apply(gelu(this.timeIn.apply(timestepEmbedding(tf.tensor1d(Float32Array.from(t)), w))));
    const asToken = (v: tf.Tensor2D) => tf.reshape(v, [b, 1, w]) as tf.Tensor3D;
    parts.push(asToken(this.textIn.apply(text)), asToken(time), asToken(this.imageIn.apply(x)));
    parts.push(tf.broadcastTo(tf.reshape(this.query, [1, 1, w]), [b, 1, w]) as tf.Tensor3D);
    const h = this.transformer.apply(this.pos.apply(tf.concat(parts, 1) as tf.Tensor3D), { causal: true, keyMask });
    const last = tf.reshape(tf.slice(h, [0, this.sequenceLength - 1, 0], [b, 1, w]), [b, w]) as tf.Tensor2D;
    return this.out.apply(this.lnFinal.apply(last));
  }

  private check(tokens: tf.Tensor2D | undefined, textEmb: tf.Tensor2D, other?: tf.Tensor2D): void {
    const { embedDim, contextLength } = this.config;
    const b = textEmb.shape[0];
    if (textEmb.shape[1] !== embedDim) throw new Error(`prior got text embeddings of width ${textEmb.shape[1]}, config embedDim is ${embedDim}`);
    if (other && (other.shape[0] !== b || other.shape[1] !== embedDim)) throw new Error(`prior got image embeddings of shape [${other.shape}], expected [${b}, ${embedDim}] (config embedDim)`);
    if (tokens && this.config.captionTokens && (tokens.shape[0] !== b || tokens.shape[1] !== contextLength)) {
      throw new Error(`prior got caption tokens of shape [${tokens.shape}], expected [${b}, ${contextLength}] (config contextLength)`);
    }
  }

  /** Timesteps, which examples keep their text conditioning, and the noise seed of a training batch. */
  trainingDraws(batch: number, seed: number): { t: Int32Array; keep: Float32Array; noiseSeed: number } {
    const rng = new Rng(seed);
    const t = Int32Array.from({ length: batch }, () => rng.int(this.config.timesteps));
    const keep = keepMask(batch, this.config.condDrop, () => rng.float());
    return { t, keep, noiseSeed: rng.seed() };
  }

  /** MSE between the clean (√D-scaled) image embedding and its prediction from a noised one. */
  loss(batch: PriorBatch, seed: number): tf.Scalar {
    const { tokens, textEmb, imageEmb } = batch;
    this.check(tokens, textEmb, imageEmb);
    const { t, keep, noiseSeed } = this.trainingDraws(imageEmb.shape[0], seed);
    return tf.tidy(() => {
      const x0 = tf.mul(imageEmb, this.scale);
      const noise = tf.randomNormal(x0.shape, 0, 1, 'float32', noiseSeed);
      const xt = qSample(x0, noise, Array.from(t, (ti) => alphaBar(this.schedule, ti))) as tf.Tensor2D;
      return tf.mean(tf.square(tf.sub(this.denoise(xt, t, tokens, textEmb, keep), x0))) as tf.Scalar;
    });
  }

  /**
   * The predicted clean image embedding for noised (√D-scaled) x at one timestep t, fully conditioned.
   * For inspection and tests; training and sampling go through loss() and sample().
   */
  predictClean(x: tf.Tensor2D, t: number, cond: { tokens?: tf.Tensor2D; textEmb: tf.Tensor2D }): tf.Tensor2D {
    this.check(cond.tokens, cond.textEmb, x);
    return tf.tidy(() => this.denoise(x, new Array<number>(x.shape[0]).fill(t), cond.tokens, cond.textEmb, new Float32Array(x.shape[0]).fill(1)));
  }

  /**
   * CLIP image embeddings [B, D] (unit length) for captions, by DDIM over `steps` timesteps with classifier-free
   * guidance; of `candidates` draws per caption the one with the largest dot product with its text embedding wins.
   */
  sample(cond: { tokens?: tf.Tensor2D; textEmb: tf.Tensor2D }, opts: PriorSampleOptions): tf.Tensor2D {
    this.check(cond.tokens, cond.textEmb);
    const b = cond.textEmb.shape[0];
    const n = opts.candidates ?? 2;
    const eta = opts.eta ?? 0;
    const guided = opts.guidance !== 1;
    const ts = samplingTimesteps(this.config.timesteps, opts.steps);
    const rng = new Rng(opts.seed);
    // Rows: candidate c of caption i at c·B + i; with guidance, the same rows again, unconditioned.
    const copies = guided ? 2 * n : n;
    const tokens = cond.tokens ? (tf.tile(cond.tokens, [copies, 1]) as tf.Tensor2D) : undefined;
    const textEmb = tf.tile(cond.textEmb, [copies, 1]) as tf.Tensor2D;
    const keep = Float32Array.from({ length: copies * b }, (_, i) => (i < n * b ? 1 : 0));
    let x = tf.randomNormal([n * b, this.config.embedDim], 0, 1, 'float32', rng.seed()) as tf.Tensor2D;
    for (let i = 0; i < ts.length; i++) {
      const abarT = alphaBar(this.schedule, ts[i]);
      const abarPrev = alphaBar(this.schedule, i + 1 < ts.length ? ts[i + 1] : -1);
      const noiseSeed = rng.seed();
      const next = tf.tidy(() => {
        const input = guided ? (tf.concat([x, x], 0) as tf.Tensor2D) : x;
        let x0 = this.denoise(input, new Array<number>(copies * b).fill(ts[i]), tokens, textEmb, keep);
        if (guided) {
          const [c, u] = tf.split(x0, 2, 0);
          x0 = classifierFreeGuidance(c, u, opts.guidance) as tf.Tensor2D;
        }
        const sigma = ddimSigma(abarT, abarPrev, eta);
        const noise = sigma > 0 ? tf.randomNormal(x.shape, 0, 1, 'float32', noiseSeed) : undefined;
        return ddimStep(x0, epsFromX0(x, x0, abarT), abarPrev, sigma, noise) as tf.Tensor2D;
      });
      x.dispose();
      x = next;
    }
    tf.dispose([tokens, textEmb]);
    const best = tf.tidy(() => pickMostAligned(l2Normalize(x), cond.textEmb)); // at t = -1, x is the last x0
    x.dispose();
    return best;
  }
}
