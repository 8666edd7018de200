// The single-process training run: stages CLIP → prior → decoder (→ upsampler) in order, each with its own step
// budget, Adam optimiser and LR schedule; CLIP frozen after its stage; EMA of the diffusion models' weights; checkpoints
// every N steps / T minutes and at each stage's end; `resume` continues a run bit for bit.
// Every random draw is seeded by deriveSeed(seed, SEED.step, stage, step), so a step's outcome depends only on
// the weights, the optimiser state, the batch (fixed by the data cursor) and its indices.
import * as tf from '@tensorflow/tfjs-core';
import { openStore, type ObjectStore } from '../data/store/index.ts';
import { openLoader, type LoaderCursor } from '../data/loader.ts';
import { listShards } from '../data/webdataset/index.ts';
import { initBackend } from '../model/backend.ts';
import { logger } from '../util/log.ts';
import { deriveSeed } from '../util/rng.ts';
import { readCheckpoint, restoreOptimizer, writeCheckpoint, assignWeights, checkResumable, isFleetCursor, type CheckpointData, type ManifestInput } from './checkpoint.ts';
import { STAGES, stageBatchSize, type RunConfig, type StageName } from './config.ts';
import { Ema } from './ema.ts';
import { SampleLog } from './samples.ts';
import { Validation } from './validation.ts';
import { checkpointTokenizer, learnRunTokenizer, tokenizerManifest } from './vocab.ts';
import { buildModels, builtStages, disposeModels, disposeStageBatch, EMA_STAGES, savedStages, SEED, stageLoss, stageParams, toStageBatch, type EmaStage, type Models } from './models.ts';
import { learningRateAt } from './schedule.ts';
import { identityReduce, trainStep, type Reduce } from './step.ts';

const log = logger('train');

export interface TrainOptions {
  /** 'latest' (the run's checkpoint.url) or a checkpoint URL. 'latest' with no checkpoint yet starts fresh. */
  resume?: string;
  /** The gradient all-reduce; identity in one process. */
  reduce?: Reduce;
  /** Write checkpoints (rank 0 of a distributed run); default true. */
  writeCheckpoints?: boolean;
  /** Stop after this many steps over all stages, writing a checkpoint (a resumable pause). */
  stopAtStep?: number;
  /** Aborting finishes the current step, writes a checkpoint and returns. */
  signal?: AbortSignal;
  /** Called after every step (metrics, tests). */
  onStep?: (s: StepReport) => void;
}

export interface StepReport {
  stage: StageName;
  stageStep: number;
  globalStep: number;
  loss: number;
  gradNorm: number;
  skipped: boolean;
  lr: number;
  /** The stage's held-out loss after this step, when a validation was due (validation.every). */
  validationLoss?: number;
}

/** Where a run stands; exactly what a checkpoint's manifest records. */
interface Progress {
  stage: number;
  stageStep: number;
  globalStep: number;
  cursor: LoaderCursor | null;
  skipped: Record<string, number>;
  loss: Record<string, number>;
}

export interface TrainResult {
  models: Models;
  ema: RunEma;
  globalStep: number;
  /** True when every stage ran to its budget (false: stopped early by stopAtStep or the signal). */
  finished: boolean;
  skippedSteps: Record<string, number>;
  lastCheckpoint: string | undefined;
  /** Frees the models and EMA weights. */
  dispose(): void;
}

/** EMA weights of the run's diffusion models (the upsampler's only when the run has one). */
export type RunEma = Partial<Record<EmaStage, Ema>>;

/** EMA shadows for every diffusion model the run built. */
export function runEma(models: Models): RunEma {
  return Object.fromEntries(EMA_STAGES.filter((s) => models[s]).map((s) => [s, new Ema(stageParams(models, s))]));
}

export function disposeRunEma(ema: RunEma): void {
  for (const e of Object.values(ema)) e.dispose();
}

/** Every tensor a checkpoint holds, under its checkpoint name: "clip.…", "prior.…", "decoder.…", "ema.prior.…". */
export function runWeights(models: Models, ema: RunEma): [string, tf.Tensor][] {
  const weights: [string, tf.Tensor][] = [];
  for (const s of builtStages(models)) for (const [n, v] of stageParams(models, s)) weights.push([`${s}.${n}`, v]);
  for (const s of EMA_STAGES) for (const [n, v] of ema[s]?.shadow ?? []) weights.push([`ema.${s}.${n}`, v]);
  return weights;
}

/** The inverse of runWeights: loads a checkpoint's weights and EMA into a run's models. */
export function restoreRunWeights(models: Models, ema: RunEma, ckpt: CheckpointData): void {
  for (const s of savedStages(models, ckpt.weights)) {
    assignWeights(stageParams(models, s), ckpt.weights, `${s}.`);
    const shadow = ema[s as EmaStage]?.shadow;
    if (shadow) assignWeights(shadow, ckpt.weights, `ema.${s}.`);
  }
}

/** The URL a resume option points at. */
function resumeUrl(config: RunConfig, resume: string): string {
  return resume === 'latest' ? config.checkpoint.url : resume;
}

async function loadResume(config: RunConfig, resume: string): Promise<CheckpointData | undefined> {
  const url = resumeUrl(config, resume);
  try {
    return await readCheckpoint(url);
  } catch (err) {
    if (resume === 'latest' && /no checkpoint at/.test((err as Error).message)) {
      log.warn(`no checkpoint yet at ${url}: starting from scratch`);
      return undefined;
    }
    throw err;
  }
}

/** The numbered shards (NNNNN.tar) directly under data.train, in shard order. */
async function trainingShards(url: string): Promise<{ store: ObjectStore; shards: string[] }> {
  const store = await openStore(url);
  const shards = (await listShards(store)).map((s) => s.key);
  if (shards.length === 0) {
    await store.close();
    throw new Error(`no shards (NNNNN.tar) under data.train = ${url}`);
  }
  return { store, shards };
}

export async function train(config: RunConfig, opts: TrainOptions = {}): Promise<TrainResult> {
  await initBackend(config.backend === 'auto' ? undefined : config.backend);
  const resumed = opts.resume ? await loadResume(config, opts.resume) : undefined;
  if (resumed) checkResumable(resumed, config);

  // A resumed run keeps the merges it was trained with; a fresh one learns them (if any) from its data.
  const tokenizer = resumed ? checkpointTokenizer(resumed.manifest, resumed.url) : await learnRunTokenizer(config);
  const models = buildModels(config, tokenizer);
  const ema = runEma(models);
  const dispose = () => {
    disposeModels(models);
    disposeRunEma(ema);
  };
  try {
    return await trainModels(config, opts, models, ema, resumed, dispose);
  } catch (err) {
    dispose();
    throw err;
  }
}

async function trainModels(config: RunConfig, opts: TrainOptions, models: Models, ema: RunEma, resumed: CheckpointData | undefined, dispose: () => void): Promise<TrainResult> {
  const reduce = opts.reduce ?? identityReduce;
  const progress: Progress = { stage: 0, stageStep: 0, globalStep: 0, cursor: null, skipped: {}, loss: {} };
  if (resumed) {
    const m = resumed.manifest;
    restoreRunWeights(models, ema, resumed);
    Object.assign(progress, {
      stage: STAGES.indexOf(m.stage as StageName),
      stageStep: m.stage_step,
      globalStep: m.global_step,
      // A distributed run's checkpoint carries the fleet's lease table, not a loader position: start the data over.
      cursor: isFleetCursor(m.data_cursor) ? null : m.data_cursor,
      skipped: { ...m.skipped_steps },
      loss: { ...m.loss },
    });
    if (progress.stage < 0) throw new Error(`${resumed.url}: unknown stage '${m.stage}' in manifest`);
    if (isFleetCursor(m.data_cursor)) log.warn('the checkpoint comes from a distributed run: one process reads the data from the start of its epoch', { from: resumed.url });
    log.info('resuming', { from: resumed.url, stage: m.stage, step: m.stage_step, global_step: m.global_step });
  }

  const validation = await Validation.open(config);
  const sampleLog = SampleLog.open(config);
  const { store: dataStore, shards } = await trainingShards(config.data.train);
  const ckptStore = opts.writeCheckpoints === false ? undefined : await openStore(config.checkpoint.url);
  let lastCheckpoint: string | undefined;
  let lastSaved = performance.now();

  const save = async (stage: StageName, optimizer: tf.Optimizer | undefined) => {
    if (!ckptStore) return;
    const manifest: ManifestInput = {
      run: config.name,
      stage,
      stage_step: progress.stageStep,
      global_step: progress.globalStep,
      data_cursor: progress.cursor,
      rng: { seed: config.seed, derivation: 'deriveSeed(seed, purpose, …): model init (1, stage), data order (2), step (3, stage, step)' },
      skipped_steps: progress.skipped,
      loss: progress.loss,
      config,
      ...tokenizerManifest(models.tokenizer),
    };
    lastCheckpoint = await writeCheckpoint(
      ckptStore,
      { manifest, weights: runWeights(models, ema), optimizer: optimizer ? { optimizer, params: stageParams(models, stage) } : undefined },
      config.checkpoint.keep,
    );
    lastSaved = performance.now();
  };

  let stopped = false;
  try {
    for (; progress.stage < STAGES.length && !stopped; progress.stage++, progress.stageStep = 0) {
      const stage = STAGES[progress.stage];
      const sc = config.stages[stage];
      if (progress.stageStep >= sc.steps) continue;
      stopped = await runStage(stage);
    }
  } finally {
    await dataStore.close();
    await ckptStore?.close();
  }
  const finished = !stopped;
  if (finished) log.info('training finished', { global_step: progress.globalStep, skipped: progress.skipped });
  return {
    models,
    ema,
    globalStep: progress.globalStep,
    finished,
    skippedSteps: progress.skipped,
    lastCheckpoint,
    dispose,
  };

  /** Trains one stage from progress.stageStep to its budget; returns true when stopped early. */
  async function runStage(stage: StageName): Promise<boolean> {
    const sc = config.stages[stage];
    const params = stageParams(models, stage);
    const { lr, beta1, beta2, epsilon, weightDecay, clipGradNorm } = sc.optimizer;
    const optimizer = tf.train.adam(lr, beta1, beta2, epsilon);
    if (resumed?.optimizer && resumed.manifest.stage === stage && progress.stageStep === resumed.manifest.stage_step && progress.stageStep > 0) {
      await restoreOptimizer(optimizer, params, resumed.optimizer);
    }
    const schedule = { lr, warmupSteps: sc.schedule.warmupSteps, totalSteps: sc.steps, minRatio: sc.schedule.minLrRatio };
    const batchSize = stageBatchSize(config, stage);
    const stageEma = stage === 'clip' ? undefined : ema[stage];
    const emaDecay = 'emaDecay' in sc ? sc.emaDecay : 0;
    const loader = openLoader({
      store: dataStore,
      shards,
      batchSize,
      imageSize: config.data.imageSize,
      seed: deriveSeed(config.seed, SEED.data),
      cursor: progress.cursor ?? undefined,
      prefetch: config.data.prefetch,
    })[Symbol.asyncIterator]();
    log.info(`stage ${stage}`, { from_step: progress.stageStep, steps: sc.steps, batch: batchSize, params: [...params.values()].reduce((n, v) => n + v.size, 0) });

    let windowStart = performance.now();
    let windowSteps = 0;
    let windowLoss = 0;
    try {
      while (progress.stageStep < sc.steps) {
        const next = await loader.next();
        if (next.done) throw new Error(`the data loader ended during stage ${stage} at step ${progress.stageStep}`);
        const batch = next.value;
        const seed = deriveSeed(config.seed, SEED.step, progress.stage, progress.stageStep);
        const lrNow = learningRateAt(schedule, progress.stageStep);
        const device = toStageBatch(models, stage, batch, config.data.imageSize);
        let r;
        try {
          r = await trainStep({ params, loss: () => stageLoss(models, stage, device, seed), optimizer, reduce, learningRate: lrNow, weightDecay, clipGradNorm });
        } finally {
          disposeStageBatch(device);
        }
        if (r.skipped) {
          progress.skipped[stage] = (progress.skipped[stage] ?? 0) + 1;
          log.warn('non-finite gradient: step skipped', { stage, step: progress.stageStep, skipped: progress.skipped[stage] });
        } else {
          stageEma?.update(params, emaDecay, progress.stageStep);
        }
        progress.cursor = batch.cursor;
        progress.stageStep++;
        progress.globalStep++;
        progress.loss[stage] = r.loss;
        const validationLoss = validation?.after(models, stage, progress.stageStep);
        opts.onStep?.({ stage, stageStep: progress.stageStep, globalStep: progress.globalStep, loss: r.loss, gradNorm: r.gradNorm, skipped: r.skipped, lr: lrNow, validationLoss });

        windowSteps++;
        windowLoss += r.loss;
        if (progress.stageStep % config.logEvery === 0 || progress.stageStep === sc.steps) {
          const secs = (performance.now() - windowStart) / 1000;
          log.info(stage, {
            step: `${progress.stageStep}/${sc.steps}`,
            loss: +(windowLoss / windowSteps).toFixed(5),
            lr: +lrNow.toExponential(3),
            'samples/s': +((windowSteps * batchSize) / secs).toFixed(2),
          });
          windowStart = performance.now();
          windowSteps = 0;
          windowLoss = 0;
        }

        const stageDone = progress.stageStep === sc.steps;
        const stop = progress.globalStep === opts.stopAtStep || opts.signal?.aborted === true;
        const due =
          (config.checkpoint.everySteps > 0 && progress.globalStep % config.checkpoint.everySteps === 0) ||
          (config.checkpoint.everyMinutes > 0 && performance.now() - lastSaved >= config.checkpoint.everyMinutes * 60_000);
        if (stageDone || stop || due) await save(stage, stageDone ? undefined : optimizer);
        if (ckptStore) await sampleLog?.after(models, ema, stage, progress.stageStep, progress.globalStep, ckptStore);
        if (stop) return !(stageDone && STAGES.slice(progress.stage + 1).every((s) => config.stages[s].steps === 0));
      }
      return false;
    } finally {
      await loader.return?.();
      optimizer.dispose();
    }
  }
}
