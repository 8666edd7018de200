// CLIP: a ViT image encoder and a causal text transformer mapped into one embedding space, trained so a caption's
// embedding is closest to its own image's (Radford et al., 2021). Tiny by default, for CPU training.
//
//   image [B, H, W, 3] → patches [B, N, P·P·3] → linear → [class, patches] + pos → LN → transformer → LN(class)
//     → proj → L2-normalise → [B, D]
//   (with `convStem`, the patch step is log2(P) stride-2 3×3 convolutions with GELU, then a 1×1 projection: the
//   tokens are the same P×P cells, each seen through a small convolutional feature extractor — Xiao et al. 2021)
//   tokens [B, T] → embed + pos → causal transformer → hidden state at EOS → LN → proj → L2-normalise → [B, D]
import * as tf from '@tensorflow/tfjs-core';
import { z } from 'zod';
import { Conv, Embedding, LayerNorm, Linear, ParamStore, PositionalEmbedding, Transformer, gelu, l2Normalize } from './nn.ts';
import { EOS, VOCAB_SIZE } from './tokenizer.ts';
import { LOGIT_SCALE_INIT, contrastiveLoss } from './losses.ts';

export const ClipConfig = z
  .object({
    imageSize: z.number().int().min(1).default(32).describe('input image side in pixels (square)'),
    patchSize: z.number().int().min(1).default(8).describe('ViT patch side in pixels; must divide imageSize'),
    convStem: z
      .boolean()
      .default(false)
      .describe('tokens from log2(patchSize) stride-2 3×3 convolutions (GELU) and a 1×1 projection instead of one linear map of each patch (early convolutions, Xiao et al. 2021); patchSize must be a power of two'),
    width: z.number().int().min(1).default(64).describe('width of the image transformer'),
    layers: z.number().int().min(1).default(2).describe('blocks of the image transformer'),
    heads: z.number().int().min(1).default(4).describe('attention heads of the image transformer; must divide width'),
    contextLength: z.number().int().min(2).default(48).describe('caption tokens per example, BOS and EOS included (byte-level: longer captions are cut)'),
    textWidth: z.number().int().min(1).default(64).describe('width of the text transformer'),
    textLayers: z.number().int().min(1).default(2).describe('blocks of the text transformer'),
    textHeads: z.number().int().min(1).default(4).describe('attention heads of the text transformer; must divide textWidth'),
    embedDim: z.number().int().min(1).default(64).describe('width D of the joint image–text embedding'),
  })
  .superRefine((c, ctx) => {
    if (c.imageSize % c.patchSize !== 0) ctx.addIssue({ code: 'custom', path: ['patchSize'], message: `patchSize ${c.patchSize} must divide imageSize ${c.imageSize}` });
    if (c.convStem && (c.patchSize < 2 || !Number.isInteger(Math.log2(c.patchSize)))) {
      ctx.addIssue({ code: 'custom', path: ['convStem'], message: `needs patchSize a power of two ≥ 2 (one stride-2 convolution per halving), got ${c.patchSize}` });
    }
    if (c.width % c.heads !== 0) ctx.addIssue({ code: 'custom', path: ['heads'], message: `heads ${c.heads} must divide width ${c.width}` });
    if (c.textWidth % c.textHeads !== 0) ctx.addIssue({ code: 'custom', path: ['textHeads'], message: `textHeads ${c.textHeads} must divide textWidth ${c.textWidth}` });
  });
export type ClipConfig = z.infer<typeof ClipConfig>;

export interface ClipBatch {
  /** [B, H, W, 3] in [-1, 1]. */
  images: tf.Tensor4D;
  /** int32 [B, contextLength] from tokenize(). */
  tokens: tf.Tensor2D;
}

export class Clip {
  readonly config: ClipConfig;
  /** ln(multiplier of cosine similarities); initialised to ln(1/0.07), used as min(exp(·), 100). */
  readonly logitScale: tf.Variable;
  private readonly store: ParamStore;

  // Image encoder.
  private readonly patchEmbed: Linear;
  /** convStem: stride-2 convolutions, channels doubling up to width (patchEmbed is then a 1×1 projection). */
  private readonly stem: Conv[] = [];
  private readonly classToken: tf.Variable;
  private readonly imagePos: PositionalEmbedding;
  private readonly lnPre: LayerNorm;
  private readonly visual: Transformer;
  private readonly lnPost: LayerNorm;
  private readonly imageProj: Linear;

  // Text encoder.
  private readonly tokenEmbed: Embedding;
  private readonly textPos: PositionalEmbedding;
  private readonly text: Transformer;
  private readonly lnFinal: LayerNorm;
  private readonly textProj: Linear;

  /** `vocabSize`: the run tokenizer's (tokenizer.ts; the byte tokenizer's by default). */
  constructor(config: z.input<typeof ClipConfig>, seed: number, vocabSize = VOCAB_SIZE) {
    const c = (this.config = ClipConfig.parse(config));
    this.store = new ParamStore(seed);
    const v = this.store.scope('visual');
    const patches = (c.imageSize / c.patchSize) ** 2;
    // As in CLIP's ViT: patch projection at fan-in scale, class token and positions at width^-0.5, so where a
    // patch sits is visible from the first step (at std 0.01 a tiny model long confused left with right).
    if (c.convStem) {
      const halvings = Math.log2(c.patchSize);
      let inCh = 3;
      for (let i = 0; i < halvings; i++) {
        const outCh = Math.max(8, Math.round(c.width / 2 ** (halvings - 1 - i)));
        this.stem.push(new Conv(v.scope('stem').scope(i), inCh, outCh, 3, 2));
        inCh = outCh;
      }
      this.patchEmbed = new Linear(v.scope('patch'), inCh, c.width, { std: inCh ** -0.5 });
    } else {
      const patchDim = c.patchSize * c.patchSize * 3;
      this.patchEmbed = new Linear(v.scope('patch'), patchDim, c.width, { std: patchDim ** -0.5 });
    }
    this.classToken = v.normal('classToken', [c.width], c.width ** -0.5);
    this.imagePos = new PositionalEmbedding(v.scope('pos'), patches + 1, c.width, c.width ** -0.5);
    this.lnPre = new LayerNorm(v.scope('lnPre'), c.width);
    this.visual = new Transformer(v, { width: c.width, layers: c.layers, heads: c.heads, std: c.width ** -0.5 });
    this.lnPost = new LayerNorm(v.scope('lnPost'), c.width);
    this.imageProj = new Linear(v.scope('proj'), c.width, c.embedDim, { bias: false, std: c.width ** -0.5 });

    const t = this.store.scope('text');
    this.tokenEmbed = new Embedding(t.scope('token'), vocabSize, c.textWidth);
    this.textPos = new PositionalEmbedding(t.scope('pos'), c.contextLength, c.textWidth);
    this.text = new Transformer(t, { width: c.textWidth, layers: c.textLayers, heads: c.textHeads, std: c.textWidth ** -0.5 });
    this.lnFinal = new LayerNorm(t.scope('lnFinal'), c.textWidth);
    this.textProj = new Linear(t.scope('proj'), c.textWidth, c.embedDim, { bias: false, std: c.textWidth ** -0.5 });

    this.logitScale = this.store.constant('logitScale', [], LOGIT_SCALE_INIT);
  }

  /** Every trainable variable under its dotted name, in an order fixed by the config alone. */
  params(): Map<string, tf.Variable> {
    return this.store.vars;
  }

  /** images [B, H, W, 3] in [-1, 1] → L2-normalised [B, embedDim]. */
  encodeImage(images: tf.Tensor4D): tf.Tensor2D {
    const { imageSize: s, patchSize: p, width } = this.config;
    const [b, h, w, ch] = images.shape;
    if (h !== s || w !== s || ch !== 3) throw new Error(`CLIP expects images [B, ${s}, ${s}, 3], got [${images.shape}]`);
    const g = s / p; // patches per side
    let patches: tf.Tensor2D;
    if (this.stem.length > 0) {
      // Each stride-2 conv halves the side: after log2(P) of them one pixel per P×P cell, row-major like the patches.
      let f: tf.Tensor4D = images;
      for (const conv of this.stem) f = gelu(conv.apply(f));
      patches = tf.reshape(f, [b * g * g, f.shape[3]]);
    } else {
      // Cut into P×P patches with rank-4 ops only: [B·g, P, g, P·3] → [B·g, g, P, P·3] → [B·g·g, P·P·3].
      const rows = tf.reshape(images, [b * g, p, g, p * 3]);
      patches = tf.reshape(tf.transpose(rows, [0, 2, 1, 3]), [b * g * g, p * p * 3]);
    }
    const tokens = tf.reshape(this.patchEmbed.apply(patches), [b, g * g, width]); // [B, N, C]
    const cls = tf.add(tf.zeros([b, 1, width]), tf.reshape(this.classToken, [1, 1, width])); // [B, 1, C]
    let x = this.imagePos.apply(tf.concat([cls, tokens], 1) as tf.Tensor3D); // [B, N+1, C]
    x = this.visual.apply(this.lnPre.apply(x));
    const pooled = tf.reshape(tf.slice(x, [0, 0, 0], [b, 1, width]), [b, width]) as tf.Tensor2D; // class token
    return l2Normalize(this.imageProj.apply(this.lnPost.apply(pooled)));
  }

  /** tokens int32 [B, T ≤ contextLength], one EOS per row (as tokenize() makes) → L2-normalised [B, embedDim]. */
  encodeText(tokens: tf.Tensor2D): tf.Tensor2D {
    const [b, t] = tokens.shape;
    if (t > this.config.contextLength) throw new Error(`CLIP text context is ${this.config.contextLength} tokens, got ${t}`);
    let x = this.textPos.apply(this.tokenEmbed.apply(tokens)); // [B, T, C]
    x = this.text.apply(x, { causal: true });
    // The EOS position has attended to the whole caption (and, causally, to nothing after it).
    const atEos = tf.reshape(tf.cast(tf.equal(tokens, EOS), 'float32'), [b, t, 1]);
    const pooled = tf.sum(tf.mul(x, atEos), 1) as tf.Tensor2D; // [B, C]
    return l2Normalize(this.textProj.apply(this.lnFinal.apply(pooled)));
  }

  /**
   * The contrastive loss of one whole batch in one process. A distributed trainer instead encodes its own rows,
   * gathers the other ranks' embeddings and calls contrastiveLoss with `own` (see losses.ts).
   */
  loss(batch: ClipBatch): tf.Scalar {
    return contrastiveLoss(this.encodeImage(batch.images), this.encodeText(batch.tokens), this.logitScale);
  }

  dispose(): void {
    for (const v of this.store.vars.values()) v.dispose();
  }
}
