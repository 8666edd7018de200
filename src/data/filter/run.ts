// filterDataset: streams every input shard through the checks and publishes, per input shard, a filtered
// tar under the same key followed by its `_stats.json`. That per-shard stats file is the shard's done marker:
// it is written last, so a re-run after a crash skips exactly the shards whose output is complete and redoes
// the rest, overwriting (never duplicating) any tar a crashed run published without its marker.
import { Transform } from 'node:stream';
import type { ObjectStore } from '../store/types.ts';
import { listShards, readShard, emptyReadStats, ShardReadError, type ShardInfo } from '../webdataset/reader.ts';
import { writeShard } from '../webdataset/writer.ts';
import { statsKeyFor } from '../webdataset/names.ts';
import type { Sample } from '../webdataset/sample.ts';
import { logger } from '../../util/log.ts';
import type { FilterConfig } from './config.ts';
import { mapOrdered } from '../webdataset/ordered.ts';
import { checkSample, type LanguageCheck, type Verdict } from './sample.ts';
import { addCounts, assertBalanced, emptyCounts, type FailedShard, type FilterStats, type ShardStats } from './stats.ts';

const log = logger('filter');

/** Key of the run's totals, and of the settings the output was made with (a resume must use the same). */
export const STATS_KEY = 'stats.json';
export const CONFIG_KEY = 'filter_config.json';

export interface FilterProgress {
  shardsTotal: number;
  /** Shards finished (by this run or an earlier one) or failed. */
  shardsDone: number;
  /** Samples checked by this run so far, and how many of them were kept. */
  samples: number;
  kept: number;
  /** Input bytes of the shards still to do at the start of this run, and how many of them were read since. */
  bytesTotal: number;
  bytesRead: number;
  elapsedMs: number;
}

export interface FilterOptions {
  input: ObjectStore;
  output: ObjectStore;
  config: FilterConfig;
  language: LanguageCheck;
  /** Called after every sample and every shard. */
  onProgress?: (p: FilterProgress) => void;
}

/** Runs the filter over every `NNNNN.tar` in `input`; returns the totals also written to `<out>/stats.json`. */
export async function filterDataset(opts: FilterOptions): Promise<FilterStats> {
  const { input, output, config } = opts;
  if (input.url === output.url) throw new Error(`--out must differ from --in (${input.url}): the filter would overwrite its input`);
  const shards = await listShards(input);
  if (shards.length === 0) throw new Error(`no shards (NNNNN.tar) found at ${input.url}`);
  await claimOutput(output, config);

  // One listing instead of a request per shard: a resumed run over 100k shards starts in seconds on S3.
  const present = new Set<string>();
  for await (const o of output.list()) present.add(o.key);
  const done = new Map<string, ShardStats>();
  for (const s of shards) if (present.has(statsKeyFor(s.key))) done.set(s.key, await readShardStats(output, s.key));
  if (done.size > 0) log.info('resuming', { finished: done.size, remaining: shards.length - done.size });

  const todo = shards.filter((s) => !done.has(s.key));
  const progress: FilterProgress = {
    shardsTotal: shards.length,
    shardsDone: done.size,
    samples: 0,
    kept: 0,
    bytesTotal: todo.reduce((n, s) => n + s.size, 0),
    bytesRead: 0,
    elapsedMs: 0,
  };
  const started = performance.now();
  const report = () => opts.onProgress?.({ ...progress, elapsedMs: performance.now() - started });
  const counted = countingReads(input, (n) => (progress.bytesRead += n));

  const failed: FailedShard[] = [];
  for (const shard of todo) {
    try {
      const stats = await filterShard(counted, output, shard, opts, (v) => {
        progress.samples++;
        if (v.keep) progress.kept++;
        report();
      });
      await output.put(statsKeyFor(shard.key), JSON.stringify(stats, null, 2) + '\n');
      done.set(shard.key, stats);
      log.info('shard done', { shard: shard.key, input: stats.input, kept: stats.kept, seconds: stats.seconds });
    } catch (err) {
      const error = err instanceof ShardReadError ? err.message : `shard ${shard.key}: ${(err as Error).message}`;
      failed.push({ shard: shard.key, error });
      log.error('shard failed; a re-run retries it', { shard: shard.key, error });
      // A tar left by an earlier, crashed attempt must not stay beside the finished shards as if it were one.
      await output.delete(shard.key).catch((e: Error) => log.warn('could not remove the failed shard\'s old output', { shard: shard.key, error: e.message }));
    }
    progress.shardsDone++;
    report();
  }

  const totals = emptyCounts();
  for (const s of shards) {
    const st = done.get(s.key);
    if (st) addCounts(totals, st);
  }
  const stats: FilterStats = { ...totals, shards: { total: shards.length, done: done.size, failed: failed.length }, failed_shards: failed };
  assertBalanced(stats, 'filter totals');
  await output.put(STATS_KEY, JSON.stringify(stats, null, 2) + '\n');
  return stats;
}

/** Filters one shard into a tar of the same key; throws (publishing nothing) if the shard cannot be read. */
async function filterShard(
  input: ObjectStore,
  output: ObjectStore,
  shard: ShardInfo,
  opts: FilterOptions,
  onVerdict: (v: Verdict) => void,
): Promise<ShardStats> {
  const t0 = performance.now();
  const counts = emptyCounts();
  const read = emptyReadStats();
  const check = async (sample: Sample) => ({ sample, verdict: await checkSample(sample, opts.config, opts.language) });
  async function* kept(): AsyncGenerator<Sample> {
    for await (const { sample, verdict } of mapOrdered(readShard(input, shard.key, { stats: read }), opts.config.workers, check)) {
      counts.input++;
      if (verdict.keep) counts.kept++;
      else {
        counts.dropped[verdict.reason]++;
        log.debug('dropped', { key: sample.key, reason: verdict.reason, detail: verdict.detail });
      }
      onVerdict(verdict);
      if (verdict.keep) yield sample;
    }
  }
  await writeShard(output, shard.key, kept());
  assertBalanced(counts, `shard ${shard.key}`);
  return {
    shard: shard.key,
    ...counts,
    skipped_members: { duplicate: read.duplicateMembers, oversized: read.oversizedMembers, not_a_member: read.skippedEntries },
    seconds: Math.round((performance.now() - t0) / 10) / 100,
  };
}

/** Settings that change which samples are kept; a resumed run must match them or its output would be mixed. */
function outputSettings(c: FilterConfig) {
  return { lang: c.lang, minAspect: c.minAspect, maxAspect: c.maxAspect, minCaptionChars: c.minCaptionChars, minCaptionWords: c.minCaptionWords, maxPixels: c.maxPixels };
}

/** Records the settings in a fresh output, or checks a resumed output was made with the same ones. */
async function claimOutput(output: ObjectStore, config: FilterConfig): Promise<void> {
  const wanted = outputSettings(config);
  if (await output.head(CONFIG_KEY)) {
    const prior = JSON.parse((await output.getBytes(CONFIG_KEY)).toString('utf8')) as unknown;
    if (JSON.stringify(prior) !== JSON.stringify(wanted)) {
      throw new Error(
        `${output.url} holds output filtered with different settings (${JSON.stringify(prior)}); ` +
          `use a fresh --out or the same settings (${JSON.stringify(wanted)} given)`,
      );
    }
    return;
  }
  for await (const o of output.list()) {
    if (/(\.tar|_stats\.json)$/.test(o.key)) throw new Error(`${output.url} already holds shards (${o.key}) that the filter did not write; use an empty --out`);
  }
  await output.put(CONFIG_KEY, JSON.stringify(wanted, null, 2) + '\n');
}

/** The done marker of a finished shard. */
async function readShardStats(output: ObjectStore, shardKey: string): Promise<ShardStats> {
  const key = statsKeyFor(shardKey);
  const stats = JSON.parse((await output.getBytes(key)).toString('utf8')) as ShardStats;
  assertBalanced(stats, key);
  return stats;
}

/** The store with every get() stream counted as it is consumed (for the progress bar's ETA). */
function countingReads(store: ObjectStore, onBytes: (n: number) => void): ObjectStore {
  return {
    url: store.url,
    async get(key, range) {
      const source = await store.get(key, range);
      const counter = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          onBytes(chunk.length);
          cb(null, chunk);
        },
      });
      source.on('error', (err) => counter.destroy(err));
      counter.on('close', () => source.destroy());
      return source.pipe(counter);
    },
    getBytes: (key, range) => store.getBytes(key, range),
    put: (key, body) => store.put(key, body),
    head: (key) => store.head(key),
    list: (prefix) => store.list(prefix),
    delete: (key) => store.delete(key),
    close: () => store.close(),
  };
}
