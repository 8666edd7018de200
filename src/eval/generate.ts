// Sampling from a trained unCLIP run: caption → frozen CLIP text embedding → prior (an image embedding) →
// decoder (pixels) → upsampler (more pixels, when the run trained one), with optional CLIP re-ranking of extra
// candidates; and variations (image → CLIP image embedding → decoder → upsampler). Images come back as RGB bytes;
// writePng/writeGrid encode them with sharp.
import * as tf from '@tensorflow/tfjs-core';
import sharp from 'sharp';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { scaleTo } from '../model/images.ts';
import type { Models } from '../trainer/models.ts';
import { deriveSeed } from '../util/rng.ts';
import { z } from 'zod';

export const SampleConfig = z.strictObject({
  n: z.number().int().min(1).max(64).default(4).describe('images kept per prompt'),
  steps: z.number().int().min(1).max(1000).default(25).describe('decoder sampling steps'),
  priorSteps: z.number().int().min(1).max(1000).default(25).describe('prior sampling steps'),
  guidance: z.number().min(0).max(50).default(3).describe('decoder classifier-free guidance scale (1 = none)'),
  priorGuidance: z.number().min(0).max(50).default(1).describe('prior classifier-free guidance scale (1 = none)'),
  sampler: z.enum(['ddim', 'ddpm']).default('ddim').describe('decoder sampler (the upsampler uses it too)'),
  upsamplerSteps: z.number().int().min(1).max(1000).default(25).describe('upsampler sampling steps (checkpoints with a trained upsampler; it runs unguided, as unCLIP’s)'),
  seed: z.number().int().min(0).default(0).describe('seed of every draw'),
  rerank: z.number().int().min(0).max(64).default(0).describe('candidates drawn per prompt and re-ranked by CLIP similarity (0 = no re-ranking; else ≥ n)'),
});
export type SampleConfig = z.output<typeof SampleConfig>;

/** H×W RGB images, row-major bytes. */
export interface RgbImage {
  data: Uint8Array;
  width: number;
  height: number;
}

/** Tensor [B,H,W,3] in [-1,1] → B RGB byte images. */
export async function toRgbImages(images: tf.Tensor4D): Promise<RgbImage[]> {
  const [b, h, w] = images.shape;
  const flat = await images.data();
  const out: RgbImage[] = [];
  for (let i = 0; i < b; i++) {
    const data = new Uint8Array(h * w * 3);
    for (let j = 0; j < data.length; j++) data[j] = Math.max(0, Math.min(255, Math.round((flat[i * data.length + j] + 1) * 127.5)));
    out.push({ data, width: w, height: h });
  }
  return out;
}

/** CLIP text embeddings [B, D] of captions (the frozen CLIP at its own context length). */
export function textEmbeddings(models: Models, captions: string[]): tf.Tensor2D {
  return tf.tidy(() => models.clip.encodeText(models.tokenizer.tokenize(captions, models.clip.config.contextLength)));
}

/**
 * CLIP score of images [B,H,W,3] against text embeddings [B, D] (Hessel et al. 2021, without their rescaling): the
 * cosine of each image's CLIP embedding, on the image scaled to CLIP's size, with its caption's.
 */
export function clipScores(models: Models, images: tf.Tensor4D, textEmb: tf.Tensor2D): tf.Tensor1D {
  return tf.tidy(() => tf.sum(tf.mul(models.clip.encodeImage(scaleTo(images, models.clip.config.imageSize)), textEmb), 1));
}

/** Prior samples: one image embedding [B, D] per caption. */
export function priorEmbeddings(models: Models, captions: string[], textEmb: tf.Tensor2D, opts: Pick<SampleConfig, 'priorSteps' | 'priorGuidance'>, seed: number): tf.Tensor2D {
  return tf.tidy(() => {
    const tokens = models.tokenizer.tokenize(captions, models.prior.config.contextLength);
    return models.prior.sample({ tokens, textEmb }, { steps: opts.priorSteps, guidance: opts.priorGuidance, seed });
  });
}

/**
 * Images [B,H,W,3] in [-1,1] for image embeddings (and captions, used if a model reads them): the decoder's
 * samples, drawn again at the upsampler's size from those when the run has a trained upsampler.
 */
export function decode(models: Models, imageEmb: tf.Tensor2D, captions: string[] | undefined, opts: Pick<SampleConfig, 'steps' | 'guidance' | 'sampler' | 'upsamplerSteps'>, seed: number): tf.Tensor4D {
  return tf.tidy(() => {
    const tokens = (contextLength: number) => (captions ? models.tokenizer.tokenize(captions, contextLength) : undefined);
    const base = models.decoder.sample({ imageEmb, tokens: tokens(models.decoder.config.contextLength) }, { steps: opts.steps, guidance: opts.guidance, seed, sampler: opts.sampler });
    const up = models.upsampler;
    if (!up) return base;
    const upTokens = tokens(up.config.contextLength);
    return up.sample({ imageEmb, tokens: upTokens, lowRes: base }, { steps: opts.upsamplerSteps, guidance: 1, seed: deriveSeed(seed, 1), sampler: opts.sampler });
  });
}

export interface Generated {
  prompt: string;
  images: RgbImage[];
  /** CLIP cosine similarity of each kept image with its prompt. */
  scores: number[];
}

/**
 * Which draws to keep, in order, given each draw's CLIP similarity with its prompt: without re-ranking the first
 * n in draw order; with it, the n most similar, best first (a tie keeps draw order).
 */
export function keptDraws(scores: number[], n: number, rerank: boolean): number[] {
  const order = scores.map((_, i) => i);
  if (rerank) order.sort((a, b) => scores[b] - scores[a] || a - b);
  return order.slice(0, n);
}

/**
 * Text → images for each prompt: `n` images, or with `rerank` = K, the n of K candidates whose CLIP image
 * embedding is most similar to the prompt's text embedding (DALL·E's re-ranking). Deterministic for a seed.
 */
export async function generate(models: Models, prompts: string[], config: z.input<typeof SampleConfig>): Promise<Generated[]> {
  const cfg = SampleConfig.parse(config);
  if (cfg.rerank > 0 && cfg.rerank < cfg.n) throw new Error(`rerank: ${cfg.rerank} candidates cannot yield n = ${cfg.n} images (use rerank ≥ n, or 0)`);
  const draws = cfg.rerank > 0 ? cfg.rerank : cfg.n;
  const out: Generated[] = [];
  for (let p = 0; p < prompts.length; p++) {
    const captions = new Array<string>(draws).fill(prompts[p]);
    const textEmb = textEmbeddings(models, captions);
    const imageEmb = priorEmbeddings(models, captions, textEmb, cfg, deriveSeed(cfg.seed, 1, p));
    const images = decode(models, imageEmb, captions, cfg, deriveSeed(cfg.seed, 2, p));
    const scores = clipScores(models, images, textEmb);
    const s = Array.from(await scores.data());
    const rgb = await toRgbImages(images);
    tf.dispose([textEmb, imageEmb, images, scores]);
    const keep = keptDraws(s, cfg.n, cfg.rerank > 0);
    out.push({ prompt: prompts[p], images: keep.map((i) => rgb[i]), scores: keep.map((i) => s[i]) });
  }
  return out;
}

/** Decoder samples for one image: its CLIP image embedding, repeated n times, decoded with different noise. */
export async function variations(models: Models, image: Float32Array, config: z.input<typeof SampleConfig>): Promise<RgbImage[]> {
  const cfg = SampleConfig.parse(config);
  const size = models.clip.config.imageSize;
  const imageEmb = tf.tidy(() => tf.tile(models.clip.encodeImage(tf.tensor4d(image, [1, size, size, 3])), [cfg.n, 1]) as tf.Tensor2D);
  const images = decode(models, imageEmb, undefined, cfg, deriveSeed(cfg.seed, 3));
  const rgb = await toRgbImages(images);
  tf.dispose([imageEmb, images]);
  return rgb;
}

export async function writePng(img: RgbImage, path: string, scale = 1): Promise<void> {
  let s = sharp(Buffer.from(img.data), { raw: { width: img.width, height: img.height, channels: 3 } });
  if (scale > 1) s = s.resize(img.width * scale, img.height * scale, { kernel: 'nearest' });
  await s.png().toFile(path);
}

/** One PNG file of rows × columns images (one row per prompt), scaled up by `scale` with nearest-neighbour pixels. */
export async function writeGrid(rows: RgbImage[][], path: string, scale = 4, gap = 2): Promise<void> {
  await writeFile(path, await gridPng(rows, scale, gap));
}

/** writeGrid's PNG as bytes. */
export async function gridPng(rows: RgbImage[][], scale = 4, gap = 2): Promise<Buffer> {
  const w = rows[0][0].width * scale;
  const h = rows[0][0].height * scale;
  const cols = Math.max(...rows.map((r) => r.length));
  const width = cols * w + (cols + 1) * gap;
  const height = rows.length * h + (rows.length + 1) * gap;
  const composites = await Promise.all(
    rows.flatMap((row, r) =>
      row.map(async (img, c) => ({
        input: await sharp(Buffer.from(img.data), { raw: { width: img.width, height: img.height, channels: 3 } }).resize(w, h, { kernel: 'nearest' }).png().toBuffer(),
        left: gap + c * (w + gap),
        top: gap + r * (h + gap),
      })),
    ),
  );
  return sharp({ create: { width, height, channels: 3, background: { r: 64, g: 64, b: 64 } } }).composite(composites).png().toBuffer();
}

/** Cells of about 128 pixels whatever the images' resolution (4× at 32 px, 8× at 16 px). */
export function gridScale(results: Generated[]): number {
  return Math.max(1, Math.round(128 / results[0].images[0].width));
}

/** A file-name-safe slug of a prompt. */
export function slug(text: string): string {
  return text.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 60) || 'prompt';
}

/** Writes each prompt's images as <out>/<i>-<slug>-<j>.png and all of them as <out>/grid.png; returns the paths. */
export async function writeGenerated(results: Generated[], outDir: string): Promise<{ files: string[]; grid: string }> {
  await mkdir(outDir, { recursive: true });
  const files: string[] = [];
  for (let i = 0; i < results.length; i++) {
    for (let j = 0; j < results[i].images.length; j++) {
      const f = join(outDir, `${String(i).padStart(2, '0')}-${slug(results[i].prompt)}-${j}.png`);
      await writePng(results[i].images[j], f);
      files.push(f);
    }
  }
  const grid = join(outDir, 'grid.png');
  await writeGrid(results.map((r) => r.images), grid, gridScale(results));
  return { files, grid };
}
