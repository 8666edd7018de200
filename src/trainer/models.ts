// The three unCLIP models of a run and what each stage trains: which params, on which loss. Prior and decoder
// train against the frozen CLIP: their embeddings are computed outside the gradient tape and disposed per step.
// loadCheckpoint() rebuilds a run's models from a checkpoint for sampling and evaluation.
import * as tf from '@tensorflow/tfjs-core';
import { Clip } from '../model/clip.ts';
import { DiffusionPrior } from '../model/prior.ts';
import { tokenize } from '../model/tokenizer.ts';
import { Decoder } from '../model/unet.ts';
import { initBackend } from '../model/backend.ts';
import { deriveSeed } from '../util/rng.ts';
import { assignWeights, readCheckpoint, type Manifest } from './checkpoint.ts';
import { parseRunConfig, STAGES, type RunConfig, type StageName } from './config.ts';

/** Namespaces of deriveSeed(config.seed, PURPOSE, …), so no two uses of the base seed collide. */
export const SEED = { model: 1, data: 2, step: 3 } as const;

export interface Models {
  clip: Clip;
  prior: DiffusionPrior;
  decoder: Decoder;
}

export function buildModels(config: RunConfig): Models {
  const seed = (s: StageName) => deriveSeed(config.seed, SEED.model, STAGES.indexOf(s));
  return {
    clip: new Clip(config.stages.clip.model, seed('clip')),
    prior: new DiffusionPrior(config.stages.prior.model, seed('prior')),
    decoder: new Decoder(config.stages.decoder.model, seed('decoder')),
  };
}

export function disposeModels(models: Models): void {
  for (const m of Object.values(models)) tf.dispose([...m.params().values()]);
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
}

export function toStageBatch(models: Models, stage: StageName, batch: HostBatch, imageSize: number): StageBatch {
  return tf.tidy(() => {
    const images = tf.tensor4d(batch.images, [batch.captions.length, imageSize, imageSize, 3]);
    const tokens = tokenize(batch.captions, models[stage].config.contextLength);
    if (stage === 'clip') return { images, tokens };
    // The frozen CLIP: no variableGrads scope is open here, so nothing is taped.
    const imageEmb = models.clip.encodeImage(images);
    const textEmb = stage === 'prior' ? models.clip.encodeText(tokenize(batch.captions, models.clip.config.contextLength)) : undefined;
    return { images, tokens, imageEmb, textEmb };
  });
}

export function disposeStageBatch(b: StageBatch): void {
  tf.dispose([b.images, b.tokens, b.textEmb, b.imageEmb].filter((t): t is tf.Tensor2D | tf.Tensor4D => t !== undefined));
}

/** The params a stage trains, in params() order. */
export function stageParams(models: Models, stage: StageName): Map<string, tf.Variable> {
  return models[stage].params();
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
  }
}

export interface LoadedCheckpoint {
  /** URL of the checkpoint folder that was read (latest.json resolved). */
  url: string;
  config: RunConfig;
  manifest: Manifest;
  /** CLIP with its trained weights; prior and decoder with their EMA weights unless `weights: 'live'`. */
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
  const models = buildModels(config);
  try {
    for (const s of STAGES) assignWeights(models[s].params(), ckpt.weights, `${s}.`);
    if ((opts.weights ?? 'ema') === 'ema') {
      for (const s of ['prior', 'decoder'] as const) assignWeights(models[s].params(), ckpt.weights, `ema.${s}.`);
    }
  } catch (err) {
    disposeModels(models);
    throw err;
  }
  return { url: ckpt.url, config, manifest: ckpt.manifest, models, dispose: () => disposeModels(models) };
}
