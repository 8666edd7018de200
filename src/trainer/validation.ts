// Held-out loss during training. Every `validation.every` steps of a stage (and at its end), the stage's own loss
// on the first `validation.samples` pairs of data.eval: in batches of the stage's batch size, each batch with its
// own fixed seed, so the noise, timesteps and dropout masks are the same at every validation and the figures form
// a curve. Forward passes only, outside the gradient tape, drawing no random state that training uses: a run
// validated and one not end with the same weights.
import * as tf from '@tensorflow/tfjs-core';
import { readHeldOut, type HeldOutSample } from '../data/heldout.ts';
import { logger } from '../util/log.ts';
import { deriveSeed } from '../util/rng.ts';
import { STAGES, stageBatchSize, type RunConfig, type StageName } from './config.ts';
import { disposeStageBatch, SEED, stageLoss, toStageBatch, type Models } from './models.ts';

const log = logger('validation');

export class Validation {
  private constructor(
    private readonly config: RunConfig,
    private readonly samples: HeldOutSample[],
  ) {}

  /** Reads the held-out pairs once; undefined when the run does not validate. */
  static async open(config: RunConfig): Promise<Validation | undefined> {
    const { every, samples } = config.validation;
    if (every === 0) return undefined;
    // The config schema requires data.eval with validation.every > 0.
    return new Validation(config, await readHeldOut(config.data.eval!, config.data.imageSize, samples));
  }

  /** The held-out loss (logged) if a validation is due after the step that brought `stage` to `stageStep` steps done. */
  after(models: Models, stage: StageName, stageStep: number): number | undefined {
    if (!this.due(stage, stageStep)) return undefined;
    const loss = this.loss(models, stage);
    log.info('held-out loss', { stage, step: `${stageStep}/${this.config.stages[stage].steps}`, loss: +loss.toFixed(5) });
    return loss;
  }

  /** Whether a validation follows the step that brought `stage` to `stageStep` steps done. */
  due(stage: StageName, stageStep: number): boolean {
    return stageStep % this.config.validation.every === 0 || stageStep === this.config.stages[stage].steps;
  }

  /** The stage's mean loss per held-out pair (a short last batch weighs by its size). */
  loss(models: Models, stage: StageName): number {
    const batch = stageBatchSize(this.config, stage);
    const size = this.config.data.imageSize;
    let total = 0;
    for (let i = 0, k = 0; i < this.samples.length; i += batch, k++) {
      const part = this.samples.slice(i, i + batch);
      const images = new Float32Array(part.length * size * size * 3);
      part.forEach((s, j) => images.set(s.image, j * size * size * 3));
      const device = toStageBatch(models, stage, { images, captions: part.map((s) => s.caption) }, size);
      try {
        // tidy: a loss leaves its intermediates to the caller's scope (training's is variableGrads').
        const loss = tf.tidy(() => stageLoss(models, stage, device, deriveSeed(this.config.seed, SEED.validation, STAGES.indexOf(stage), k)));
        total += loss.dataSync()[0] * part.length;
        loss.dispose();
      } finally {
        disposeStageBatch(device);
      }
    }
    return total / this.samples.length;
  }
}
