// The unCLIP decoder: a UNet that denoises a noised image, conditioned on a CLIP image embedding (and optionally
// the caption), sampled with DDPM or DDIM and classifier-free guidance.
//
// What the UNet predicts is `objective`: the noise ε (DDPM, GLIDE, unCLIP), v = √ᾱ·ε - √(1-ᾱ)·x0 (Salimans & Ho
// 2022; the default) or the clean image x0. Sampling needs x0 at every step; from ε it is (x_t - √(1-ᾱ)·ε)/√ᾱ,
// which amplifies ε's error by up to 100× at high noise, and a laptop-scale ε-decoder's first sampling steps then
// commit to speckle. v bounds every coefficient by 1. x0 goes further: the network's output *is* the image, so an
// undertrained one gives smooth, clean (if blurry) shapes, where ε and v must learn to cancel the input noise
// pixel by pixel and leave residual speckle until they do. The demo's 400-step decoder uses x0 for that reason
// (measured on the demo data, docs/models.md); at scale ε and v are the better-studied choices.
//
// Conditioning (Ramesh et al. 2022, §2.1): the CLIP image embedding is projected and added to the timestep
// embedding, and projected into `clipTokens` extra context tokens; with `captionContext`, a small causal
// transformer encodes the caption tokens (GLIDE) and those encodings join the context. Every attention layer of
// the UNet attends to [context tokens…, pixels…], except the caption's padding (positions after EOS), which is
// masked out so that how much padding follows a caption changes nothing; the CLIP tokens are always attended. In training the CLIP embedding is replaced by a learned null
// embedding for `imageEmbDrop` of the examples and the caption encodings by learned null encodings for
// `captionDrop`, so one network also learns the unconditional model that guidance extrapolates away from.
//
// Shape letters: B batch, H×W pixels, C channels, E timestep-embedding width, D CLIP embedding width,
// L context tokens, K caption length. Images are NHWC in [-1, 1].
//
// With `lowResSize` > 0 the same UNet is an upsampler (unCLIP §2.1, DALLE2-pytorch's later unets): it also sees a
// low-resolution image — in training the data pooled down, in sampling the previous model's output — scaled up
// to its own size and stacked onto the noised image as three more input channels. In training that image is
// corrupted with Gaussian noise of a random level up to `lowResNoise` (noise-conditioning augmentation, Ho et al.
// 2021), and optionally blurred (`lowResBlur`, unCLIP's corruption for its first upsampler), so the upsampler learns
// to sharpen an imperfect image instead of trusting every pixel of a clean one: what it gets in sampling is a base
// decoder's sample, never a pooled photograph.
//
// Only rank ≤ 4 tensors: GroupNorm reshapes to [B, H*W, G, C/G]; 2× nearest upsampling is two concats and
// reshapes (no resizeNearestNeighbor, whose gradient is wrong on the cpu backend for batch > 1).
import * as tf from '@tensorflow/tfjs-core';
import { z } from 'zod';
import { Attention, Conv, Embedding, LayerNorm, Linear, ParamStore, PositionalEmbedding, timestepEmbedding, Transformer } from './nn.ts';
import {
  alphaBar,
  classifierFreeGuidance,
  ddimSigma,
  ddimStep,
  ddpmStep,
  epsFromX0,
  keepMask,
  makeSchedule,
  qSample,
  replaceDropped,
  samplingTimesteps,
  ScheduleKind,
  vFromX0Eps,
  x0FromEps,
  x0FromV,
  type NoiseSchedule,
} from './diffusion.ts';
import { PAD, VOCAB_SIZE } from './tokenizer.ts';
import { Rng } from '../util/rng.ts';

export const DecoderConfig = z.object({
  imageSize: z.number().int().min(8).default(32).describe('output image side in pixels (square); divisible by 2^(levels-1)'),
  channels: z.number().int().min(1).default(32).describe('channels of the first UNet level'),
  channelMults: z.array(z.number().int().min(1)).min(1).default([1, 2, 4]).describe('channel multiplier per resolution level (one level per entry, halving the resolution each)'),
  resBlocks: z.number().int().min(1).default(1).describe('residual blocks per level on the way down (one more on the way up)'),
  scaleShiftNorm: z
    .boolean()
    .default(false)
    .describe('residual blocks take the (timestep + CLIP) embedding as a per-channel scale and shift of their second GroupNorm (ADM’s AdaGN) instead of adding it as a bias'),
  groups: z.number().int().min(1).default(8).describe('GroupNorm groups; must divide every level’s channel count'),
  attentionHeads: z.number().int().min(1).default(4).describe('heads of the self-attention at the lowest resolution'),
  embedDim: z.number().int().min(1).default(64).describe('CLIP embedding width D (must equal the CLIP model’s)'),
  clipTokens: z.number().int().min(0).default(4).describe('extra context tokens projected from the CLIP image embedding'),
  contextDim: z.number().int().min(1).default(64).describe('width of the context tokens (CLIP tokens and caption encodings)'),
  captionContext: z.boolean().default(true).describe('encode the caption tokens and let attention attend to them (GLIDE-style)'),
  contextLength: z.number().int().min(2).default(48).describe('caption tokens per example (the tokenizer context length, as in CLIP)'),
  textLayers: z.number().int().min(0).default(1).describe('transformer layers of the caption encoder'),
  textHeads: z.number().int().min(1).default(4).describe('attention heads of the caption encoder'),
  timesteps: z.number().int().min(1).default(1000).describe('diffusion steps T in training'),
  objective: z.enum(['eps', 'v', 'x0']).default('v').describe('what the UNet predicts: the noise ε, v = √ᾱ·ε − √(1−ᾱ)·x0 (better-conditioned at high noise), or the clean image x0'),
  minSnrGamma: z.number().min(0).default(0).describe('Min-SNR-γ loss weighting (Hang et al. 2023): each example’s x0 error weighted by min(SNR, γ); 0 = off (plain MSE of the objective)'),
  snrWeightFloor: z
    .number()
    .min(0)
    .default(0)
    .describe('with minSnrGamma and objective x0 or v: lower bound of the x0-error weight, max(min(SNR, γ), floor); 1 keeps full weight on the high-noise steps that decide the layout (truncated SNR, Salimans & Ho 2022)'),
  schedule: ScheduleKind.default('cosine').describe('noise schedule: cosine (Nichol & Dhariwal) or linear (Ho et al.)'),
  imageEmbDrop: z.number().min(0).max(1).default(0.1).describe('fraction of training examples whose CLIP embedding is dropped (classifier-free guidance)'),
  captionDrop: z.number().min(0).max(1).default(0.5).describe('fraction of training examples whose caption is dropped'),
  lowResSize: z
    .number()
    .int()
    .min(0)
    .default(0)
    .describe('upsampler: side of the low-resolution image it is conditioned on, a whole fraction of imageSize (0 = a base decoder, drawing from the CLIP embedding alone)'),
  lowResNoise: z.number().min(0).max(1).default(0.2).describe('upsampler training: the low-resolution image gets Gaussian noise of a standard deviation drawn uniformly from [0, lowResNoise] per example'),
  lowResBlur: z
    .number()
    .min(0)
    .max(1)
    .default(0)
    .describe('upsampler training: the low-resolution image is first blended toward a blurred copy of itself (two 3×3 box blurs) by a weight drawn uniformly from [0, lowResBlur] per example (unCLIP’s blur augmentation); 0 = none'),
}).superRefine((c, ctx) => {
  if (c.lowResSize > 0 && (c.lowResSize >= c.imageSize || c.imageSize % c.lowResSize !== 0)) {
    ctx.addIssue({ code: 'custom', path: ['lowResSize'], message: `must be below imageSize (${c.imageSize}) and divide it, got ${c.lowResSize}` });
  }
  if (c.snrWeightFloor === 0) return;
  if (c.minSnrGamma === 0) {
    ctx.addIssue({ code: 'custom', path: ['snrWeightFloor'], message: 'only bounds the Min-SNR weight: set minSnrGamma > 0 too, or snrWeightFloor: 0' });
  } else if (c.objective === 'eps') {
    // In ε terms the floor's weight is floor / SNR: unbounded at high noise (SNR → 0 at t = T - 1).
    ctx.addIssue({ code: 'custom', path: ['snrWeightFloor'], message: "with objective 'eps' weights the loss by floor/SNR, unbounded at high noise: use objective x0 or v" });
  }
});
export type DecoderConfig = z.infer<typeof DecoderConfig>;

export interface DecoderBatch {
  /** [B, H, W, 3] in [-1, 1]. */
  images: tf.Tensor4D;
  /** [B, D] CLIP image embeddings. */
  imageEmb: tf.Tensor2D;
  /** int32 [B, K] caption tokens; ignored unless captionContext. Absent = every caption dropped. */
  tokens?: tf.Tensor2D;
  /** Upsamplers only: [B, lowResSize, lowResSize, 3] in [-1, 1], the image to draw at full size. */
  lowRes?: tf.Tensor4D;
}

/** What the decoder draws from: the CLIP image embedding, the caption (if captionContext), the low-res image (upsamplers). */
export type DecoderCondition = Omit<DecoderBatch, 'images'>;

export interface DecoderSampleOptions {
  steps: number;
  /** Classifier-free guidance scale: 1 = conditional model alone, 0 = unconditional, > 1 = guided. */
  guidance: number;
  seed: number;
  sampler: 'ddpm' | 'ddim';
  /** DDIM's η (0 = deterministic). Ignored by DDPM. */
  eta?: number;
}

const silu = <T extends tf.Tensor>(x: T): T => tf.mul(x, tf.sigmoid(x)) as T;

/**
 * The loss weight of one example at signal-to-noise ratio `snr` under Min-SNR-γ with a floor: in x0 terms the
 * weight is max(min(SNR, γ), floor). The objective's own MSE already weights its x0 error by SNR (ε), SNR + 1 (v)
 * or 1 (x0), so that factor is divided out.
 */
export function snrLossWeight(snr: number, objective: DecoderConfig['objective'], gamma: number, floor = 0): number {
  const x0Weight = Math.max(Math.min(snr, gamma), floor);
  return x0Weight / (objective === 'eps' ? snr : objective === 'v' ? snr + 1 : 1);
}

/**
 * An upsampler's training corruption of its low-res images: each example blended toward a blurred copy by its own
 * weight in [0, 1] (if `blur`), then Gaussian noise of its own σ added (noise-conditioning augmentation).
 */
export function corruptLowRes(lowRes: tf.Tensor4D, sigma: Float32Array, seed: number, blur?: Float32Array): tf.Tensor4D {
  return tf.tidy(() => {
    const perExample = (w: Float32Array) => tf.tensor4d(w, [w.length, 1, 1, 1]);
    // Two 3×3 box blurs ≈ a Gaussian of σ 1.2 px; 'same' pooling averages only the pixels inside the image.
    const blurred = blur ? tf.avgPool(tf.avgPool(lowRes, 3, 1, 'same'), 3, 1, 'same') : undefined;
    const base = blurred ? tf.add(lowRes, tf.mul(tf.sub(blurred, lowRes), perExample(blur!))) : lowRes;
    const noise = tf.randomNormal(lowRes.shape, 0, 1, 'float32', seed);
    return tf.add(base, tf.mul(noise, perExample(sigma))) as tf.Tensor4D;
  });
}

/** GroupNorm (Wu & He 2018): normalise each example over H, W and a group of C/G channels. */
class GroupNorm {
  readonly g: tf.Variable;
  readonly b: tf.Variable;

  constructor(
    ps: ParamStore,
    readonly ch: number,
    readonly groups: number,
    readonly eps = 1e-5,
  ) {
    if (ch % groups !== 0) throw new Error(`GroupNorm: ${ch} channels are not divisible by ${groups} groups (decoder config 'groups')`);
    this.g = ps.ones('g', [ch]);
    this.b = ps.zeros('b', [ch]);
  }

  apply(x: tf.Tensor4D): tf.Tensor4D {
    const [b, h, w, c] = x.shape;
    const grouped = tf.reshape(x, [b, h * w, this.groups, c / this.groups]);
    const { mean, variance } = tf.moments(grouped, [1, 3], true);
    const normed = tf.reshape(tf.mul(tf.sub(grouped, mean), tf.rsqrt(tf.add(variance, this.eps))), [b, h, w, c]);
    return tf.add(tf.mul(normed, this.g), this.b);
  }
}

/** k× nearest-neighbour upsampling as concat + reshape: [B, H, W, C] → [B, kH, kW, C] (k = 2 in the UNet). */
export function upsampleNearest(x: tf.Tensor4D, k = 2): tf.Tensor4D {
  if (k === 1) return x;
  const [b, h, w, c] = x.shape;
  const wide = tf.reshape(tf.concat(new Array<tf.Tensor4D>(k).fill(x), 3), [b, h, k * w, c]) as tf.Tensor4D; // each pixel k times along W
  return tf.reshape(tf.concat(new Array<tf.Tensor4D>(k).fill(wide), 2), [b, k * h, k * w, c]); // each row k times along H
}

/**
 * GroupNorm → SiLU → conv, + projected embedding, → GroupNorm → SiLU → conv (zero-init), + skip. With `scaleShift`
 * (ADM's AdaGN, Dhariwal & Nichol 2021) the embedding instead scales and shifts the second GroupNorm's output per
 * channel: norm(h)·(1 + s) + b. A bias can only move every pixel of a channel alike; a scale can switch a
 * channel's spatial pattern on or off, which is how the conditioning selects a shape rather than a colour.
 */
class ResBlock {
  readonly norm1: GroupNorm;
  readonly conv1: Conv;
  readonly emb: Linear;
  readonly norm2: GroupNorm;
  readonly conv2: Conv;
  readonly skip?: Conv;

  constructor(ps: ParamStore, inCh: number, outCh: number, embDim: number, groups: number, readonly scaleShift = false) {
    this.norm1 = new GroupNorm(ps.scope('norm1'), inCh, groups);
    this.conv1 = new Conv(ps.scope('conv1'), inCh, outCh);
    this.emb = new Linear(ps.scope('emb'), embDim, scaleShift ? 2 * outCh : outCh, { std: 1 / Math.sqrt(embDim) });
    this.norm2 = new GroupNorm(ps.scope('norm2'), outCh, groups);
    this.conv2 = new Conv(ps.scope('conv2'), outCh, outCh, 3, 1, true);
    if (inCh !== outCh) this.skip = new Conv(ps.scope('skip'), inCh, outCh, 1);
  }

  /** x: [B, H, W, Cin], emb: [B, E] → [B, H, W, Cout]. */
  apply(x: tf.Tensor4D, emb: tf.Tensor2D): tf.Tensor4D {
    let h = this.conv1.apply(silu(this.norm1.apply(x)));
    const e = this.emb.apply(silu(emb));
    const perChannel = (t: tf.Tensor2D) => tf.reshape(t, [t.shape[0], 1, 1, t.shape[1]]);
    if (this.scaleShift) {
      const [scale, shift] = tf.split(e, 2, 1) as [tf.Tensor2D, tf.Tensor2D];
      h = tf.add(tf.mul(this.norm2.apply(h), tf.add(perChannel(scale), 1)), perChannel(shift));
    } else {
      h = this.norm2.apply(tf.add(h, perChannel(e)));
    }
    h = this.conv2.apply(silu(h));
    return tf.add(this.skip ? this.skip.apply(x) : x, h);
  }
}

/** GroupNorm → multi-head attention over [context tokens…, pixels…] → residual. */
class AttentionBlock {
  readonly norm: GroupNorm;
  readonly attn: Attention;

  constructor(ps: ParamStore, ch: number, heads: number, groups: number, contextDim: number | undefined) {
    this.norm = new GroupNorm(ps.scope('norm'), ch, groups);
    // Output projection starts at zero so the block starts as the identity (improved DDPM's zero_module).
    this.attn = new Attention(ps, ch, heads, { contextDim, projStd: 0 });
  }

  apply(x: tf.Tensor4D, cond: Conditioning): tf.Tensor4D {
    const [b, h, w, c] = x.shape;
    const tokens = tf.reshape(this.norm.apply(x), [b, h * w, c]) as tf.Tensor3D;
    return tf.add(x, tf.reshape(this.attn.apply(tokens, { context: cond.context, contextMask: cond.contextMask }), [b, h, w, c]));
  }
}

/** One UNet layer: a residual block, optionally followed by attention. */
interface Layer {
  res: ResBlock;
  attn?: AttentionBlock;
}

/** The conditioning that stays fixed over all sampling steps: computed once per batch. */
type Conditioning = {
  /** [B, E] added to the timestep embedding. */
  embAdd: tf.Tensor2D;
  /** [B, L, contextDim] tokens every attention layer attends to; undefined when there are none. */
  context?: tf.Tensor3D;
  /** [B, L]: 1 = attend, 0 = caption padding; undefined when every context token is attended. */
  contextMask?: tf.Tensor2D;
  /** Upsamplers: [B, H, W, 3], the low-resolution image scaled up to the UNet's size, stacked onto its input. */
  lowRes?: tf.Tensor4D;
};

export class Decoder {
  readonly config: DecoderConfig;
  readonly schedule: NoiseSchedule;
  private readonly ps: ParamStore;
  private readonly embDim: number;
  private readonly timeIn: Linear;
  private readonly timeOut: Linear;
  private readonly imageEmbProj: Linear;
  private readonly nullImageEmb: tf.Variable;
  private readonly clipTokenProj?: Linear;
  private readonly tokenEmb?: Embedding;
  private readonly tokenPos?: PositionalEmbedding;
  private readonly text?: Transformer;
  private readonly textNorm?: LayerNorm;
  private readonly nullCaption?: tf.Variable;
  private readonly inConv: Conv;
  private readonly down: { layers: Layer[]; downsample?: Conv }[] = [];
  private readonly mid: { res1: ResBlock; attn: AttentionBlock; res2: ResBlock };
  private readonly up: { layers: Layer[]; upsample?: Conv }[] = [];
  private readonly outNorm: GroupNorm;
  private readonly outConv: Conv;

  constructor(config: Partial<DecoderConfig> | DecoderConfig, seed: number, vocabSize = VOCAB_SIZE) {
    const cfg = (this.config = DecoderConfig.parse(config));
    const levels = cfg.channelMults.length;
    if (cfg.imageSize % 2 ** (levels - 1) !== 0) {
      throw new Error(`decoder imageSize ${cfg.imageSize} is not divisible by 2^${levels - 1} (one halving per level after the first)`);
    }
    this.schedule = makeSchedule(cfg.schedule, cfg.timesteps);
    const ps = (this.ps = new ParamStore(seed));
    const ch = cfg.channels;
    const E = (this.embDim = 4 * ch);
    const hasContext = cfg.clipTokens > 0 || cfg.captionContext;
    const contextDim = hasContext ? cfg.contextDim : undefined;

    // Timestep and CLIP-embedding conditioning.
    this.timeIn = new Linear(ps.scope('time.in'), ch, E, { std: 1 / Math.sqrt(ch) });
    this.timeOut = new Linear(ps.scope('time.out'), E, E, { std: 1 / Math.sqrt(E) });
    this.imageEmbProj = new Linear(ps.scope('clip.emb'), cfg.embedDim, E, { std: 1 / Math.sqrt(cfg.embedDim) });
    this.nullImageEmb = ps.normal('clip.null', [cfg.embedDim], 1 / Math.sqrt(cfg.embedDim));
    if (cfg.clipTokens > 0) this.clipTokenProj = new Linear(ps.scope('clip.tokens'), cfg.embedDim, cfg.clipTokens * cfg.contextDim, { std: 1 / Math.sqrt(cfg.embedDim) });
    if (cfg.captionContext) {
      this.tokenEmb = new Embedding(ps.scope('text.tokens'), vocabSize, cfg.contextDim);
      this.tokenPos = new PositionalEmbedding(ps.scope('text.pos'), cfg.contextLength, cfg.contextDim);
      this.text = new Transformer(ps.scope('text'), { width: cfg.contextDim, layers: cfg.textLayers, heads: cfg.textHeads });
      this.textNorm = new LayerNorm(ps.scope('text.norm'), cfg.contextDim);
      this.nullCaption = ps.normal('text.null', [cfg.contextLength, cfg.contextDim], 0.02);
    }

    // UNet: down path (skips after the input conv, every layer and every downsample), middle, up path.
    this.inConv = new Conv(ps.scope('in'), cfg.lowResSize > 0 ? 6 : 3, ch);
    const skips = [ch];
    let cur = ch;
    const lowest = levels - 1;
    const layer = (lps: ParamStore, inCh: number, outCh: number, attention: boolean): Layer => ({
      res: new ResBlock(lps.scope('res'), inCh, outCh, E, cfg.groups, cfg.scaleShiftNorm),
      attn: attention ? new AttentionBlock(lps.scope('attn'), outCh, cfg.attentionHeads, cfg.groups, contextDim) : undefined,
    });
    for (let level = 0; level < levels; level++) {
      const lps = ps.scope('down').scope(level);
      const outCh = ch * cfg.channelMults[level];
      const layers: Layer[] = [];
      for (let i = 0; i < cfg.resBlocks; i++) {
        layers.push(layer(lps.scope(i), cur, outCh, level === lowest));
        cur = outCh;
        skips.push(cur);
      }
      const downsample = level < lowest ? new Conv(lps.scope('downsample'), cur, cur, 3, 2) : undefined;
      if (downsample) skips.push(cur);
      this.down.push({ layers, downsample });
    }
    this.mid = {
      res1: new ResBlock(ps.scope('mid.res1'), cur, cur, E, cfg.groups, cfg.scaleShiftNorm),
      attn: new AttentionBlock(ps.scope('mid.attn'), cur, cfg.attentionHeads, cfg.groups, contextDim),
      res2: new ResBlock(ps.scope('mid.res2'), cur, cur, E, cfg.groups, cfg.scaleShiftNorm),
    };
    for (let level = lowest; level >= 0; level--) {
      const lps = ps.scope('up').scope(level);
      const outCh = ch * cfg.channelMults[level];
      const layers: Layer[] = [];
      for (let i = 0; i <= cfg.resBlocks; i++) {
        layers.push(layer(lps.scope(i), cur + skips.pop()!, outCh, level === lowest));
        cur = outCh;
      }
      const upsample = level > 0 ? new Conv(lps.scope('upsample'), cur, cur) : undefined;
      this.up.push({ layers, upsample });
    }
    this.outNorm = new GroupNorm(ps.scope('out.norm'), cur, cfg.groups);
    this.outConv = new Conv(ps.scope('out.conv'), cur, 3, 3, 1, true);
  }

  params(): Map<string, tf.Variable> {
    return this.ps.vars;
  }

  /**
   * Conditioning for a batch: `keepImage`/`keepCaption` hold 1 (use it) or 0 (replace by the learned null)
   * per example.
   */
  private condition(imageEmb: tf.Tensor2D, tokens: tf.Tensor2D | undefined, keepImage: Float32Array, keepCaption: Float32Array, lowRes?: tf.Tensor4D): Conditioning {
    const cfg = this.config;
    const b = imageEmb.shape[0];
    if (imageEmb.shape[1] !== cfg.embedDim) throw new Error(`decoder got image embeddings of width ${imageEmb.shape[1]}, config embedDim is ${cfg.embedDim}`);
    const lowResUp = this.scaleLowRes(lowRes, b);
    const emb = replaceDropped(imageEmb, this.nullImageEmb, keepImage); // [B, D]
    const embAdd = this.imageEmbProj.apply(emb);
    const parts: tf.Tensor3D[] = [];
    let contextMask: tf.Tensor2D | undefined;
    if (this.clipTokenProj) parts.push(tf.reshape(this.clipTokenProj.apply(emb), [b, cfg.clipTokens, cfg.contextDim]));
    if (this.nullCaption) {
      const nullCaption = tf.broadcastTo(this.nullCaption, [b, cfg.contextLength, cfg.contextDim]) as tf.Tensor3D;
      if (tokens) {
        if (tokens.shape[0] !== b || tokens.shape[1] !== cfg.contextLength) {
          throw new Error(`decoder got caption tokens of shape [${tokens.shape}], expected [${b}, ${cfg.contextLength}] (config contextLength)`);
        }
        const x = this.tokenPos!.apply(this.tokenEmb!.apply(tokens));
        const encoded = this.textNorm!.apply(this.text!.apply(x, { causal: true }));
        parts.push(replaceDropped(encoded, nullCaption, keepCaption));
        // Padding after EOS is not attended; a dropped caption's null encodings all are. CLIP tokens always are.
        const notPad = tf.cast(tf.notEqual(tokens, PAD), 'float32');
        const captionMask = replaceDropped(notPad, tf.onesLike(notPad), keepCaption);
        contextMask = (cfg.clipTokens > 0 ? tf.concat([tf.ones([b, cfg.clipTokens]), captionMask], 1) : captionMask) as tf.Tensor2D;
      } else {
        parts.push(nullCaption);
      }
    }
    const context = parts.length === 0 ? undefined : parts.length === 1 ? parts[0] : (tf.concat(parts, 1) as tf.Tensor3D);
    return { embAdd, context, contextMask, lowRes: lowResUp };
  }

  /** An upsampler's low-res image [B, lowResSize, lowResSize, 3] scaled up to imageSize; undefined for a base decoder. */
  private scaleLowRes(lowRes: tf.Tensor4D | undefined, b: number): tf.Tensor4D | undefined {
    const { lowResSize, imageSize } = this.config;
    if (lowResSize === 0) {
      if (lowRes) throw new Error('a base decoder (lowResSize 0) takes no low-resolution image');
      return undefined;
    }
    const want = [b, lowResSize, lowResSize, 3];
    if (!lowRes || lowRes.shape.join() !== want.join()) {
      throw new Error(`upsampler needs a low-resolution image of shape [${want}] (config lowResSize), got ${lowRes ? `[${lowRes.shape}]` : 'none'}`);
    }
    return upsampleNearest(lowRes, imageSize / lowResSize);
  }

  /**
   * The UNet's raw prediction [B, H, W, 3] (ε or v, per `objective`) for noised images x at timesteps t (one per
   * example), fully conditioned (no dropout). For inspection and tests; training and sampling call the UNet
   * through loss() and sample().
   */
  predict(x: tf.Tensor4D, t: ArrayLike<number>, cond: DecoderCondition): tf.Tensor4D {
    return tf.tidy(() => {
      const ones = new Float32Array(x.shape[0]).fill(1);
      return this.unet(x, t, this.condition(cond.imageEmb, cond.tokens, ones, ones, cond.lowRes));
    });
  }

  /** The clean image x0 the UNet's prediction implies for x_t at ᾱ (one number, or one per example). */
  x0FromPrediction(xt: tf.Tensor4D, pred: tf.Tensor4D, abar: number | ArrayLike<number>): tf.Tensor4D {
    const { objective } = this.config;
    if (objective === 'x0') return tf.clone(pred);
    return (objective === 'v' ? x0FromV(xt, pred, abar) : x0FromEps(xt, pred, abar)) as tf.Tensor4D;
  }

  /** The UNet proper: its prediction (ε or v) [B, H, W, 3] for noised images x at timesteps t. */
  private unet(x: tf.Tensor4D, t: ArrayLike<number>, cond: Conditioning): tf.Tensor4D {
    const temb = timestepEmbedding(tf.tensor1d(Float32Array.from(t)), this.config.channels);
    const emb = tf.add(this.timeOut.apply(silu(this.timeIn.apply(temb))), cond.embAdd) as tf.Tensor2D;
    let h = this.inConv.apply(cond.lowRes ? tf.concat([x, cond.lowRes], 3) : x);
    const skips = [h];
    const run = (layer: Layer, input: tf.Tensor4D) => {
      const out = layer.res.apply(input, emb);
      return layer.attn ? layer.attn.apply(out, cond) : out;
    };
    for (const { layers, downsample } of this.down) {
      for (const layer of layers) skips.push((h = run(layer, h)));
      if (downsample) skips.push((h = downsample.apply(h)));
    }
    h = this.mid.res2.apply(this.mid.attn.apply(this.mid.res1.apply(h, emb), cond), emb);
    for (const { layers, upsample } of this.up) {
      for (const layer of layers) h = run(layer, tf.concat([h, skips.pop()!], 3));
      if (upsample) h = upsample.apply(upsampleNearest(h));
    }
    return this.outConv.apply(silu(this.outNorm.apply(h)));
  }

  /**
   * A training batch's random draws from `seed`: timesteps, which examples keep their CLIP embedding and caption,
   * the noise seed and, for upsamplers, each example's low-res noise level and that noise's seed (drawn last, so a
   * base decoder's draws are what they always were).
   */
  trainingMasks(
    batch: number,
    seed: number,
  ): { t: Int32Array; keepImage: Float32Array; keepCaption: Float32Array; noiseSeed: number; lowResSigma?: Float32Array; lowResSeed?: number; lowResBlur?: Float32Array } {
    const rng = new Rng(seed);
    const t = Int32Array.from({ length: batch }, () => rng.int(this.config.timesteps));
    const keepImage = keepMask(batch, this.config.imageEmbDrop, () => rng.float());
    const keepCaption = keepMask(batch, this.config.captionDrop, () => rng.float());
    const noiseSeed = rng.seed();
    if (this.config.lowResSize === 0) return { t, keepImage, keepCaption, noiseSeed };
    const lowResSigma = Float32Array.from({ length: batch }, () => rng.float() * this.config.lowResNoise);
    const lowResSeed = rng.seed();
    if (this.config.lowResBlur === 0) return { t, keepImage, keepCaption, noiseSeed, lowResSigma, lowResSeed };
    const lowResBlur = Float32Array.from({ length: batch }, () => rng.float() * this.config.lowResBlur);
    return { t, keepImage, keepCaption, noiseSeed, lowResSigma, lowResSeed, lowResBlur };
  }

  /** Mean squared error between the true and predicted ε (or v), at random timesteps, with conditioning dropout. */
  loss(batch: DecoderBatch, seed: number): tf.Scalar {
    const { images, imageEmb, tokens } = batch;
    const [b, h, w, c] = images.shape;
    const size = this.config.imageSize;
    if (h !== size || w !== size || c !== 3) throw new Error(`decoder got images of shape [${images.shape}], expected [B, ${size}, ${size}, 3] (config imageSize)`);
    const { t, keepImage, keepCaption, noiseSeed, lowResSigma, lowResSeed, lowResBlur } = this.trainingMasks(b, seed);
    return tf.tidy(() => {
      const noise = tf.randomNormal(images.shape, 0, 1, 'float32', noiseSeed);
      const abar = Array.from(t, (ti) => alphaBar(this.schedule, ti));
      const xt = qSample(images, noise, abar) as tf.Tensor4D;
      const lowRes = batch.lowRes && lowResSigma ? corruptLowRes(batch.lowRes, lowResSigma, lowResSeed!, lowResBlur) : batch.lowRes;
      const pred = this.unet(xt, t, this.condition(imageEmb, tokens, keepImage, keepCaption, lowRes));
      const { objective } = this.config;
      const target = objective === 'v' ? vFromX0Eps(images, noise, abar) : objective === 'x0' ? images : noise;
      const { minSnrGamma: gamma, snrWeightFloor: floor } = this.config;
      if (gamma === 0) return tf.mean(tf.square(tf.sub(pred, target))) as tf.Scalar;
      const weights = abar.map((a) => snrLossWeight(a / (1 - a), objective, gamma, floor));
      const perExample = tf.mean(tf.square(tf.sub(pred, target)), [1, 2, 3]);
      return tf.mean(tf.mul(perExample, tf.tensor1d(weights))) as tf.Scalar;
    });
  }

  /** The UNet's prediction for sampling: conditional, unconditional, or guided (both in one doubled batch). */
  private guidedPrediction(x: tf.Tensor4D, t: number, cond: Conditioning, guidance: number): tf.Tensor4D {
    const b = x.shape[0];
    const batchT = new Array<number>(cond.embAdd.shape[0]).fill(t);
    if (cond.embAdd.shape[0] === b) return this.unet(x, batchT, cond);
    const [epsCond, epsUncond] = tf.split(this.unet(tf.concat([x, x], 0), batchT, cond), 2, 0) as tf.Tensor4D[];
    return classifierFreeGuidance(epsCond, epsUncond, guidance) as tf.Tensor4D;
  }

  /**
   * Images [B, H, W, 3] in [-1, 1] for CLIP image embeddings (and captions), by DDPM (ancestral, on a respaced
   * subsequence of `steps` timesteps) or DDIM (η from options, default 0). Predicted x0 is clipped to [-1, 1]
   * at every step.
   */
  sample(cond: DecoderCondition, opts: DecoderSampleOptions): tf.Tensor4D {
    const { steps, guidance, seed, sampler } = opts;
    const eta = opts.eta ?? 0;
    if (sampler !== 'ddpm' && sampler !== 'ddim') throw new Error(`unknown sampler '${sampler as string}': use ddpm or ddim`);
    const b = cond.imageEmb.shape[0];
    const size = this.config.imageSize;
    const ts = samplingTimesteps(this.config.timesteps, steps);
    const rng = new Rng(seed);
    const guided = guidance !== 1;
    // Guidance runs [conditional; unconditional] as one batch of 2B; the conditioning is computed once.
    const conditioning = tf.tidy(() => {
      const ones = new Float32Array(b).fill(1);
      const keepCaption = cond.tokens ? ones : new Float32Array(b);
      if (!guided) return this.condition(cond.imageEmb, cond.tokens, ones, keepCaption, cond.lowRes);
      // The unconditional half drops the embedding and caption, never the low-res image (as in training).
      const twice = <T extends tf.Tensor>(x: T | undefined) => (x ? (tf.concat([x, x], 0) as T) : undefined);
      const keep = (a: Float32Array) => Float32Array.from([...a, ...new Float32Array(b)]);
      return this.condition(twice(cond.imageEmb)!, twice(cond.tokens), keep(ones), keep(keepCaption), twice(cond.lowRes));
    });
    let x = tf.randomNormal([b, size, size, 3], 0, 1, 'float32', rng.seed()) as tf.Tensor4D;
    for (let i = 0; i < ts.length; i++) {
      const abarT = alphaBar(this.schedule, ts[i]);
      const abarPrev = alphaBar(this.schedule, i + 1 < ts.length ? ts[i + 1] : -1);
      const noiseSeed = rng.seed();
      const next = tf.tidy(() => {
        const pred = this.guidedPrediction(x, ts[i], conditioning, guidance);
        const x0 = tf.clipByValue(this.x0FromPrediction(x, pred, abarT), -1, 1);
        const noise = () => tf.randomNormal(x.shape, 0, 1, 'float32', noiseSeed);
        if (sampler === 'ddpm') return ddpmStep(x, x0, abarT, abarPrev, noise());
        const sigma = ddimSigma(abarT, abarPrev, eta);
        return ddimStep(x0, epsFromX0(x, x0, abarT), abarPrev, sigma, sigma > 0 ? noise() : undefined);
      }) as tf.Tensor4D;
      x.dispose();
      x = next;
    }
    tf.dispose([conditioning.embAdd, conditioning.context, conditioning.contextMask, conditioning.lowRes]);
    const out = tf.clipByValue(x, -1, 1);
    x.dispose();
    return out;
  }
}
