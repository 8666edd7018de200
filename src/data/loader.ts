// Shards → training batches. The sample stream is: epochs in turn; in each epoch the shards in a seeded
// order; in each shard the samples through a seeded shuffle buffer. Every raw sample has a position
// {epoch, shard (place in that epoch's order), sample (place in the shard's shuffled order)}, and a batch
// carries the position after its last sample, so a checkpoint that stores it resumes at exactly the next
// batch: the resumed loader re-runs the same shuffle over the shard's bytes and skips, without decoding,
// the samples before the cursor. Images decode on libvips' threads with a bounded number in flight, and
// whole batches are prepared `prefetch` ahead while the trainer computes.
import sharp from 'sharp';
import { z } from 'zod';
import { deriveSeed, Rng } from '../util/rng.ts';
import { logger } from '../util/log.ts';
import type { ObjectStore } from './store/types.ts';
import { mapOrdered, prefetch, readShard, ShardReadError, type Sample } from './webdataset/index.ts';

const log = logger('loader');

/** Position in the sample stream; plain JSON, stored in checkpoints. */
export interface LoaderCursor {
  epoch: number;
  /** Place in this epoch's shard order. */
  shard: number;
  /** Samples of that shard (in its shuffled order) already consumed. */
  sample: number;
}

export interface Batch {
  /** B × imageSize × imageSize × 3, NHWC, values in [-1, 1]. */
  images: Float32Array;
  captions: string[];
  keys: string[];
  /** Position after this batch: a loader opened with it yields exactly the batches that would have followed. */
  cursor: LoaderCursor;
}

export const LoaderConfig = z.object({
  batchSize: z.number().int().min(1).default(16).describe('samples per batch'),
  imageSize: z.number().int().min(1).max(4096).default(32).describe('side of the square images a batch holds (centre-cropped, then resized)'),
  seed: z.number().int().min(0).default(0).describe('seed of the shard order and the within-shard shuffle'),
  shuffleBuffer: z.number().int().min(1).default(1000).describe('samples held for the within-shard shuffle (≥ shard size = a full shuffle)'),
  prefetch: z.number().int().min(0).default(2).describe('batches prepared ahead of the trainer'),
  decodeConcurrency: z.number().int().min(1).default(4).describe('images decoding at once'),
  epochs: z.number().int().min(1).optional().describe('passes over the shards before the loader ends (unset: endless)'),
  dropLast: z.boolean().default(false).describe('drop the final partial batch (only with finite epochs)'),
  maxPixels: z.number().int().min(1).default(8192 * 8192).describe('images with more pixels are refused (decompression bombs)'),
});
export type LoaderConfig = z.output<typeof LoaderConfig>;

export interface LoaderOptions extends Partial<LoaderConfig> {
  store: ObjectStore;
  /** Shard keys; their order here only matters through the seeded permutation. */
  shards: string[];
  batchSize: number;
  imageSize: number;
  seed: number;
  cursor?: LoaderCursor;
}

/** What the loader passed over. Samples skipped are not fatal: the data should have been filtered. */
export interface LoaderStats {
  samples: number;
  batches: number;
  skipped: { missing_image: number; missing_caption: number; caption_encoding: number; image: number };
  /** Shards that could not be read to the end (their complete samples were used). */
  failedShards: Array<{ shard: string; reason: string }>;
}

export interface Loader extends AsyncIterableIterator<Batch> {
  readonly stats: LoaderStats;
}

/** The epoch's shard order: a permutation of 0..n-1 from (seed, epoch). */
export function shardOrder(n: number, seed: number, epoch: number): number[] {
  return new Rng(deriveSeed(seed, epoch, 0x5a4d)).shuffle(Array.from({ length: n }, (_, i) => i));
}

/** A stable number for a shard key, so a shard shuffles the same way whichever list it is in. */
function keyHash(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/**
 * Shuffles a stream with a buffer of `size` items: fill, then emit a random buffered item for each new one,
 * then drain in random order. Yields each item with a flag saying whether it is the stream's last.
 */
export async function* shuffleBuffered<T>(source: AsyncIterable<T>, size: number, rng: Rng, onError?: (err: unknown) => void): AsyncGenerator<{ item: T; last: boolean }> {
  const buf: T[] = [];
  const take = (): T => {
    const j = rng.int(buf.length);
    const item = buf[j];
    buf[j] = buf[buf.length - 1];
    buf.pop();
    return item;
  };
  try {
    for await (const item of source) {
      buf.push(item);
      if (buf.length > size) yield { item: take(), last: false };
    }
  } catch (err) {
    if (!onError) throw err;
    onError(err);
  }
  while (buf.length) {
    const item = take();
    yield { item, last: buf.length === 0 };
  }
}

/** A raw sample and the stream position after it. */
interface Positioned {
  shard: string;
  sample: Sample;
  after: LoaderCursor;
}

/**
 * The samples of ONE shard in the loader's order for (seed, epoch), from `startSample` on (earlier ones are
 * shuffled past without being yielded). A distributed trainer that leases single shards calls this directly.
 */
export async function* shardSamples(
  store: ObjectStore,
  shardKey: string,
  opts: { seed: number; epoch: number; shuffleBuffer?: number; startSample?: number; onError?: (err: ShardReadError) => void },
): AsyncGenerator<{ sample: Sample; index: number; last: boolean }> {
  const rng = new Rng(deriveSeed(opts.seed, opts.epoch, keyHash(shardKey)));
  const onError = opts.onError ? (err: unknown) => opts.onError!(toShardError(shardKey, err)) : undefined;
  let index = 0;
  for await (const { item, last } of shuffleBuffered(readShard(store, shardKey), opts.shuffleBuffer ?? 1000, rng, onError)) {
    if (index >= (opts.startSample ?? 0)) yield { sample: item, index, last };
    index++;
  }
}

function toShardError(shard: string, err: unknown): ShardReadError {
  return err instanceof ShardReadError ? err : new ShardReadError(shard, (err as Error).message, 0);
}

async function* positionedSamples(opts: LoaderOptions, cfg: LoaderConfig, stats: LoaderStats): AsyncGenerator<Positioned> {
  const n = opts.shards.length;
  if (n === 0) throw new Error('loader: no shards to read');
  let { epoch, shard, sample } = opts.cursor ?? { epoch: 0, shard: 0, sample: 0 };
  const epochs = cfg.epochs ?? Infinity;
  for (; epoch < epochs; epoch++, shard = 0, sample = 0) {
    const order = shardOrder(n, cfg.seed, epoch);
    const fromStart = shard === 0 && sample === 0;
    let yielded = 0;
    for (; shard < n; shard++, sample = 0) {
      const key = opts.shards[order[shard]];
      const onError = shardFailureLogger(stats, key);
      for await (const s of shardSamples(opts.store, key, { seed: cfg.seed, epoch, shuffleBuffer: cfg.shuffleBuffer, startSample: sample, onError })) {
        const after = !s.last ? { epoch, shard, sample: s.index + 1 } : shard + 1 < n ? { epoch, shard: shard + 1, sample: 0 } : { epoch: epoch + 1, shard: 0, sample: 0 };
        yielded++;
        yield { shard: key, sample: s.sample, after };
      }
    }
    // Without this an endless loader over shards that are all empty or unreadable would spin forever.
    if (fromStart && yielded === 0) throw new Error(`loader: a whole epoch over ${n} shards produced no samples`);
  }
}

/**
 * Decodes an image file into `size × size × 3` floats in [-1, 1]: EXIF orientation applied, alpha flattened
 * onto white, any colour space converted to sRGB, 8 bits per channel, centre-cropped to a square, resized.
 */
export async function decodeImage(bytes: Buffer, size: number, maxPixels = 8192 * 8192): Promise<Float32Array> {
  const { data, info } = await sharp(bytes, { limitInputPixels: maxPixels, failOn: 'error' })
    .rotate()
    .flatten({ background: '#ffffff' })
    .toColourspace('srgb')
    .resize(size, size, { fit: 'cover', position: 'centre' })
    .removeAlpha()
    .raw({ depth: 'uchar' })
    .toBuffer({ resolveWithObject: true });
  if (info.width !== size || info.height !== size || info.channels !== 3 || data.length !== size * size * 3) {
    throw new Error(`decoded to ${info.width}×${info.height}×${info.channels}, expected ${size}×${size}×3`);
  }
  const out = new Float32Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = data[i] / 127.5 - 1;
  return out;
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

type Decoded = { ok: true; key: string; caption: string; image: Float32Array; after: LoaderCursor } | { ok: false; key: string; why: keyof LoaderStats['skipped']; detail: string; after: LoaderCursor };

async function decodeSample(p: Positioned, cfg: LoaderConfig): Promise<Decoded> {
  const { sample, after } = p;
  if (!sample.image) return { ok: false, key: sample.key, why: 'missing_image', detail: 'no image member', after };
  if (!sample.caption) return { ok: false, key: sample.key, why: 'missing_caption', detail: 'no .txt member', after };
  let caption: string;
  try {
    caption = UTF8.decode(sample.caption);
  } catch {
    return { ok: false, key: sample.key, why: 'caption_encoding', detail: 'caption is not UTF-8', after };
  }
  try {
    return { ok: true, key: sample.key, caption, image: await decodeImage(sample.image.bytes, cfg.imageSize, cfg.maxPixels), after };
  } catch (err) {
    return { ok: false, key: sample.key, why: 'image', detail: (err as Error).message, after };
  }
}

async function* batches(source: AsyncIterable<Positioned>, cfg: LoaderConfig, stats: LoaderStats): AsyncGenerator<Batch> {
  const pixels = cfg.imageSize * cfg.imageSize * 3;
  let images = new Float32Array(cfg.batchSize * pixels);
  let captions: string[] = [];
  let keys: string[] = [];
  const emit = (cursor: LoaderCursor): Batch => {
    const b = { images: captions.length === cfg.batchSize ? images : images.slice(0, captions.length * pixels), captions, keys, cursor };
    stats.batches++;
    images = new Float32Array(cfg.batchSize * pixels);
    captions = [];
    keys = [];
    return b;
  };
  let lastAfter: LoaderCursor | undefined;
  for await (const d of mapOrdered(source, cfg.decodeConcurrency, (p) => decodeSample(p, cfg))) {
    lastAfter = d.after;
    if (!d.ok) {
      stats.skipped[d.why]++;
      log.warn('sample skipped', { key: d.key, reason: d.why, detail: d.detail });
      continue;
    }
    images.set(d.image, captions.length * pixels);
    captions.push(d.caption);
    keys.push(d.key);
    stats.samples++;
    if (captions.length === cfg.batchSize) yield emit(d.after);
  }
  if (captions.length > 0 && !cfg.dropLast) yield emit(lastAfter!);
}

function newStats(): LoaderStats {
  return { samples: 0, batches: 0, skipped: { missing_image: 0, missing_caption: 0, caption_encoding: 0, image: 0 }, failedShards: [] };
}

function shardFailureLogger(stats: LoaderStats, key: string): (err: ShardReadError) => void {
  return (err) => {
    log.error('shard failed; using its complete samples and going on', { shard: key, reason: err.reason });
    stats.failedShards.push({ shard: key, reason: err.reason });
  };
}

/** Opens the batch stream described in the module comment. */
export function openLoader(opts: LoaderOptions): Loader {
  const { store: _store, shards: _shards, cursor, ...rest } = opts;
  const cfg = LoaderConfig.parse(rest);
  if (cursor) {
    const ok = [cursor.epoch, cursor.shard, cursor.sample].every((v) => Number.isInteger(v) && v >= 0) && cursor.shard <= opts.shards.length;
    if (!ok) throw new Error(`loader cursor ${JSON.stringify(cursor)} is not a position in ${opts.shards.length} shards`);
  }
  const stats = newStats();
  return Object.assign(prefetch(batches(positionedSamples(opts, cfg, stats), cfg, stats), cfg.prefetch), { stats });
}

export interface ShardBatchOptions extends Partial<LoaderConfig> {
  store: ObjectStore;
  /** The one shard to read. */
  shard: string;
  /** Epoch whose within-shard shuffle to use. */
  epoch: number;
  batchSize: number;
  imageSize: number;
  seed: number;
  /** Samples of the shard (in its shuffled order) already consumed: a batch's cursor.sample. */
  startSample?: number;
}

/**
 * The batches of ONE shard, for a trainer that leases shards: the same decode and within-shard order as
 * openLoader for that (seed, epoch), the last batch partial unless dropLast. Each batch's cursor is
 * {epoch, shard: 0, sample: samples of this shard consumed}; the final one's sample is the shard's size.
 */
export function shardBatches(opts: ShardBatchOptions): Loader {
  const { store, shard, epoch, startSample, ...rest } = opts;
  const cfg = LoaderConfig.parse(rest);
  const stats = newStats();
  async function* positioned(): AsyncGenerator<Positioned> {
    const samples = shardSamples(store, shard, { seed: cfg.seed, epoch, shuffleBuffer: cfg.shuffleBuffer, startSample, onError: shardFailureLogger(stats, shard) });
    for await (const s of samples) yield { shard, sample: s.sample, after: { epoch, shard: 0, sample: s.index + 1 } };
  }
  return Object.assign(prefetch(batches(positioned(), cfg, stats), cfg.prefetch), { stats });
}
