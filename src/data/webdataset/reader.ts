// Streams one WebDataset tar out of the object store and yields its samples one at a time. Members of a
// sample are adjacent in img2dataset tars, so a sample is a run of adjacent members with the same key and only
// that one sample is ever held in memory. A truncated or corrupt tar yields every sample known to be complete
// and then fails with a ShardReadError naming the shard and the reason.
import { Transform, type Readable } from 'node:stream';
import tar from 'tar-stream';
import type { ObjectStore } from '../store/types.ts';
import { parquetKeyFor, parseShardName, splitMemberName, statsKeyFor } from './names.ts';
import { addMember, type Sample } from './sample.ts';

/** What reading a shard found besides the samples themselves. Counts accumulate across shards. */
export interface ShardReadStats {
  /** Samples yielded. */
  samples: number;
  /** Samples without an image member (yielded all the same). */
  missingImage: number;
  /** Samples without a `.txt` member (yielded all the same). */
  missingCaption: number;
  /** Members whose role in their sample was already taken (e.g. a second `.txt`); dropped. */
  duplicateMembers: number;
  /** Members larger than `maxMemberBytes`; dropped without being buffered. */
  oversizedMembers: number;
  /** Tar entries that are not sample members (directories, names without an extension); skipped. */
  skippedEntries: number;
  /** A key seen again after other keys came between; its later members form a second sample. */
  splitKeys: number;
}

export function emptyReadStats(): ShardReadStats {
  return { samples: 0, missingImage: 0, missingCaption: 0, duplicateMembers: 0, oversizedMembers: 0, skippedEntries: 0, splitKeys: 0 };
}

export interface ReadShardOptions {
  /** Counters to add this shard's findings to. */
  stats?: ShardReadStats;
  /** Largest member kept in memory (bytes); bigger members are skipped and counted. */
  maxMemberBytes?: number;
}

/** A shard that could not be read to its end. `samplesYielded` samples came out before the failure. */
export class ShardReadError extends Error {
  constructor(
    readonly shard: string,
    readonly reason: string,
    readonly samplesYielded: number,
  ) {
    super(`shard ${shard}: ${reason} (after ${samplesYielded} complete samples)`);
    this.name = 'ShardReadError';
  }
}

const END_OF_ARCHIVE = 1024; // two zero blocks close every tar written by tar, Python's tarfile and img2dataset

/** Passes bytes through unchanged and remembers the last END_OF_ARCHIVE of them. */
class TailKeeper extends Transform {
  tail: Buffer = Buffer.alloc(0);
  total = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null, data?: Buffer) => void): void {
    this.total += chunk.length;
    this.tail = chunk.length >= END_OF_ARCHIVE ? chunk.subarray(-END_OF_ARCHIVE) : Buffer.concat([this.tail, chunk]).subarray(-END_OF_ARCHIVE);
    cb(null, chunk);
  }
  endsWithEndOfArchive(): boolean {
    return this.tail.length === END_OF_ARCHIVE && this.tail.every((b) => b === 0);
  }
}

/**
 * Yields the samples of the tar at `shardKey`. Samples missing an image or caption are yielded and counted.
 * Throws ShardReadError (after yielding every complete sample) if the tar is truncated or corrupt.
 */
export async function* readShard(store: ObjectStore, shardKey: string, opts: ReadShardOptions = {}): AsyncGenerator<Sample> {
  const stats = opts.stats ?? emptyReadStats();
  const maxMemberBytes = opts.maxMemberBytes ?? 256 * 1024 * 1024;
  let yielded = 0;
  const fail = (reason: string) => new ShardReadError(shardKey, reason, yielded);

  let source: Readable;
  try {
    source = await store.get(shardKey);
  } catch (err) {
    throw fail(`cannot open: ${(err as Error).message}`);
  }
  const tail = new TailKeeper();
  const extract = tar.extract();
  source.on('error', (err) => tail.destroy(err));
  tail.on('error', (err) => extract.destroy(err));
  source.pipe(tail).pipe(extract);

  const seen = new Set<string>();
  let pending: Sample | undefined;
  const finish = (s: Sample): Sample => {
    stats.samples++;
    if (!s.image) stats.missingImage++;
    if (!s.caption) stats.missingCaption++;
    yielded++;
    return s;
  };

  try {
    try {
      for await (const entry of extract) {
        const h = entry.header;
        const member = h.type === 'file' || h.type === 'contiguous-file' ? splitMemberName(h.name) : undefined;
        if (!member) {
          stats.skippedEntries++;
          entry.resume();
          continue;
        }
        if (pending && pending.key !== member.key) {
          const done = pending;
          pending = undefined;
          yield finish(done);
        }
        if (!pending) {
          if (seen.has(member.key)) stats.splitKeys++;
          seen.add(member.key);
          pending = { key: member.key, extra: {} };
        }
        if ((h.size ?? 0) > maxMemberBytes) {
          stats.oversizedMembers++;
          entry.resume();
          continue;
        }
        const chunks: Buffer[] = [];
        for await (const c of entry) chunks.push(c as Buffer);
        if (!addMember(pending, member.ext, Buffer.concat(chunks))) stats.duplicateMembers++;
      }
    } catch (err) {
      // The pending sample may have lost members to the failure, so it is not yielded.
      throw fail(describeTarError(err as Error));
    }
    if (!tail.endsWithEndOfArchive()) {
      throw fail(`truncated tar: ${tail.total} bytes end without the end-of-archive marker`);
    }
    if (pending) {
      const done = pending;
      pending = undefined;
      yield finish(done);
    }
  } finally {
    source.destroy();
    tail.destroy();
    extract.destroy();
  }
}

function describeTarError(err: Error): string {
  if (/Unexpected end of data/i.test(err.message)) return 'truncated tar: the stream ends inside a member';
  if (/Invalid (tar )?header/i.test(err.message)) return `corrupt tar: ${err.message}`;
  return `read failed: ${err.message}`;
}

/** A shard tar and the optional sidecars img2dataset writes beside it. */
export interface ShardInfo {
  /** Store key of the tar, e.g. `train/00003.tar`. */
  key: string;
  /** Shard number from the name. */
  index: number;
  size: number;
  parquet?: string;
  stats?: string;
}

/**
 * The numbered shards (`NNNNN.tar`) directly under `prefix` (not in deeper folders), ordered by shard number,
 * with the `.parquet` / `_stats.json` sidecars that exist beside them.
 */
export async function listShards(store: ObjectStore, prefix = ''): Promise<ShardInfo[]> {
  const dir = prefix.replace(/\/+$/, '');
  const start = dir ? `${dir}/` : '';
  const keys = new Map<string, number>();
  for await (const o of store.list(start)) {
    if (!o.key.slice(start.length).includes('/')) keys.set(o.key, o.size);
  }
  const shards: ShardInfo[] = [];
  for (const [key, size] of keys) {
    const index = parseShardName(key);
    if (index === undefined || !/^\d+\.tar$/.test(key.slice(start.length))) continue;
    const info: ShardInfo = { key, index, size };
    if (keys.has(parquetKeyFor(key))) info.parquet = parquetKeyFor(key);
    if (keys.has(statsKeyFor(key))) info.stats = statsKeyFor(key);
    shards.push(info);
  }
  return shards.sort((a, b) => a.index - b.index || (a.key < b.key ? -1 : 1));
}
