// Sample grids during training, to see what a run draws while it runs: every `samples.every` steps of the decoder
// and upsampler stages (and at each one's end), the run's prompts drawn with the EMA weights — as `easel generate`
// draws them from a checkpoint — into one PNG, <checkpoint.url>/samples/step-<global step>.png. The live weights
// are put back bit for bit and every draw is seeded, so a run that samples trains exactly as one that does not.
import * as tf from '@tensorflow/tfjs-core';
import type { ObjectStore } from '../data/store/types.ts';
import { generate, gridPng, gridScale } from '../eval/generate.ts';
import { logger } from '../util/log.ts';
import { deriveSeed } from '../util/rng.ts';
import { checkpointName } from './checkpoint.ts';
import type { RunConfig, StageName } from './config.ts';
import { EMA_STAGES, SEED, stageParams, type Models } from './models.ts';
import type { RunEma } from './train.ts';

const log = logger('samples');

export class SampleLog {
  private constructor(private readonly config: RunConfig) {}

  /** undefined when the run draws no samples. */
  static open(config: RunConfig): SampleLog | undefined {
    return config.samples.every > 0 ? new SampleLog(config) : undefined;
  }

  /** Whether a grid follows the step that brought `stage` to `stageStep` steps done: decoder and upsampler only. */
  due(stage: StageName, stageStep: number): boolean {
    if (stage !== 'decoder' && stage !== 'upsampler') return false;
    return stageStep % this.config.samples.every === 0 || stageStep === this.config.stages[stage].steps;
  }

  /**
   * Draws and writes the grid if one is due after the step that brought `stage` to `stageStep` steps done;
   * returns its key in `store`.
   */
  async after(models: Models, ema: RunEma, stage: StageName, stageStep: number, globalStep: number, store: ObjectStore): Promise<string | undefined> {
    if (!this.due(stage, stageStep)) return undefined;
    const { prompts, n, steps } = this.config.samples;
    // An upsampler that has not started training would only add noise: the decoder stage draws without it.
    const drawing: Models = { ...models, upsampler: stage === 'upsampler' ? models.upsampler : undefined };
    const live = withEmaWeights(drawing, ema);
    let png: Buffer;
    try {
      const results = await generate(drawing, prompts, { n, steps, priorSteps: steps, upsamplerSteps: steps, seed: deriveSeed(this.config.seed, SEED.samples) });
      png = await gridPng(results.map((r) => r.images), gridScale(results));
    } finally {
      live.restore();
    }
    // Named like the checkpoint of the same step, beside which it lies.
    const key = `samples/${checkpointName(globalStep)}.png`;
    await store.put(key, png);
    log.info('sample grid', { stage, step: stageStep, key: `${store.url}/${key}` });
    return key;
  }
}

/** Puts the EMA weights into the diffusion models it has; restore() puts the live ones back, bit for bit. */
function withEmaWeights(models: Models, ema: RunEma): { restore(): void } {
  const saved: [tf.Variable, tf.Tensor][] = [];
  for (const s of EMA_STAGES) {
    const shadow = ema[s];
    if (!shadow || !models[s]) continue;
    const params = stageParams(models, s);
    for (const v of params.values()) saved.push([v, tf.clone(v)]);
    shadow.copyTo(params);
  }
  return {
    restore() {
      for (const [v, t] of saved) {
        v.assign(t);
        t.dispose();
      }
    },
  };
}
