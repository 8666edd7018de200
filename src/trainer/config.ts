// The run file (`easel train --config run.yaml`): one zod schema for a whole training run — data, the stages
// (CLIP, prior, decoder and an optional upsampler) with their optimisers, schedules and model configs, validation,
// checkpoints, and the coordinator's settings for a distributed run. The YAML run file, the CLI and the Kubernetes
// TrainingRun spec are all validated by it; every error names the field path.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { validate, UsageError } from '../cli/args.ts';
import { CoordinatorConfig } from '../coordinator/config.ts';
import { ClipConfig } from '../model/clip.ts';
import { PriorConfig } from '../model/prior.ts';
import { DecoderConfig } from '../model/unet.ts';

export const STAGES = ['clip', 'prior', 'decoder', 'upsampler'] as const;
export type StageName = (typeof STAGES)[number];

export const OptimizerConfig = z.strictObject({
  lr: z.number().positive().default(1e-3).describe('peak Adam learning rate'),
  beta1: z.number().min(0).lt(1).default(0.9).describe('Adam β1 (first-moment decay)'),
  beta2: z.number().min(0).lt(1).default(0.999).describe('Adam β2 (second-moment decay)'),
  epsilon: z.number().positive().default(1e-8).describe('Adam ε added to the denominator'),
  weightDecay: z.number().min(0).default(0).describe('decoupled (AdamW) weight decay per unit learning rate, on matrices and kernels only'),
  clipGradNorm: z.number().min(0).default(0).describe('clip the global L2 norm of the (all-reduced) gradient to this before the update; 0 = no clipping'),
});
export type OptimizerConfig = z.infer<typeof OptimizerConfig>;

export const ScheduleConfig = z.strictObject({
  warmupSteps: z.number().int().min(0).default(20).describe('steps of linear warmup from 0 to lr'),
  minLrRatio: z.number().min(0).max(1).default(0.1).describe('learning rate at the last step as a fraction of lr (cosine decay)'),
});

/** Fields every stage has; the model config (and the EMA decay, for diffusion stages) are added per stage. */
function stageFields(steps: number, lr: number) {
  return {
    steps: z.number().int().min(0).default(steps).describe('optimiser steps in this stage (0 skips it)'),
    batchSize: z.number().int().positive().optional().describe('examples per step in this stage (default: data.batchSize)'),
    optimizer: OptimizerConfig.prefault({ lr }).describe('Adam settings'),
    schedule: ScheduleConfig.prefault({}).describe('learning-rate schedule: warmup then cosine'),
  };
}

const emaDecay = z.number().min(0).lt(1).default(0.995).describe('decay of the EMA weights used for sampling');

export const RunConfig = z
  .strictObject({
    name: z.string().regex(/^[a-z0-9][a-z0-9-]*$/, 'lowercase letters, digits and dashes').default('run').describe('run name (used in logs, metrics and Kubernetes)'),
    seed: z.number().int().min(0).max(0xffffffff).default(1).describe('base seed: model init, data order and every random draw derive from it'),
    backend: z.enum(['auto', 'tensorflow', 'wasm', 'cpu']).default('auto').describe('tfjs backend; auto = fastest that loads (EASEL_BACKEND also overrides)'),
    logEvery: z.number().int().positive().default(10).describe('log loss and samples/s every N steps'),
    data: z
      .strictObject({
        train: z.string().min(1).default('./data/train').describe('store URL (file://, s3:// or path) holding the training shards (NNNNN.tar directly under it)'),
        eval: z.string().min(1).optional().describe('store URL of held-out shards (filtered) for `easel eval`, and for validation during training when validation.every > 0'),
        imageSize: z.number().int().min(8).default(32).describe('side of the square images fed to the models, in pixels'),
        batchSize: z.number().int().positive().default(32).describe('examples per step, unless a stage overrides it'),
        prefetch: z.number().int().min(0).default(2).describe('batches the loader prepares ahead of the trainer'),
      })
      .prefault({})
      .describe('training data'),
    tokenizer: z
      .strictObject({
        merges: z
          .number()
          .int()
          .min(0)
          .default(0)
          .describe('byte-level BPE merges learnt from the training captions when the run starts (0: plain UTF-8 bytes, one token each); CLIP uses 49,152'),
        learnFrom: z.number().int().positive().default(20_000).describe('captions read to learn the merges: the first ones of data.train, in shard order'),
      })
      .prefault({})
      .describe('how captions become tokens; the learnt merges are saved in every checkpoint'),
    stages: z
      .strictObject({
        clip: z
          .strictObject({ ...stageFields(300, 1e-3), model: ClipConfig.strict().prefault({}).describe('CLIP architecture') })
          .prefault({})
          .describe('stage 1: CLIP (contrastive)'),
        prior: z
          .strictObject({ ...stageFields(300, 3e-4), emaDecay, model: PriorConfig.strict().prefault({}).describe('prior architecture') })
          .prefault({})
          .describe('stage 2: diffusion prior, against the frozen CLIP'),
        decoder: z
          .strictObject({ ...stageFields(300, 3e-4), emaDecay, model: DecoderConfig.strict().prefault({}).describe('decoder (UNet) architecture') })
          .prefault({})
          .describe('stage 3: diffusion decoder, against the frozen CLIP'),
        upsampler: z
          .strictObject({
            ...stageFields(0, 3e-4),
            emaDecay,
            model: DecoderConfig.strict()
              .prefault({ imageSize: 32, lowResSize: 16, channels: 16, channelMults: [1, 2], clipTokens: 0, captionContext: false })
              .describe('upsampler (UNet) architecture: a decoder config with lowResSize = the decoder’s imageSize'),
          })
          .prefault({})
          .describe('stage 4 (optional, 0 steps by default): diffusion upsampler from the decoder’s resolution to its own, conditioned on the low-res image and the frozen CLIP’s embedding'),
      })
      .prefault({})
      .describe('the stages, trained in order CLIP → prior → decoder → upsampler'),
    validation: z
      .strictObject({
        every: z.number().int().min(0).default(0).describe('steps of each stage between held-out losses, and one at each stage end (0: none; needs data.eval)'),
        samples: z.number().int().min(1).default(64).describe('held-out pairs each validation scores: the first ones of data.eval, in shard order'),
      })
      .prefault({})
      .describe('held-out loss during training: each stage’s own loss on the same pairs of data.eval with the same noise every time, outside the gradient tape'),
    samples: z
      .strictObject({
        every: z.number().int().min(0).default(0).describe('steps of the decoder and upsampler stages between sample grids, and one at each of their ends (0: none)'),
        prompts: z
          .array(z.string().min(1))
          .min(1)
          .default(['a red circle on a white background', 'a green triangle on a black background'])
          .describe('captions drawn, one grid row each'),
        n: z.number().int().min(1).max(16).default(4).describe('images per prompt'),
        steps: z.number().int().min(1).max(1000).default(25).describe('sampling steps of the prior, decoder and upsampler'),
      })
      .prefault({})
      .describe('sample grids during training: the prompts drawn with the EMA weights, written as <checkpoint.url>/samples/step-<global step>.png'),
    checkpoint: z
      .strictObject({
        url: z.string().min(1).default('./checkpoints').describe('store URL (file://, s3:// or path) for checkpoints and latest.json'),
        everySteps: z.number().int().min(0).default(100).describe('write a checkpoint every N steps (0: only at stage ends)'),
        everyMinutes: z.number().min(0).default(10).describe('also write one when this many minutes passed since the last (0: never)'),
        keep: z.number().int().min(1).default(3).describe('how many checkpoints to keep; older ones are deleted'),
      })
      .prefault({})
      .describe('checkpoints'),
    coordinator: CoordinatorConfig.prefault({}).describe(
      'distributed runs only (`easel coordinator`, `easel run`, the operator): heartbeats, leases, elastic bounds, epochs, HTTP; `easel train` ignores it',
    ),
  })
  .superRefine((c, ctx) => {
    // The models must agree on the shapes they exchange; say which field disagrees with which.
    const same = (path: string, value: number, refPath: string, ref: number) => {
      if (value !== ref) ctx.addIssue({ code: 'custom', path: path.split('.'), message: `must equal ${refPath} (${ref}), got ${value}` });
    };
    const { clip, prior, decoder, upsampler } = c.stages;
    same('stages.prior.model.embedDim', prior.model.embedDim, 'stages.clip.model.embedDim', clip.model.embedDim);
    same('stages.decoder.model.embedDim', decoder.model.embedDim, 'stages.clip.model.embedDim', clip.model.embedDim);
    same('stages.clip.model.imageSize', clip.model.imageSize, 'data.imageSize', c.data.imageSize);
    if (decoder.model.lowResSize !== 0) {
      ctx.addIssue({ code: 'custom', path: ['stages', 'decoder', 'model', 'lowResSize'], message: `must be 0: the base decoder draws from the CLIP embedding alone (stages.upsampler is the one with a low-res input), got ${decoder.model.lowResSize}` });
    }
    // The decoder (and upsampler) may work below the data's resolution (unCLIP: CLIP at 224 px, the decoder at
    // 64, upsamplers to 256 and 1024): their training images are the data's, average-pooled by a whole factor.
    const pooled = (stage: 'decoder' | 'upsampler', size: number) => {
      if (c.data.imageSize % size === 0) return;
      ctx.addIssue({
        code: 'custom',
        path: ['stages', stage, 'model', 'imageSize'],
        message: `must divide data.imageSize (${c.data.imageSize}) so its images are the data's pooled by a whole factor, got ${size}`,
      });
    };
    pooled('decoder', decoder.model.imageSize);
    if (c.validation.every > 0 && c.data.eval === undefined) {
      ctx.addIssue({ code: 'custom', path: ['data', 'eval'], message: `is required with validation.every = ${c.validation.every}: the held-out shards to validate on` });
    }
    // An upsampler that will not train is never built: its model need not fit the run.
    if (upsampler.steps > 0) {
      same('stages.upsampler.model.embedDim', upsampler.model.embedDim, 'stages.clip.model.embedDim', clip.model.embedDim);
      same('stages.upsampler.model.lowResSize', upsampler.model.lowResSize, 'stages.decoder.model.imageSize', decoder.model.imageSize);
      pooled('upsampler', upsampler.model.imageSize);
    }
  });
export type RunConfig = z.infer<typeof RunConfig>;

/** Validates a parsed run file (or a Kubernetes spec); throws a UsageError naming every bad field. */
export function parseRunConfig(value: unknown, what = 'run config'): RunConfig {
  return validate(RunConfig, value ?? {}, what);
}

/** Reads and validates a YAML (or JSON) run file. */
export async function loadRunConfig(path: string): Promise<RunConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read run file ${path}: ${(err as Error).message}`);
  }
  let value: unknown;
  try {
    value = parseYaml(text);
  } catch (err) {
    throw new UsageError(`run file ${path} is not valid YAML: ${(err as Error).message}`);
  }
  return parseRunConfig(value, `run file ${path}`);
}

/** The batch size a stage trains with. */
export function stageBatchSize(config: RunConfig, stage: StageName): number {
  return config.stages[stage].batchSize ?? config.data.batchSize;
}

/** Every key of the run file with its default and description, one per line (`easel train --describe`). */
export function describeRunConfig(): string {
  const lines: string[] = [];
  const walk = (schema: Record<string, any>, path: string) => {
    for (const [key, prop] of Object.entries<Record<string, any>>(schema.properties ?? {})) {
      const p = path ? `${path}.${key}` : key;
      if (prop.type === 'object' && prop.properties) {
        lines.push(`${p}:  ${prop.description ?? ''}`);
        walk(prop, p);
      } else {
        const dflt = prop.default === undefined ? '(optional)' : JSON.stringify(prop.default);
        lines.push(`${p} = ${dflt}  ${prop.description ?? ''}`);
      }
    }
  };
  walk(z.toJSONSchema(RunConfig, { io: 'input', unrepresentable: 'any' }) as Record<string, any>, '');
  return lines.join('\n');
}

/** One field that differs between two configs: its dotted path and both values (undefined: absent). */
export interface ConfigDifference {
  path: string;
  a: unknown;
  b: unknown;
}

/**
 * The fields (leaves; arrays compared whole) that differ between two parsed configs, in the order of `a`'s keys
 * (for two validated run configs: the schema's order), then keys only `b` has.
 */
export function configDifferences(a: unknown, b: unknown, path = ''): ConfigDifference[] {
  const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (isRecord(a) && isRecord(b)) {
    const keys = [...Object.keys(a), ...Object.keys(b).filter((k) => !(k in a))];
    return keys.flatMap((k) => configDifferences(a[k], b[k], path ? `${path}.${k}` : k));
  }
  return canonicalJson(a) === canonicalJson(b) ? [] : [{ path: path || '(root)', a, b }];
}

/** JSON with every object's keys sorted: equal for equal configs whatever order their keys were written in. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    typeof v === 'object' && v !== null && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0))) : v,
  );
}

/** sha256 of the canonical JSON of a config (first 16 hex digits): two processes compare configs by this. */
export function configHash(config: unknown): string {
  return createHash('sha256').update(canonicalJson(config) ?? 'undefined').digest('hex').slice(0, 16);
}

/** A value as a difference message shows it (`(absent)` for a missing field). */
export function showValue(v: unknown): string {
  return v === undefined ? '(absent)' : typeof v === 'string' ? v : JSON.stringify(v);
}

/** Formats differences as `path: <aName> has x, <bName> has y`. */
export function showDifference(aName: string, bName: string): (d: ConfigDifference) => string {
  return (d) => `${d.path}: ${aName} has ${showValue(d.a)}, ${bName} has ${showValue(d.b)}`;
}

/** How a run config differs from the one a run was started (or a checkpoint written) with. */
export interface ResumeCompatibility {
  /** Model architecture fields: the saved weights cannot be loaded into this model. */
  incompatible: ConfigDifference[];
  /** Everything else (step budgets, learning rates, logging, checkpoint cadence, coordinator…): allowed. */
  changed: ConfigDifference[];
}

/** Model fields that only shape training (guidance dropout rates, loss weighting): saved weights stay valid when they change. */
const TRAINING_ONLY_MODEL_FIELDS = new Set(['condDrop', 'imageEmbDrop', 'captionDrop', 'minSnrGamma', 'snrWeightFloor', 'lowResNoise', 'lowResBlur']);

/**
 * Fields whose change makes saved weights unusable or meaningless: every model's architecture (shapes, but also
 * what it predicts: timesteps, schedule, objective), the image size, and the tokenizer's merge count (the token tables' rows).
 */
function isArchitecture(path: string): boolean {
  const m = /^stages\.[a-z]+\.model\.([^.]+)/.exec(path);
  // tokenizer.merges sizes the token tables; learnFrom only decides what a fresh run learns from (a resume keeps the
  // checkpoint's merges). 'tokenizer' whole: a saved config too old or odd to parse, compared as one value.
  return (m !== null && !TRAINING_ONLY_MODEL_FIELDS.has(m[1])) || path === 'data.imageSize' || path === 'tokenizer.merges' || path === 'tokenizer';
}

/**
 * Compares the config a run was saved with (`saved`, filled with today's defaults where it lacks a field) with
 * `config`. A run saved without an upsampler (0 steps: none was built, none saved) may add one of any shape.
 */
export function resumeCompatibility(saved: unknown, config: RunConfig): ResumeCompatibility {
  const parsed = RunConfig.safeParse(saved);
  const diffs = configDifferences(parsed.success ? parsed.data : saved, config);
  const unbuilt = parsed.success && parsed.data.stages.upsampler.steps === 0;
  const binding = (d: ConfigDifference) => isArchitecture(d.path) && !(unbuilt && d.path.startsWith('stages.upsampler.'));
  return { incompatible: diffs.filter(binding), changed: diffs.filter((d) => !binding(d)) };
}
