// `easel eval`: scores a checkpoint on held-out caption–image pairs. Any WebDataset split will do (real captions:
// the figures marked *); the synthetic dataset's eval/ split (held-out colour–shape pairs, ground truth in each
// .json) adds the figures that need to know what an image shows:
//   clip.retrieval_top1 *    each held-out caption retrieves the eval image with the most similar CLIP embedding;
//                            a hit when that image is the caption's own or, with synthetic ground truth, has every
//                            attribute the caption names (colour, shape, and background and size when named),
//                            since many images fit one synthetic caption;
//   clip.retrieval_top1_color_shape  the same, counting a hit when colour and shape match (the held-out binding).
//   clip.retrieval_top5 *    a hit when any of the caption's 5 most similar images fits it (CLIP's recall@5).
//   prior.cosine *           mean cosine(prior sample for the caption, CLIP embedding of the true image), beside
//   prior.text_baseline_cosine *  the baseline of using the caption's text embedding directly.
//   decoder.clip_score *     mean CLIP score (cosine of image and caption embeddings) of images generated from the
//                            held-out captions (text → prior → decoder), beside
//   decoder.real_clip_score *  the held-out images' own CLIP score with their captions: what a perfect decoder reaches;
//   decoder.color_accuracy   the same generated images read by the
//   decoder.shape_accuracy   deterministic shape analyser, against the caption's colour and shape;
//   decoder.blank            the fraction of those images in which the analyser finds no shape (its colour and
//                            shape readings are then guesses: noise or an empty canvas can score by chance);
//   decoder.by_pair          the same figures per colour–shape pair of the captions ("green triangle": …).
//   decoder_from_image_embedding *  the same figures for images the decoder draws from the CLIP embeddings of the
//                            held-out *images* (no prior): where they are good and decoder.* is not, the prior is
//                            what fails the held-out pairs; where both are poor, the decoder (or CLIP's embedding
//                            of the pair) is.
//   decoder_reranked *       only with `rerank` K > 0: the decoder figures when each caption gets K candidates
//                            and keeps the one CLIP finds most similar to it, as `easel generate --rerank K` (and
//                            the demo's sample grid) does; decoder.* stays the one-draw figure.
import * as tf from '@tensorflow/tfjs-core';
import { z } from 'zod';
import { readHeldOut } from '../data/heldout.ts';
import { BACKGROUNDS, COLORS, SHAPES, SIZES, type GroundTruth } from '../data/synth/spec.ts';
import type { Models } from '../trainer/models.ts';
import { deriveSeed } from '../util/rng.ts';
import { clipScores, decode, generate, priorEmbeddings, SampleConfig, textEmbeddings, toRgbImages, type RgbImage } from './generate.ts';
import { analyseShape, type ShapeReading } from './shape-analyser.ts';

const SAMPLING = SampleConfig.pick({ steps: true, priorSteps: true, guidance: true, priorGuidance: true, sampler: true, upsamplerSteps: true, seed: true });

export const EvalConfig = z.strictObject({
  samples: z.number().int().min(1).default(64).describe('held-out samples evaluated at most (the first ones, in shard order)'),
  generate: z.number().int().min(0).default(32).describe('of those, how many captions the decoder draws an image for'),
  batchSize: z.number().int().min(1).default(16).describe('images sampled at once'),
  // The sampling settings are generate's own, so an eval samples exactly as `easel generate` may.
  ...SAMPLING.shape,
  rerank: z.number().int().min(0).max(64).default(0).describe('K > 0: also score decoder_reranked, the best of K candidates per caption by CLIP similarity'),
});
export type EvalConfig = z.output<typeof EvalConfig>;

/** A decoder's scores: CLIP scores always, the analyser's readings only on a split with synthetic ground truth. */
export type DecoderReport = Partial<ReturnType<typeof scoreDecoder>> & { clip_score: number; real_clip_score: number };

export interface EvalReport {
  /** retrieval_top1_color_shape only on a split with synthetic ground truth. */
  clip: { retrieval_top1: number; retrieval_top1_color_shape?: number; retrieval_top5: number };
  prior: { cosine: number; text_baseline_cosine: number };
  decoder: DecoderReport;
  decoder_from_image_embedding: DecoderReport;
  /** Only when config.rerank > 0. */
  decoder_reranked?: DecoderReport;
  /** How many samples each figure is over, and the settings used. */
  counts: { retrieval: number; prior: number; decoder: number };
  config: EvalConfig;
}

export interface DecoderScores {
  color_accuracy: number;
  shape_accuracy: number;
  blank: number;
}

/** Below this foreground coverage (≈ 10 pixels of a 32×32 image) the analyser has found no shape. */
export const BLANK_COVERAGE = 0.01;

/**
 * Scores analyser readings of generated images against the ground truth of the captions they were drawn for:
 * overall and per colour–shape pair (keys "green triangle", in first-seen order).
 */
export function scoreDecoder(results: { truth: Pick<GroundTruth, 'color' | 'shape'>; reading: ShapeReading }[]): DecoderScores & { by_pair: Record<string, DecoderScores & { n: number }> } {
  const score = (rs: typeof results): DecoderScores => {
    const frac = (ok: (r: (typeof results)[number]) => boolean) => (rs.length ? rs.filter(ok).length / rs.length : 0);
    return {
      color_accuracy: frac((r) => r.reading.color === r.truth.color),
      shape_accuracy: frac((r) => r.reading.shape === r.truth.shape),
      blank: frac((r) => r.reading.coverage < BLANK_COVERAGE),
    };
  };
  const pairs = new Map<string, typeof results>();
  for (const r of results) {
    const key = `${r.truth.color} ${r.truth.shape}`;
    pairs.set(key, [...(pairs.get(key) ?? []), r]);
  }
  return { ...score(results), by_pair: Object.fromEntries([...pairs].map(([k, rs]) => [k, { ...score(rs), n: rs.length }])) };
}

export interface EvalSample {
  caption: string;
  /** The synthetic dataset's record of what the image shows; absent on other datasets. */
  truth?: GroundTruth;
  /** size×size×3 in [-1, 1], decoded exactly as the training loader decodes. */
  image: Float32Array;
}

/** The first `max` held-out samples under `url` (data/heldout.ts), with the synthetic ground truth of each that has one. */
export async function readEvalSamples(url: string, imageSize: number, max: number): Promise<EvalSample[]> {
  return (await readHeldOut(url, imageSize, max)).map((s) => ({
    caption: s.caption,
    image: s.image,
    truth: s.json ? groundTruth(s.json, `${url}/${s.shard}: sample ${s.key}`) : undefined,
  }));
}

/** A sample of the synthetic dataset: its ground truth is known. */
export type SynthSample = EvalSample & { truth: GroundTruth };

/** readEvalSamples for the probes, which need ground truth: throws naming the first sample without it. */
export async function readSynthSamples(url: string, imageSize: number, max: number): Promise<SynthSample[]> {
  const samples = await readEvalSamples(url, imageSize, max);
  const bare = samples.findIndex((s) => !s.truth);
  if (bare >= 0) throw new Error(`${url}: sample ${bare} ("${samples[bare].caption}") has no "synth" ground truth in its .json: pass shards of the synthetic dataset`);
  return samples as SynthSample[];
}

/** The synthetic ground truth in a sample's .json, if it has one. */
function groundTruth(json: Buffer, what: string): GroundTruth | undefined {
  try {
    return (JSON.parse(json.toString('utf8')) as { synth?: GroundTruth }).synth;
  } catch (err) {
    throw new Error(`${what}: its .json does not parse: ${(err as Error).message}`, { cause: err });
  }
}

/** Whether an image with ground truth `t` fits every attribute word the caption names. */
export function fitsCaption(caption: string, t: GroundTruth, only?: 'color-shape'): boolean {
  const words = new Set(caption.toLowerCase().split(/[^a-z]+/));
  const named = <K extends string>(vocab: readonly K[]) => vocab.filter((v) => words.has(v));
  const ok = <K extends string>(vocab: readonly K[], value: K) => {
    const n = named(vocab);
    return n.length === 0 || n.includes(value);
  };
  const colorShape = ok(COLORS, t.color) && ok(SHAPES, t.shape);
  return only === 'color-shape' ? colorShape : colorShape && ok(BACKGROUNDS, t.background) && ok(SIZES, t.size);
}

function mean(xs: number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0;
}

function dot(a: number[], b: number[]): number {
  return a.reduce((s, x, k) => s + x * b[k], 0);
}

/**
 * The `k` images each caption retrieves, best first: the indices of the image embeddings with the largest dot
 * products with the caption's text embedding (on CLIP's unit-length embeddings, the largest cosines). A tie goes to
 * the lower index.
 */
export function rankedImages(textEmb: number[][], imageEmb: number[][], k: number): number[][] {
  return textEmb.map((t) => {
    const scores = imageEmb.map((im) => dot(t, im));
    return scores
      .map((_, j) => j)
      .sort((a, b) => scores[b] - scores[a] || a - b)
      .slice(0, k);
  });
}

/** The image each caption retrieves (rankedImages' first). */
export function retrievedImages(textEmb: number[][], imageEmb: number[][]): number[] {
  return rankedImages(textEmb, imageEmb, 1).map(([j]) => j);
}

/** Top-k retrieval accuracy: the fraction of captions q with an image j among their k best that fits them, by `fits(q, j)`. */
export function retrievalTopK(textEmb: number[][], imageEmb: number[][], fits: (caption: number, image: number) => boolean, k: number): number {
  const hits = rankedImages(textEmb, imageEmb, k).filter((js, q) => js.some((j) => fits(q, j))).length;
  return hits / textEmb.length;
}

/** Top-1 retrieval accuracy: the fraction of captions q whose retrieved image j fits them, by `fits(q, j)`. */
export function retrievalTop1(textEmb: number[][], imageEmb: number[][], fits: (caption: number, image: number) => boolean): number {
  return retrievalTopK(textEmb, imageEmb, fits, 1);
}

/** Mean over rows i of cosine(a[i], b[i]); 0 for no rows. */
export function meanCosine(a: number[][], b: number[][]): number {
  return mean(a.map((x, i) => dot(x, b[i]) / Math.sqrt(dot(x, x) * dot(b[i], b[i]))));
}

/** Generated images of one kind: each one's CLIP score and, given ground truth, the analyser's reading. */
class Draws {
  readonly scores: number[] = [];
  readonly judged: Parameters<typeof scoreDecoder>[0] = [];

  add(score: number, judged: Parameters<typeof scoreDecoder>[0][number] | undefined): void {
    this.scores.push(score);
    if (judged) this.judged.push(judged);
  }
}

async function rows(t: tf.Tensor2D): Promise<number[][]> {
  return (await t.array()) as number[][];
}

export async function evaluate(models: Models, samples: EvalSample[], config: z.input<typeof EvalConfig> = {}, onImages?: (images: RgbImage[], captions: string[]) => void): Promise<EvalReport> {
  const cfg = EvalConfig.parse(config);
  const list = samples.slice(0, cfg.samples);
  if (list.length === 0) throw new Error('no eval samples');
  const size = models.clip.config.imageSize;
  const captions = list.map((s) => s.caption);

  // Embeddings of every image and caption, in batches.
  const imgEmb: number[][] = [];
  const txtEmb: number[][] = [];
  const priorEmb: number[][] = [];
  for (let i = 0; i < list.length; i += cfg.batchSize) {
    const part = list.slice(i, i + cfg.batchSize);
    const caps = captions.slice(i, i + cfg.batchSize);
    const pixels = new Float32Array(part.length * size * size * 3);
    part.forEach((s, j) => pixels.set(s.image, j * size * size * 3));
    const ie = tf.tidy(() => models.clip.encodeImage(tf.tensor4d(pixels, [part.length, size, size, 3])));
    const te = textEmbeddings(models, caps);
    const pe = priorEmbeddings(models, caps, te, cfg, deriveSeed(cfg.seed, 1, i));
    imgEmb.push(...(await rows(ie)));
    txtEmb.push(...(await rows(te)));
    priorEmb.push(...(await rows(pe)));
    tf.dispose([ie, te, pe]);
  }
  // With synthetic ground truth for every sample, an image fits a caption when it shows what the caption names;
  // otherwise only the caption's own image does.
  const truths = list.every((s) => s.truth) ? list.map((s) => s.truth!) : undefined;
  const fits = (only?: 'color-shape') => (q: number, j: number) => (truths ? fitsCaption(captions[q], truths[j], only) : q === j);

  // Decoder: text → prior → decoder for the first `generate` captions, scored by CLIP (and by the analyser, given
  // ground truth); then the same from the true images' CLIP embeddings, which leaves the prior out.
  const gen = list.slice(0, cfg.generate);
  const draws = { prior: new Draws(), image: new Draws(), reranked: new Draws() };
  const judge = (img: RgbImage, k: number) => (truths ? { truth: truths[k], reading: analyseShape(img.data, img.width, img.height) } : undefined);
  for (let i = 0; i < gen.length; i += cfg.batchSize) {
    const caps = gen.slice(i, i + cfg.batchSize).map((s) => s.caption);
    const te = textEmbeddings(models, caps);
    const pe = priorEmbeddings(models, caps, te, cfg, deriveSeed(cfg.seed, 2, i));
    const ie = tf.tensor2d(imgEmb.slice(i, i + caps.length));
    for (const [from, emb, purpose] of [['prior', pe, 3], ['image', ie, 4]] as const) {
      const images = decode(models, emb, caps, cfg, deriveSeed(cfg.seed, purpose, i));
      const rgb = await toRgbImages(images);
      const scores = clipScores(models, images, te);
      const s = Array.from(await scores.data());
      tf.dispose([images, scores]);
      if (from === 'prior') onImages?.(rgb, caps);
      rgb.forEach((img, j) => draws[from].add(s[j], judge(img, i + j)));
    }
    tf.dispose([te, pe, ie]);
  }
  // Re-ranked: each caption alone, its K candidates in one batch (seeded per caption, apart from the draws above).
  for (let i = 0; cfg.rerank > 0 && i < gen.length; i++) {
    const { steps, priorSteps, guidance, priorGuidance, sampler, upsamplerSteps } = cfg;
    const sampling = { n: 1, rerank: cfg.rerank, steps, priorSteps, guidance, priorGuidance, sampler, upsamplerSteps, seed: deriveSeed(cfg.seed, 5, i) };
    const [{ images, scores }] = await generate(models, [gen[i].caption], sampling);
    draws.reranked.add(scores[0], judge(images[0], i));
  }
  // The held-out images' own CLIP score with their captions: the ceiling for the generated ones.
  const real = mean(gen.map((_, k) => dot(txtEmb[k], imgEmb[k])));
  const report = (d: Draws): DecoderReport => ({ ...(truths ? scoreDecoder(d.judged) : {}), clip_score: mean(d.scores), real_clip_score: real });
  return {
    clip: {
      retrieval_top1: retrievalTop1(txtEmb, imgEmb, fits()),
      ...(truths ? { retrieval_top1_color_shape: retrievalTop1(txtEmb, imgEmb, fits('color-shape')) } : {}),
      retrieval_top5: retrievalTopK(txtEmb, imgEmb, fits(), 5),
    },
    prior: { cosine: meanCosine(priorEmb, imgEmb), text_baseline_cosine: meanCosine(txtEmb, imgEmb) },
    decoder: report(draws.prior),
    decoder_from_image_embedding: report(draws.image),
    ...(cfg.rerank > 0 ? { decoder_reranked: report(draws.reranked) } : {}),
    counts: { retrieval: list.length, prior: list.length, decoder: gen.length },
    config: cfg,
  };
}
