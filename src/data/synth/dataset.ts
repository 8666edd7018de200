// The synthetic dataset: rendered shapes with captions, written in img2dataset's layout. Every sample is a
// pure function of (seed, split, shard, index), so the same config always gives byte-identical shards.
//
//   <out>/00000.tar …            training split (a share of samples deliberately broken for the filter)
//   <out>/00000_stats.json …     img2dataset-style per-shard stats
//   <out>/eval/00000.tar …       held-out colour–shape pairs, all good samples, never in the training split
//   <out>/synth.json             manifest: config, vocabulary, held-out pairs, counts by drop reason
import { z } from 'zod';
import { deriveSeed, Rng } from '../../util/rng.ts';
import type { ObjectStore } from '../store/types.ts';
import { joinKey, mapOrdered, sampleKey, shardName, statsKeyFor, writeShard, type Sample } from '../webdataset/index.ts';
import { randomEnglishCaption, randomForeignCaption } from './captions.ts';
import { renderImage, type ImageFormat } from './render.ts';
import {
  BACKGROUNDS,
  COLORS,
  SHAPES,
  SIZES,
  SIZE_FRACTION,
  pairName,
  parseColorShapePairs,
  type ColorShape,
  type Defect,
  type DropReason,
  type GroundTruth,
  type ShapeSpec,
} from './spec.ts';

export const SynthConfig = z.object({
  shards: z.number().int().min(1).default(4).describe('training shards to write'),
  perShard: z.number().int().min(1).max(10000).default(256).describe('samples per shard (img2dataset keys allow at most 10000)'),
  size: z.number().int().min(8).max(1024).default(64).describe('side of the square images in pixels'),
  seed: z.number().int().min(0).default(0).describe('seed: the same config and seed give byte-identical shards'),
  badFraction: z.number().min(0).max(1).default(0.1).describe('share of training samples the filter must drop (foreign caption, bad aspect ratio, broken image, empty caption)'),
  holdout: z
    .string()
    .default('green triangle,yellow square')
    .describe('comma-separated "<colour> <shape>" pairs kept out of the training split and written to eval/')
    .superRefine((v, ctx) => {
      try {
        parseColorShapePairs(v);
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: (err as Error).message });
      }
    }),
  evalPerPair: z.number().int().min(0).default(16).describe('eval-split samples per held-out pair'),
  format: z.enum(['jpg', 'png', 'webp']).default('jpg').describe('image encoding of the good samples'),
  jitter: z
    .number()
    .min(0)
    .max(1)
    .default(1)
    .describe('how far a shape may sit from the canvas centre, as a share of the room its margins leave (1 = anywhere, 0 = always centred)'),
});
export type SynthConfig = z.output<typeof SynthConfig>;

const SPLIT_ID = { train: 1, eval: 2 } as const;
const DROP_REASONS: DropReason[] = ['language', 'aspect_ratio', 'image', 'caption'];
const DEFECTS: Record<DropReason, Defect[]> = {
  language: ['foreign-caption'],
  aspect_ratio: ['too-wide', 'too-tall'],
  image: ['truncated-jpeg', 'not-an-image', 'zero-bytes'],
  caption: ['empty-caption', 'blank-caption'],
};

/** The colour–shape pairs of the training split: every pair except the held-out ones. */
export function trainingPairs(holdout: ColorShape[]): ColorShape[] {
  const held = new Set(holdout.map(pairName));
  const pairs = COLORS.flatMap((color) => SHAPES.map((shape) => ({ color, shape })));
  return pairs.filter((p) => !held.has(pairName(p)));
}

/** A random placement of `pair` on a width × height canvas, at most `jitter` of the free room off centre. */
export function drawSpec(rng: Rng, pair: ColorShape, width: number, height: number, jitter = 1): ShapeSpec {
  const background = BACKGROUNDS[rng.int(BACKGROUNDS.length)];
  const size = SIZES[rng.int(SIZES.length)];
  const extent = Math.max(3, Math.round(SIZE_FRACTION[size] * Math.min(width, height)));
  const margin = Math.max(1, Math.round(0.04 * Math.min(width, height)));
  const place = (side: number) => {
    const lo = extent / 2 + margin;
    const hi = side - extent / 2 - margin;
    if (hi <= lo) return side / 2;
    const u = rng.float();
    // jitter = 1 keeps the original arithmetic, so existing seeds give byte-identical shards.
    return jitter === 1 ? lo + u * (hi - lo) : side / 2 + (u - 0.5) * jitter * (hi - lo);
  };
  const cx = place(width);
  const cy = place(height);
  return { ...pair, background, size, width, height, cx, cy, extent };
}

const NOT_AN_IMAGE = Buffer.from('<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1></body></html>\n');

/** Everything that makes up one sample, before encoding. */
interface Planned {
  truth: GroundTruth;
  caption: string;
}

function plan(cfg: SynthConfig, pairs: ColorShape[], split: 'train' | 'eval', shard: number, index: number, evalPair?: ColorShape): Planned {
  const rng = new Rng(deriveSeed(cfg.seed, SPLIT_ID[split], shard, index));
  const bad = split === 'train' && rng.float() < cfg.badFraction;
  const drop = bad ? DROP_REASONS[rng.int(DROP_REASONS.length)] : undefined;
  const defect = drop ? DEFECTS[drop][rng.int(DEFECTS[drop].length)] : undefined;
  const pair = evalPair ?? pairs[rng.int(pairs.length)];
  let width = cfg.size;
  let height = cfg.size;
  if (defect === 'too-wide' || defect === 'too-tall') {
    const long = cfg.size * (3 + rng.int(2)); // 3:1 or 4:1, well outside [1/2, 2]
    if (defect === 'too-wide') width = long;
    else height = long;
  }
  const spec = drawSpec(rng, pair, width, height, cfg.jitter);
  let lang = 'en';
  let caption: string;
  if (defect === 'foreign-caption') {
    const foreign = randomForeignCaption(spec, rng);
    lang = foreign.lang;
    caption = foreign.text;
  } else if (defect === 'empty-caption') caption = '';
  else if (defect === 'blank-caption') caption = ' \n\t ';
  else caption = randomEnglishCaption(spec, rng);
  const truth: GroundTruth = { ...spec, split, lang, ...(drop ? { drop, defect } : {}) };
  return { truth, caption };
}

async function encode(cfg: SynthConfig, p: Planned): Promise<{ ext: string; bytes: Buffer }> {
  switch (p.truth.defect) {
    case 'truncated-jpeg': {
      const whole = await renderImage(p.truth, 'jpg');
      return { ext: 'jpg', bytes: whole.subarray(0, Math.floor(whole.length * 0.6)) };
    }
    case 'not-an-image':
      return { ext: 'jpg', bytes: NOT_AN_IMAGE };
    case 'zero-bytes':
      return { ext: 'jpg', bytes: Buffer.alloc(0) };
    default:
      return { ext: cfg.format, bytes: await renderImage(p.truth, cfg.format as ImageFormat) };
  }
}

async function buildSample(cfg: SynthConfig, key: string, p: Planned): Promise<Sample> {
  const image = await encode(cfg, p);
  const meta = {
    key,
    caption: p.caption,
    url: `synth://${cfg.seed}/${p.truth.split}/${key}`,
    width: p.truth.width,
    height: p.truth.height,
    original_width: p.truth.width,
    original_height: p.truth.height,
    status: 'success',
    error_message: null,
    synth: p.truth,
  };
  return { key, image, caption: Buffer.from(p.caption), json: Buffer.from(JSON.stringify(meta)), extra: {} };
}

/** The ground truth and caption of training sample `index` of shard `shard` (no rendering). */
export function planTrainingSample(cfg: SynthConfig, shard: number, index: number): Planned {
  return plan(cfg, trainingPairs(parseColorShapePairs(cfg.holdout)), 'train', shard, index);
}

/** Builds (renders and encodes) training sample `index` of shard `shard`. */
export async function trainingSample(cfg: SynthConfig, shard: number, index: number): Promise<Sample> {
  return buildSample(cfg, sampleKey(shard, index), planTrainingSample(cfg, shard, index));
}

export interface SynthManifest {
  config: SynthConfig;
  vocabulary: { shapes: readonly string[]; colors: readonly string[]; backgrounds: readonly string[]; sizes: readonly string[] };
  holdout: ColorShape[];
  train: { shards: string[]; samples: number; good: number; dropped: Record<DropReason, number> };
  eval: { shards: string[]; samples: number };
}

const RENDERS_IN_FLIGHT = 4;

/** Writes the whole dataset under `prefix` of `store` and returns its manifest (also written as synth.json). */
export async function writeSynthDataset(store: ObjectStore, config: z.input<typeof SynthConfig>, prefix = '', onShard?: (key: string) => void): Promise<SynthManifest> {
  const cfg = SynthConfig.parse(config);
  const holdout = parseColorShapePairs(cfg.holdout);
  const pairs = trainingPairs(holdout);
  if (pairs.length === 0) throw new Error('holdout: every colour–shape pair is held out, nothing is left to train on');
  const dropped: Record<DropReason, number> = { language: 0, aspect_ratio: 0, image: 0, caption: 0 };
  const manifest: SynthManifest = {
    config: cfg,
    vocabulary: { shapes: SHAPES, colors: COLORS, backgrounds: BACKGROUNDS, sizes: SIZES },
    holdout,
    train: { shards: [], samples: 0, good: 0, dropped },
    eval: { shards: [], samples: 0 },
  };

  for (let shard = 0; shard < cfg.shards; shard++) {
    const key = joinKey(prefix, shardName(shard));
    const indices = Array.from({ length: cfg.perShard }, (_, i) => i);
    const samples = mapOrdered(indices, RENDERS_IN_FLIGHT, (i) => {
      const planned = plan(cfg, pairs, 'train', shard, i);
      if (planned.truth.drop) dropped[planned.truth.drop]++;
      else manifest.train.good++;
      return buildSample(cfg, sampleKey(shard, i), planned);
    });
    const n = await writeShard(store, key, samples);
    await store.put(statsKeyFor(key), JSON.stringify(img2datasetStats(n)));
    manifest.train.shards.push(key);
    manifest.train.samples += n;
    onShard?.(key);
  }

  // Eval split: evalPerPair samples of each held-out pair, packed into shards of perShard.
  const evalPlans = holdout.flatMap((pair) => Array.from({ length: cfg.evalPerPair }, () => pair));
  for (let shard = 0; shard * cfg.perShard < evalPlans.length; shard++) {
    const key = joinKey(joinKey(prefix, 'eval'), shardName(shard));
    const chunk = evalPlans.slice(shard * cfg.perShard, (shard + 1) * cfg.perShard);
    const samples = mapOrdered(
      chunk.map((pair, i) => ({ pair, i })),
      RENDERS_IN_FLIGHT,
      ({ pair, i }) => buildSample(cfg, sampleKey(shard, i), plan(cfg, pairs, 'eval', shard, i, pair)),
    );
    const n = await writeShard(store, key, samples);
    await store.put(statsKeyFor(key), JSON.stringify(img2datasetStats(n)));
    manifest.eval.shards.push(key);
    manifest.eval.samples += n;
    onShard?.(key);
  }

  await store.put(joinKey(prefix, 'synth.json'), JSON.stringify(manifest, null, 2) + '\n');
  return manifest;
}

/** The `{shard}_stats.json` img2dataset writes beside each tar (times fixed, so output stays reproducible). */
function img2datasetStats(count: number) {
  return { count, successes: count, failed_to_download: 0, failed_to_resize: 0, duration: 0, start_time: 0, end_time: 0, status_dict: { success: count } };
}
