// Re-packs samples into numbered WebDataset shards of a fixed sample count. Each shard is streamed into
// store.put while it is being packed (only the sample being written is in memory, and the tar stream's
// backpressure holds the caller back), and put publishes it atomically: a reader sees a whole shard or none.
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import type { ObjectStore } from '../store/types.ts';
import { joinKey, shardName } from './names.ts';
import { sampleMembers, type Sample } from './sample.ts';

export interface ShardWriterOptions {
  /** Folder (key prefix) the shards go into; '' = the store root. */
  prefix?: string;
  /** Samples per shard; the last shard may hold fewer. */
  samplesPerShard: number;
  /** Number of the first shard written (a resumed run continues the numbering). */
  firstShard?: number;
  /** mtime stamped on every member; fixed so the same samples always give byte-identical shards. */
  mtime?: Date;
  /** Called after each shard is published. */
  onShard?: (shard: WrittenShard) => void | Promise<void>;
}

export interface WrittenShard {
  key: string;
  index: number;
  samples: number;
  /** Keys of the first and last sample in the shard. */
  firstKey: string;
  lastKey: string;
}

/** One tar being streamed into the store. */
class OpenShard {
  readonly pack = tar.pack();
  readonly upload: Promise<void>;
  samples = 0;
  firstKey = '';
  lastKey = '';

  constructor(
    store: ObjectStore,
    readonly key: string,
    readonly index: number,
    private readonly mtime: Date,
  ) {
    this.upload = store.put(key, Readable.from(this.pack, { objectMode: false }));
    // put's rejection is reported by add()/finish(); keep it from surfacing as unhandled meanwhile.
    this.upload.catch(() => {});
  }

  async add(sample: Sample): Promise<void> {
    for (const [name, bytes] of sampleMembers(sample)) {
      await Promise.race([
        new Promise<void>((resolve, reject) => {
          this.pack.entry({ name, size: bytes.length, mtime: this.mtime, mode: 0o644 }, bytes, (err) => (err ? reject(err) : resolve()));
        }),
        // An upload that dies stops reading the pack, so the entry would never finish: surface its error instead.
        this.upload.then(() => {
          throw new Error(`upload of ${this.key} ended before the shard was complete`);
        }),
      ]);
    }
    if (this.samples === 0) this.firstKey = sample.key;
    this.lastKey = sample.key;
    this.samples++;
  }

  async finish(): Promise<WrittenShard> {
    this.pack.finalize();
    await this.upload;
    return { key: this.key, index: this.index, samples: this.samples, firstKey: this.firstKey, lastKey: this.lastKey };
  }

  /** Fails the upload, so nothing is published, and waits until the store has cleaned up. */
  async abort(err: Error): Promise<void> {
    this.pack.destroy(err);
    await this.upload.catch(() => {});
  }
}

/**
 * Writes samples into `00000.tar`, `00001.tar`… under a prefix. Call write() for each sample (awaiting it),
 * flush() to end the current shard early, and close() at the end. On failure call abort(): the shard being
 * written is never published.
 */
export class ShardWriter {
  private current: OpenShard | undefined;
  private nextIndex: number;
  private readonly mtime: Date;
  readonly written: WrittenShard[] = [];

  constructor(
    private readonly store: ObjectStore,
    private readonly opts: ShardWriterOptions,
  ) {
    if (!Number.isInteger(opts.samplesPerShard) || opts.samplesPerShard < 1) {
      throw new Error(`samplesPerShard must be a positive integer, got ${opts.samplesPerShard}`);
    }
    this.nextIndex = opts.firstShard ?? 0;
    this.mtime = opts.mtime ?? new Date(0);
  }

  /** Key the next shard will be published under. */
  get nextShardKey(): string {
    return joinKey(this.opts.prefix ?? '', shardName(this.current ? this.current.index : this.nextIndex));
  }

  async write(sample: Sample): Promise<void> {
    if (!this.current) {
      const index = this.nextIndex++;
      this.current = new OpenShard(this.store, joinKey(this.opts.prefix ?? '', shardName(index)), index, this.mtime);
    }
    try {
      await this.current.add(sample);
    } catch (err) {
      await this.abort(err as Error);
      throw err;
    }
    if (this.current.samples >= this.opts.samplesPerShard) await this.flush();
  }

  /** Publishes the shard being written, if it holds any samples. */
  async flush(): Promise<void> {
    const shard = this.current;
    if (!shard) return;
    this.current = undefined;
    const done = await shard.finish();
    this.written.push(done);
    await this.opts.onShard?.(done);
  }

  /** Publishes the last, partial shard. Returns every shard this writer published. */
  async close(): Promise<WrittenShard[]> {
    await this.flush();
    return this.written;
  }

  /** Abandons the shard being written: its upload fails, nothing appears under its key, and the next write reuses the key. */
  async abort(err: Error = new Error('shard writer aborted')): Promise<void> {
    const shard = this.current;
    this.current = undefined;
    if (!shard) return;
    this.nextIndex = shard.index;
    await shard.abort(err);
  }
}

/** Writes `samples` as one tar under `key` (streamed, atomic). Returns the number of samples written. */
export async function writeShard(store: ObjectStore, key: string, samples: Iterable<Sample> | AsyncIterable<Sample>, mtime = new Date(0)): Promise<number> {
  const shard = new OpenShard(store, key, 0, mtime);
  try {
    for await (const s of samples) await shard.add(s);
  } catch (err) {
    await shard.abort(err as Error);
    throw err;
  }
  return (await shard.finish()).samples;
}
