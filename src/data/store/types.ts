// The object store: the one narrow interface through which easel reads and writes datasets and checkpoints.
// Keys are relative to the store's root URL and always use '/' separators.
import type { Readable } from 'node:stream';

export interface ByteRange {
  /** First byte, inclusive. Negative = suffix range (the last -start bytes). */
  start: number;
  /** Last byte, inclusive; omitted = to the end. */
  end?: number;
}

export interface ObjectInfo {
  key: string;
  size: number;
}

export interface ObjectStore {
  /** The root URL this store was opened with (`file:///…` or `s3://bucket/prefix`), without credentials. */
  readonly url: string;
  /** Streams an object (or a byte range of it). Rejects with NotFoundError if it does not exist. */
  get(key: string, range?: ByteRange): Promise<Readable>;
  /** Reads a whole (small) object into memory. */
  getBytes(key: string, range?: ByteRange): Promise<Buffer>;
  /**
   * Publishes an object atomically: readers see either the old object or the whole new one, never a
   * partial write. Large or streamed bodies are uploaded in parts.
   */
  put(key: string, body: Buffer | Uint8Array | string | Readable): Promise<void>;
  /** Size of an object, or undefined if absent. */
  head(key: string): Promise<ObjectInfo | undefined>;
  /** All objects under a key prefix, in lexicographic key order, paginated underneath. */
  list(prefix?: string): AsyncIterable<ObjectInfo>;
  delete(key: string): Promise<void>;
  /** Releases sockets and handles; the store is unusable afterwards. */
  close(): Promise<void>;
}

export class NotFoundError extends Error {
  constructor(readonly url: string) {
    super(`object not found: ${url}`);
    this.name = 'NotFoundError';
  }
}
