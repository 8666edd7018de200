// ObjectStore over S3 and S3-compatible servers (Ceph RGW, MinIO…), through @aws-sdk/client-s3.
//
// URL: s3://bucket[/prefix][?path_style=1]  — keys live under `prefix/`.
// Everything else follows the SDK's own conventions, read by the SDK itself:
//   region       AWS_REGION / AWS_DEFAULT_REGION / profile `region`
//   credentials  AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN), AWS_PROFILE, SSO, web identity, IMDS…
//   endpoint     AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL / profile `endpoint_url` (unset = AWS)
//   checksums    AWS_REQUEST_CHECKSUM_CALCULATION / AWS_RESPONSE_CHECKSUM_VALIDATION (WHEN_SUPPORTED by default).
//                Every body goes out as a sized Buffer, so a CRC32 travels as a header; RGW 16.2 only refuses
//                (411) the aws-chunked trailer the SDK uses for unsized streams.
//   attempts     AWS_MAX_ATTEMPTS (the default of easel's own retry budget, see retry.ts)
// plus one easel option for S3-compatible servers that cannot do virtual-hosted buckets:
//   path style   EASEL_S3_FORCE_PATH_STYLE=1, or `?path_style=1` on the URL (`?path_style=0` turns it off).
//
// Atomic publication comes from S3 itself: a PutObject or a completed multipart upload appears whole under its
// key or not at all. A failed multipart upload is aborted, so its parts do not linger (and nothing temporary
// is ever written under a visible key). Credentials never reach logs or error messages.
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import {
  S3Client,
  GetObjectCommand,
  PutObjectCommand,
  HeadObjectCommand,
  DeleteObjectCommand,
  ListObjectsV2Command,
  CreateMultipartUploadCommand,
  UploadPartCommand,
  CompleteMultipartUploadCommand,
  AbortMultipartUploadCommand,
  type CompletedPart,
  type GetObjectCommandOutput,
} from '@aws-sdk/client-s3';
import { z } from 'zod';
import { logger } from '../../util/log.ts';
import { NotFoundError, type ByteRange, type ObjectInfo, type ObjectStore } from './types.ts';
import { RetryConfig, withRetries, describeError, isRetryable } from './retry.ts';

const log = logger('s3');
const MiB = 1024 * 1024;

export const S3StoreConfig = z.object({
  endpoint: z.url().optional().describe('S3 endpoint URL; default from AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL / the profile, else AWS'),
  forcePathStyle: z.boolean().optional().describe('Address buckets as endpoint/bucket (S3-compatible servers); default from EASEL_S3_FORCE_PATH_STYLE'),
  pageSize: z.number().int().min(1).max(1000).default(1000).describe('Keys per ListObjectsV2 page'),
  partSize: z.number().int().min(5 * MiB).default(8 * MiB).describe('Bytes per multipart-upload part; bodies larger than one part are uploaded in parts'),
  partConcurrency: z.number().int().min(1).default(2).describe('Parts uploaded at once (memory ≈ (concurrency + 1) × partSize)'),
  connectionTimeoutMs: z.number().int().min(0).default(5_000).describe('Give up connecting after this long (0 = never); retried'),
  requestTimeoutMs: z.number().int().min(0).default(120_000).describe('Give up waiting for response headers after this long (0 = never); retried'),
  retry: RetryConfig.default(RetryConfig.parse({})).describe('Retries of one request on 5xx, throttling, timeouts and connection errors'),
});
export type S3StoreConfig = z.infer<typeof S3StoreConfig>;
export type S3StoreOptions = z.input<typeof S3StoreConfig>;

function defaultRetry(): Partial<RetryConfig> {
  const n = Number(process.env.AWS_MAX_ATTEMPTS);
  return Number.isInteger(n) && n >= 1 ? { maxAttempts: n } : {};
}

function envFlag(v: string | undefined): boolean | undefined {
  if (v === undefined || v === '') return undefined;
  return !['0', 'false', 'no', 'off'].includes(v.toLowerCase());
}

/** Parses `s3://bucket/prefix?path_style=1` into its parts (the prefix without leading/trailing '/'). */
export function parseS3Url(url: string): { bucket: string; prefix: string; pathStyle?: boolean } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error(`invalid S3 URL: ${url} (expected s3://bucket/prefix)`);
  }
  if (u.protocol !== 's3:' || !u.hostname) throw new Error(`invalid S3 URL: ${url} (expected s3://bucket/prefix)`);
  if (u.username || u.password) throw new Error('S3 URLs must not carry credentials; use the AWS environment or a profile');
  for (const k of u.searchParams.keys()) {
    if (k !== 'path_style') throw new Error(`unknown S3 URL option "${k}" in ${u.origin}${u.pathname} (known: path_style)`);
  }
  const ps = u.searchParams.get('path_style');
  return { bucket: u.hostname, prefix: decodeURIComponent(u.pathname).replace(/^\/+|\/+$/g, ''), pathStyle: ps === null ? undefined : envFlag(ps) };
}

export class S3Store implements ObjectStore {
  readonly url: string;
  private readonly client: S3Client;
  private readonly cfg: S3StoreConfig;
  private lastHost: string | undefined;
  /** Downloads still open, ended by close(). */
  private readonly open = new Set<Readable>();
  private closed = false;

  constructor(
    readonly bucket: string,
    readonly prefix: string,
    options: S3StoreOptions = {},
  ) {
    this.cfg = S3StoreConfig.parse({ ...options, retry: { ...defaultRetry(), ...options.retry } });
    this.url = `s3://${bucket}${prefix ? `/${prefix}` : ''}`;
    this.client = new S3Client({
      ...(this.cfg.endpoint && { endpoint: this.cfg.endpoint }),
      forcePathStyle: this.cfg.forcePathStyle ?? envFlag(process.env.EASEL_S3_FORCE_PATH_STYLE) ?? false,
      maxAttempts: 1, // retries are ours (retry.ts), so that one budget and one backoff schedule apply
      requestHandler: {
        connectionTimeout: this.cfg.connectionTimeoutMs,
        requestTimeout: this.cfg.requestTimeoutMs,
        throwOnRequestTimeout: true,
      },
    });
    this.client.middlewareStack.add(
      (next) => async (args) => {
        const req = args.request as { protocol?: string; hostname?: string; port?: number };
        if (req.hostname) this.lastHost = `${req.protocol}//${req.hostname}${req.port ? `:${req.port}` : ''}`;
        return next(args);
      },
      { step: 'finalizeRequest', name: 'easelRecordEndpoint' },
    );
  }

  /** `s3://bucket/prefix[?path_style=1]`; `options` override what the URL and environment say. */
  static fromUrl(url: string, options: S3StoreOptions = {}): S3Store {
    const { bucket, prefix, pathStyle } = parseS3Url(url);
    return new S3Store(bucket, prefix, { forcePathStyle: pathStyle, ...options });
  }

  private key(key: string): string {
    if (key === '' || key.startsWith('/') || key.split('/').includes('..')) throw new Error(`invalid object key: ${key}`);
    return this.prefix ? `${this.prefix}/${key}` : key;
  }

  private where(key: string): string {
    return `${this.url}/${key}`;
  }

  /** Where requests go, for error messages: the host of the last request sent, else what the config says. */
  private async endpoint(): Promise<string> {
    if (this.lastHost) return this.lastHost;
    const configured = this.cfg.endpoint ?? process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL;
    if (configured) return configured;
    try {
      return `AWS S3 in ${await this.client.config.region()}`;
    } catch {
      return 'AWS S3 (no region: set AWS_REGION)';
    }
  }

  /** Removes every credential the client uses from a message. */
  private async redact(msg: string): Promise<string> {
    const secrets = [process.env.AWS_SECRET_ACCESS_KEY, process.env.AWS_SESSION_TOKEN, process.env.AWS_ACCESS_KEY_ID];
    try {
      const c = await this.client.config.credentials();
      secrets.push(c.secretAccessKey, c.sessionToken, c.accessKeyId);
    } catch {
      // no credentials resolved: nothing more to hide
    }
    for (const s of secrets) if (s && s.length >= 4) msg = msg.replaceAll(s, '<redacted>');
    return msg;
  }

  /** One S3 request with bounded retries; failures become errors naming the operation, object and endpoint. */
  private async call<T>(op: string, key: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await withRetries(fn, this.cfg.retry, {
        onRetry: (err, retry, delayMs) => {
          this.redact(describeError(err)).then((error) =>
            log.warn(`retrying S3 ${op}`, { object: this.where(key), retry, of: this.cfg.retry.maxAttempts - 1, delayMs, error }),
          );
        },
      });
    } catch (err) {
      throw await this.failure(op, key, err);
    }
  }

  private async failure(op: string, key: string, err: unknown): Promise<Error> {
    const msg = await this.redact(`S3 ${op} ${this.where(key)} failed (endpoint ${await this.endpoint()}): ${describeError(err)}`);
    const out = new Error(msg, { cause: err });
    out.name = 'ObjectStoreError';
    return out;
  }

  async get(key: string, range?: ByteRange): Promise<Readable> {
    const Key = this.key(key);
    let res: GetObjectCommandOutput;
    try {
      res = await this.call('GetObject', key, () => this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key, Range: rangeHeader(range) })));
    } catch (err) {
      const cause = (err as Error).cause as { name?: string; $metadata?: { httpStatusCode?: number } } | undefined;
      if (cause?.name === 'NoSuchKey' || (cause?.$metadata?.httpStatusCode === 404 && cause?.name !== 'NoSuchBucket')) throw new NotFoundError(this.where(key));
      if (cause?.name === 'InvalidRange' || cause?.$metadata?.httpStatusCode === 416) return Readable.from([]);
      throw err;
    }
    const stream = Readable.from(this.resumingBody(key, Key, res), { objectMode: false });
    this.open.add(stream);
    stream.once('close', () => this.open.delete(stream));
    return stream;
  }

  /**
   * The body of a GetObject, continued with a ranged request (pinned to the same ETag) when the connection
   * breaks mid-stream, within the same retry budget as any request.
   */
  private async *resumingBody(key: string, Key: string, first: GetObjectCommandOutput): AsyncGenerator<Buffer> {
    const span = parseContentRange(first.ContentRange) ?? { start: 0, end: (first.ContentLength ?? 0) - 1 };
    let next = span.start;
    let res = first;
    let failures = 0;
    for (;;) {
      const body = res.Body as Readable;
      try {
        for await (const chunk of body) {
          next += (chunk as Buffer).length;
          yield chunk as Buffer;
        }
        if (next > span.end) return;
        throw Object.assign(new Error(`connection closed ${span.end + 1 - next} bytes early`), { code: 'ERR_STREAM_PREMATURE_CLOSE' });
      } catch (err) {
        failures++;
        if (this.closed) throw new Error(`${this.where(key)}: the store was closed during the download`, { cause: err });
        if (!isRetryable(err) || failures >= this.cfg.retry.maxAttempts) throw await this.failure(`GetObject (body, after ${failures} attempts)`, key, err);
        log.warn('resuming an interrupted S3 download', { object: this.where(key), at: next, error: await this.redact(describeError(err)) });
        res = await this.call('GetObject (resume)', key, () =>
          this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key, Range: `bytes=${next}-${span.end}`, IfMatch: first.ETag })),
        );
      } finally {
        body.destroy();
      }
    }
  }

  async getBytes(key: string, range?: ByteRange): Promise<Buffer> {
    return buffer(await this.get(key, range));
  }

  async put(key: string, body: Buffer | Uint8Array | string | Readable): Promise<void> {
    const Key = this.key(key);
    const parts = chunks(body, this.cfg.partSize)[Symbol.asyncIterator]();
    const first = await parts.next();
    // A body of at most one part goes up in one PutObject. A stream does once it ends short of a whole part;
    // one that fills a part goes multipart at once, so its upload is under way before the rest is read.
    const size = body instanceof Readable ? undefined : typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength;
    if (size !== undefined ? size <= this.cfg.partSize : first.done || first.value.length < this.cfg.partSize) {
      const Body = first.done ? Buffer.alloc(0) : first.value;
      await this.call('PutObject', key, () => this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key, Body, ContentLength: Body.length })));
      return;
    }
    await this.putMultipart(key, Key, (async function* () {
      yield first.value as Buffer;
      yield* { [Symbol.asyncIterator]: () => parts };
    })());
  }

  private async putMultipart(key: string, Key: string, parts: AsyncIterable<Buffer>): Promise<void> {
    // Mirror the SDK's own Upload: with checksums on (the default for AWS), parts carry CRC32s and the upload says so.
    const checksums = (await this.client.config.requestChecksumCalculation()) === 'WHEN_SUPPORTED';
    const created = await this.call('CreateMultipartUpload', key, () =>
      this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key, ...(checksums && { ChecksumAlgorithm: 'CRC32' }) })),
    );
    const UploadId = created.UploadId;
    if (!UploadId) throw await this.failure('CreateMultipartUpload', key, new Error('the server returned no UploadId'));
    const done: CompletedPart[] = [];
    const inflight = new Set<Promise<void>>();
    let failure: unknown;
    try {
      let PartNumber = 0;
      for await (const Body of parts) {
        const n = ++PartNumber;
        const upload = this.call(`UploadPart ${n}`, key, () =>
          this.client.send(new UploadPartCommand({ Bucket: this.bucket, Key, UploadId, PartNumber: n, Body, ContentLength: Body.length })),
        ).then((r) => {
          if (!r.ETag) throw new Error(`S3 UploadPart ${n} ${this.where(key)}: the server returned no ETag`);
          done.push({ PartNumber: n, ETag: r.ETag, ...(r.ChecksumCRC32 && { ChecksumCRC32: r.ChecksumCRC32 }) });
        });
        const tracked: Promise<void> = upload.then(
          () => void inflight.delete(tracked),
          (err) => {
            inflight.delete(tracked);
            failure ??= err;
          },
        );
        inflight.add(tracked);
        while (inflight.size >= this.cfg.partConcurrency && failure === undefined) await Promise.race(inflight);
        if (failure !== undefined) break;
      }
      await Promise.all(inflight);
      if (failure !== undefined) throw failure;
      done.sort((a, b) => a.PartNumber! - b.PartNumber!);
      // RGW 16.2 answers with an empty ETag here; success is the 200 itself, so the reply's fields are not used.
      await this.call('CompleteMultipartUpload', key, () =>
        this.client.send(new CompleteMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId, MultipartUpload: { Parts: done } })),
      );
    } catch (err) {
      await Promise.all(inflight);
      try {
        await this.call('AbortMultipartUpload', key, () => this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId })));
      } catch (abortErr) {
        log.error('could not abort a failed multipart upload; its parts remain until a lifecycle rule removes them', {
          object: this.where(key),
          uploadId: UploadId,
          error: (abortErr as Error).message,
        });
      }
      throw err;
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    const Key = this.key(key);
    try {
      const r = await this.call('HeadObject', key, () => this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key })));
      return { key, size: r.ContentLength ?? 0 };
    } catch (err) {
      const cause = (err as Error).cause as { $metadata?: { httpStatusCode?: number } } | undefined;
      if (cause?.$metadata?.httpStatusCode === 404) return undefined;
      throw err;
    }
  }

  async *list(prefix = ''): AsyncIterable<ObjectInfo> {
    const root = this.prefix ? `${this.prefix}/` : '';
    let ContinuationToken: string | undefined;
    do {
      const page = await this.call('ListObjectsV2', prefix, () =>
        this.client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: root + prefix, MaxKeys: this.cfg.pageSize, ContinuationToken }),
        ),
      );
      for (const o of page.Contents ?? []) {
        if (o.Key === undefined || !o.Key.startsWith(root)) continue;
        yield { key: o.Key.slice(root.length), size: o.Size ?? 0 };
      }
      ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
      if (page.IsTruncated && !ContinuationToken) throw await this.failure('ListObjectsV2', prefix, new Error('truncated page without a continuation token'));
    } while (ContinuationToken);
  }

  async delete(key: string): Promise<void> {
    const Key = this.key(key);
    await this.call('DeleteObject', key, () => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key })));
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const stream of this.open) stream.destroy(new Error(`${this.url}: the store was closed during a download`));
    this.client.destroy();
  }
}

/** The HTTP Range header for a ByteRange (negative start = suffix range). */
export function rangeHeader(range: ByteRange | undefined): string | undefined {
  if (!range) return undefined;
  if (range.start < 0) return `bytes=${range.start}`;
  return `bytes=${range.start}-${range.end ?? ''}`;
}

/** "bytes 100-199/200" → { start: 100, end: 199 }. */
export function parseContentRange(header: string | undefined): { start: number; end: number } | undefined {
  const m = header && /^bytes (\d+)-(\d+)\//.exec(header);
  return m ? { start: Number(m[1]), end: Number(m[2]) } : undefined;
}

/** Cuts a body into buffers of exactly `size` bytes (the last one shorter), holding at most one part in memory. */
async function* chunks(body: Buffer | Uint8Array | string | Readable, size: number): AsyncGenerator<Buffer> {
  if (!(body instanceof Readable)) {
    const buf = typeof body === 'string' ? Buffer.from(body) : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
    return;
  }
  let held: Buffer[] = [];
  let heldBytes = 0;
  for await (const c of body) {
    let chunk = typeof c === 'string' ? Buffer.from(c) : (c as Buffer);
    while (heldBytes + chunk.length >= size) {
      const take = size - heldBytes;
      held.push(chunk.subarray(0, take));
      yield Buffer.concat(held);
      chunk = chunk.subarray(take);
      held = [];
      heldBytes = 0;
    }
    if (chunk.length) {
      held.push(chunk);
      heldBytes += chunk.length;
    }
  }
  if (heldBytes > 0) yield Buffer.concat(held);
}
