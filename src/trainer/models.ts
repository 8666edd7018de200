// The unCLIP models of a run and what each stage trains: which params, on which loss. Prior, decoder and upsampler
// train against the frozen CLIP: their embeddings are computed outside the gradient tape and disposed per step.
// The upsampler is optional: it exists only in runs that give it steps.
// clipGlobalLoss() is CLIP's loss for one rank of a data-parallel step, with the whole global batch as negatives.
// loadCheckpoint() rebuilds a run's models from a checkpoint for sampling and evaluation.
import * as tf from '@tensorflow/tfjs-core';
import { Clip } from '../model/clip.ts';
import { poolTo } from '../model/images.ts';
import { contrastiveLoss } from '../model/losses.ts';
import { DiffusionPrior } from '../model/prior.ts';
import { Tokenizer } from '../model/tokenizer.ts';
import { Decoder } from '../model/unet.ts';
import { initBackend } from '../model/backend.ts';
import { deriveSeed } from '../util/rng.ts';
import { assignWeights, readCheckpoint, type Manifest } from './checkpoint.ts';
import { checkpointTokenizer } from './vocab.ts';
import { parseRunConfig, STAGES, type RunConfig, type StageName } from './config.ts';

/** Namespaces of deriveSeed(config.seed, PURPOSE, …), so no two uses of the base seed collide. */
export const SEED = { model: 1, data: 2, step: 3, validation: 4, samples: 5 } as const;

export interface Models {
  clip: Clip;
  prior: DiffusionPrior;
  decoder: Decoder;
  /** A decoder with a low-res input (lowResSize > 0): present only when the run trains an upsampler stage. */
  upsampler?: Decoder;
  /** The run's tokenizer (vocab.ts): every model reads captions through it, so it sizes their token tables. */
  tokenizer: Tokenizer;
}

export function buildModels(config: RunConfig, tokenizer: Tokenizer = Tokenizer.BYTES): Models {
  const seed = (s: StageName) => deriveSeed(config.seed, SEED.model, STAGES.indexOf(s));
  const vocab = tokenizer.vocabSize;
  return {
    clip: new Clip(config.stages.clip.model, seed('clip'), vocab),
    prior: new DiffusionPrior(config.stages.prior.model, seed('prior'), vocab),
    decoder: new Decoder(config.stages.decoder.model, seed('decoder'), vocab),
    upsampler: config.stages.upsampler.steps > 0 ? new Decoder(config.stages.upsampler.model, seed('upsampler'), vocab) : undefined,
    tokenizer,
  };
}

/** The stages with EMA weights (sampling uses them): the diffusion models. */
export const EMA_STAGES = ['prior', 'decoder', 'upsampler'] as const;
export type EmaStage = (typeof EMA_STAGES)[number];

/** The stages whose models this run has, in stage order. */
export function builtStages(models: Models): StageName[] {
  return STAGES.filter((s) => models[s] !== undefined);
}

/** A stage's model; throws for an upsampler the run did not build. */
export function stageModel(models: Models, stage: StageName): Clip | DiffusionPrior | Decoder {
  const m = models[stage];
  if (!m) throw new Error(`this run has no ${stage} model (stages.${stage}.steps is 0)`);
  return m;
}

export function disposeModels(models: Models): void {
  for (const s of builtStages(models)) tf.dispose([...stageModel(models, s).params().values()]);
}

/** One batch as the loader hands it over. */
export interface HostBatch {
  images: Float32Array;
  captions: string[];
}

/** A batch on the device, with whatever the stage needs from the frozen CLIP. Dispose after the step. */
export interface StageBatch {
  images: tf.Tensor4D;
  /** Caption tokens at the trained model's own context length. */
  tokens: tf.Tensor2D;
  textEmb?: tf.Tensor2D;
  imageEmb?: tf.Tensor2D;
  /** Upsampler stage: the images pooled to its low resolution. */
  lowRes?: tf.Tensor4D;
}

export function toStageBatch(models: Models, stage: StageName, batch: HostBatch, imageSize: number): StageBatch {
  return tf.tidy(() => {
    const images = tf.tensor4d(batch.images, [batch.captions.length, imageSize, imageSize, 3]);
    const tokens = models.tokenizer.tokenize(batch.captions, stageModel(models, stage).config.contextLength);
    if (stage === 'clip') return { images, tokens };
    // The frozen CLIP: no variableGrads scope is open here, so nothing is taped.
    const imageEmb = models.clip.encodeImage(images);
    const textEmb = stage === 'prior' ? models.clip.encodeText(models.tokenizer.tokenize(batch.captions, models.clip.config.contextLength)) : undefined;
    if (stage === 'prior') return { images, tokens, imageEmb, textEmb };
    // CLIP embeds the full-resolution image; the decoder learns to draw it at its own resolution, the upsampler to
    // draw it at its own from the same image pooled to its low resolution.
    const model = stageModel(models, stage) as Decoder;
    const stageImages = poolTo(images, model.config.imageSize);
    const lowRes = model.config.lowResSize > 0 ? poolTo(images, model.config.lowResSize) : undefined;
    return { images: stageImages, tokens, imageEmb, lowRes };
  });
}

export function disposeStageBatch(b: StageBatch): void {
  tf.dispose([b.images, b.tokens, b.textEmb, b.imageEmb, b.lowRes].filter((t): t is tf.Tensor2D | tf.Tensor4D => t !== undefined));
}

/**
 * The built stages whose weights a checkpoint holds, in stage order: all of them, except an upsampler added (by
 * giving it steps) when resuming a run saved without one — that keeps its seeded init, as it would have had.
 */
export function savedStages(models: Models, weights: Map<string, unknown>): StageName[] {
  const hasUpsampler = [...weights.keys()].some((k) => k.startsWith('upsampler.'));
  return builtStages(models).filter((s) => s !== 'upsampler' || hasUpsampler);
}

/** Whether a checkpoint's run had trained `stage` for at least one step when it was written. */
export function stageStarted(manifest: Pick<Manifest, 'stage' | 'stage_step'>, stage: StageName): boolean {
  const at = STAGES.indexOf(manifest.stage as StageName);
  return at > STAGES.indexOf(stage) || (at === STAGES.indexOf(stage) && manifest.stage_step > 0);
}

/** The params a stage trains, in params() order. */
export function stageParams(models: Models, stage: StageName): Map<string, tf.Variable> {
  return stageModel(models, stage).params();
}

/** The stage's loss on a batch; randomness inside (noise, timesteps, condition dropout) comes from `seed`. */
export function stageLoss(models: Models, stage: StageName, b: StageBatch, seed: number): tf.Scalar {
  switch (stage) {
    case 'clip':
      return models.clip.loss({ images: b.images, tokens: b.tokens });
    case 'prior':
      return models.prior.loss({ tokens: b.tokens, textEmb: b.textEmb!, imageEmb: b.imageEmb! }, seed);
    case 'decoder':
      return models.decoder.loss({ images: b.images, imageEmb: b.imageEmb!, tokens: b.tokens }, seed);
    case 'upsampler':
      return (stageModel(models, 'upsampler') as Decoder).loss({ images: b.images, imageEmb: b.imageEmb!, tokens: b.tokens, lowRes: b.lowRes }, seed);
  }
}

/** One all-gather of a step: every rank passes an array of the same length and gets all of them in rank order. */
export type AllGather = (own: Float32Array) => Promise<Float32Array>;

export interface GlobalClipLoss {
  /** Rows (samples) each rank holds this step, in rank order; their sum is the global batch. */
  rows: number[];
  /** This rank's loss closure (for trainStep), or undefined when this rank holds no rows. */
  loss: (() => tf.Scalar) | undefined;
}

/**
 * CLIP's contrastive loss over the global batch of a data-parallel step, for one rank (see losses.ts for why the
 * gradients come out right). Every rank of the step must call it, with or without a batch, since it all-gathers:
 *   1. this rank's embeddings are computed once without gradient and sent as [rows, images…, texts…], each
 *      block padded to `maxRows` (ranks may hold fewer rows, or none, at the end of a shard or an epoch);
 *   2. the returned closure (synchronous, as tf.variableGrads needs) re-encodes the own rows live and puts them
 *      between the other ranks' rows, which are constants, in rank order.
 * The loss it returns is the global batch's on every rank; the trainer's sample-weighted mean of the gradients
 * (rank r weighted by rows[r]) is the single-process gradient of the global batch.
 */
export async function clipGlobalLoss(clip: Clip, batch: StageBatch | undefined, maxRows: number, rank: number, gather: AllGather): Promise<GlobalClipLoss> {
  const d = clip.config.embedDim;
  const n = batch ? batch.images.shape[0] : 0;
  if (n > maxRows) throw new Error(`a batch of ${n} rows does not fit the ${maxRows} rows every rank gathers`);
  const slot = 1 + 2 * maxRows * d;
  const own = new Float32Array(slot);
  own[0] = n;
  if (batch && n > 0) {
    const [image, text] = tf.tidy(() => [clip.encodeImage(batch.images), clip.encodeText(batch.tokens)]);
    own.set(image.dataSync(), 1);
    own.set(text.dataSync(), 1 + maxRows * d);
    tf.dispose([image, text]);
  }
  const all = await gather(own);
  const world = all.length / slot;
  if (!Number.isInteger(world)) throw new Error(`gathered ${all.length} floats of CLIP embeddings, not a multiple of ${slot} (${maxRows} rows of ${d} per rank)`);
  const rows = Array.from({ length: world }, (_, r) => all[r * slot]);
  const bad = rows.findIndex((x) => !Number.isInteger(x) || x < 0 || x > maxRows);
  if (bad >= 0) throw new Error(`rank ${bad} sent ${rows[bad]} rows of CLIP embeddings, at most ${maxRows} fit: do the ranks run the same config?`);
  if (!batch || n === 0) return { rows, loss: undefined };
  // The other ranks' rows as plain numbers, split around this rank's place.
  const offset = rows.slice(0, rank).reduce((a, b) => a + b, 0);
  const others = (block: 0 | 1, ranks: number[]) => {
    const out = new Float32Array(ranks.reduce((k, r) => k + rows[r], 0) * d);
    let at = 0;
    for (const r of ranks) {
      const from = r * slot + 1 + block * maxRows * d;
      out.set(all.subarray(from, from + rows[r] * d), at);
      at += rows[r] * d;
    }
    return out;
  };
  const before = Array.from({ length: rank }, (_, r) => r);
  const after = Array.from({ length: world - rank - 1 }, (_, i) => rank + 1 + i);
  const blocks = ([0, 1] as const).map((b) => ({ before: others(b, before), after: others(b, after) }));
  const inOrder = (live: tf.Tensor2D, b: { before: Float32Array; after: Float32Array }): tf.Tensor2D => {
    const parts = [tf.tensor2d(b.before, [b.before.length / d, d]), live, tf.tensor2d(b.after, [b.after.length / d, d])];
    return tf.concat(parts.filter((t) => t.shape[0] > 0), 0);
  };
  const loss = () =>
    contrastiveLoss(inOrder(clip.encodeImage(batch.images), blocks[0]), inOrder(clip.encodeText(batch.tokens), blocks[1]), clip.logitScale, { offset, size: n });
  return { rows, loss };
}

export interface LoadedCheckpoint {
  /** URL of the checkpoint folder that was read (latest.json resolved). */
  url: string;
  config: RunConfig;
  manifest: Manifest;
  /**
   * CLIP with its trained weights; prior, decoder and upsampler with their EMA weights unless `weights: 'live'`.
   * No upsampler unless the checkpoint's run had trained one (an untrained upsampler would only add noise).
   */
  models: Models;
  /** Frees the models. */
  dispose(): void;
}

/**
 * Loads a checkpoint for sampling or evaluation: a run's checkpoint root (follows latest.json) or one checkpoint
 * folder. By default the prior and decoder get their EMA weights, which is what sampling should use.
 */
export async function loadCheckpoint(url: string, opts: { weights?: 'ema' | 'live' } = {}): Promise<LoadedCheckpoint> {
  const ckpt = await readCheckpoint(url);
  const config = parseRunConfig(ckpt.manifest.config, `run config in ${ckpt.url}/manifest.json`);
  await initBackend(config.backend === 'auto' ? undefined : config.backend);
  const models = buildModels(config, checkpointTokenizer(ckpt.manifest, ckpt.url));
  try {
    if (models.upsampler && !stageStarted(ckpt.manifest, 'upsampler')) {
      tf.dispose([...models.upsampler.params().values()]);
      models.upsampler = undefined;
    }
    for (const s of builtStages(models)) {
      const ema = (EMA_STAGES as readonly string[]).includes(s) && (opts.weights ?? 'ema') === 'ema';
      assignWeights(stageModel(models, s).params(), ckpt.weights, ema ? `ema.${s}.` : `${s}.`);
    }
  } catch (err) {
    disposeModels(models);
    throw err;
  }
  return { url: ckpt.url, config, manifest: ckpt.manifest, models, dispose: () => disposeModels(models) };
}
