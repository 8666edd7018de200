// One contract, two object stores: every behaviour of ObjectStore is checked against the file store (temp dir)
// and the S3 store talking to a real Ceph RADOS Gateway on loopback (test/helpers/rgw.ts).
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { createServer as createHttpServer, request as httpRequest } from 'node:http';
import { once } from 'node:events';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { S3Client, HeadObjectCommand, ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { FileStore } from '../../src/data/store/file.ts';
import { S3Store, parseS3Url } from '../../src/data/store/s3.ts';
import { openStore, NotFoundError, type ObjectStore } from '../../src/data/store/index.ts';
import { startRgw, createTestBucket, useRgwEnv, type Rgw } from '../helpers/rgw.ts';

const MiB = 1024 * 1024;
const PART = 5 * MiB;

let rgw: Rgw;
let restoreEnv: () => void;
before(async () => {
  rgw = await startRgw();
  restoreEnv = useRgwEnv(rgw);
});
after(async () => {
  restoreEnv?.();
  if (!rgw) return;
  await rgw.stop();
  // The harness itself: stop() leaves no daemon running and no temp dir behind.
  const alive = rgw.pids.filter((pid) => {
    try {
      return process.kill(pid, 0);
    } catch {
      return false;
    }
  });
  assert.deepEqual(alive, [], 'RGW daemons still running after stop()');
  assert.equal(existsSync(rgw.dir), false, `${rgw.dir} left behind`);
});

/** A readable that yields `data` in odd-sized chunks; it may fail after `failAfter` bytes or wait on `gate` after `gateAt`. */
function slowly(data: Buffer, opts: { failAfter?: number; gate?: Promise<void>; gateAt?: number } = {}): Readable {
  return Readable.from(
    (async function* () {
      let off = 0;
      while (off < data.length) {
        if (opts.failAfter !== undefined && off >= opts.failAfter) throw new Error('source broke midway');
        if (opts.gate && off >= (opts.gateAt ?? 0)) await opts.gate;
        const n = Math.min(data.length - off, 777_777);
        yield data.subarray(off, off + n);
        off += n;
      }
    })(),
  );
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function listKeys(store: ObjectStore, prefix?: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const o of store.list(prefix)) keys.push(o.key);
  return keys;
}

interface Backend {
  name: string;
  open(): Promise<ObjectStore>;
  /** Everything physically present (temp files, unfinished uploads), to prove nothing is left behind. */
  leftovers(store: ObjectStore): Promise<string[]>;
  cleanup(): Promise<void>;
}

function fileBackend(): Backend {
  let dir = '';
  return {
    name: 'file store',
    async open() {
      dir = await mkdtemp(join(tmpdir(), 'easel-store-'));
      return new FileStore(dir);
    },
    async leftovers() {
      const entries = await readdir(dir, { recursive: true, withFileTypes: true });
      return entries.filter((e) => e.isFile() && e.name.includes('.easel-tmp-')).map((e) => e.name);
    },
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

function s3Backend(): Backend {
  let url = '';
  return {
    name: 'S3 store (RGW)',
    async open() {
      url = await createTestBucket(rgw, 'root/of/store');
      return S3Store.fromUrl(url, { pageSize: 3, partSize: PART });
    },
    async leftovers() {
      const client = new S3Client({});
      try {
        const r = await client.send(new ListMultipartUploadsCommand({ Bucket: parseS3Url(url).bucket }));
        return (r.Uploads ?? []).map((u) => `unfinished upload of ${u.Key}`);
      } finally {
        client.destroy();
      }
    },
    cleanup: async () => {},
  };
}

for (const backend of [fileBackend(), s3Backend()]) {
  describe(backend.name, () => {
    let store: ObjectStore;
    before(async () => {
      store = await backend.open();
    });
    after(async () => {
      await store?.close();
      await backend.cleanup();
    });

    test('an object put as a string, bytes or a stream reads back whole, and head reports its size', async () => {
      await store.put('a/text.txt', 'hello, world');
      await store.put('a/bytes.bin', new Uint8Array([1, 2, 3]));
      await store.put('a/stream.bin', Readable.from([Buffer.from('ab'), Buffer.from('cd')]));
      await store.put('a/empty', Buffer.alloc(0));
      assert.equal((await store.getBytes('a/text.txt')).toString(), 'hello, world');
      assert.deepEqual([...(await store.getBytes('a/bytes.bin'))], [1, 2, 3]);
      assert.equal((await store.getBytes('a/stream.bin')).toString(), 'abcd');
      assert.equal((await store.getBytes('a/empty')).length, 0);
      assert.deepEqual(await store.head('a/text.txt'), { key: 'a/text.txt', size: 12 });
      assert.deepEqual(await store.head('a/empty'), { key: 'a/empty', size: 0 });
      await store.put('a/text.txt', 'replaced');
      assert.equal((await store.getBytes('a/text.txt')).toString(), 'replaced');
    });

    test('a multi-MB object streams back in small chunks, never whole', async () => {
      const data = randomBytes(7 * MiB);
      await store.put('big/blob', data);
      const hash = createHash('sha256');
      let chunks = 0;
      let largest = 0;
      for await (const c of await store.get('big/blob')) {
        hash.update(c as Buffer);
        chunks++;
        largest = Math.max(largest, (c as Buffer).length);
      }
      assert.equal(hash.digest('hex'), sha(data));
      assert.ok(chunks > 10, `expected many chunks, got ${chunks}`);
      assert.ok(largest <= MiB, `a chunk of ${largest} bytes`);
    });

    test('ranged reads return exactly the requested bytes; suffix ranges the last bytes', async () => {
      const data = randomBytes(1000);
      await store.put('ranges/obj', data);
      const read = (start: number, end?: number) => store.getBytes('ranges/obj', { start, end });
      assert.deepEqual(await read(10, 19), data.subarray(10, 20));
      assert.deepEqual(await read(990), data.subarray(990));
      assert.deepEqual(await read(0, 0), data.subarray(0, 1));
      assert.deepEqual(await read(-5), data.subarray(995));
      assert.deepEqual(await read(-5000), data, 'a suffix longer than the object is the whole object');
      assert.deepEqual(await read(995, 5000), data.subarray(995), 'an end past the object stops at its end');
      assert.equal((await read(1000)).length, 0, 'a start at the end reads nothing');
      assert.equal((await read(5000)).length, 0, 'a start past the end reads nothing');
    });

    test('listing yields every key under a prefix once, in order, across pages', async () => {
      const keys = ['list/b/2', 'list/a/1', 'list/c', 'list/a/3', 'list/b/1', 'list/a/2', 'list/d/e/f', 'lists/not-mine'];
      for (const k of keys) await store.put(k, k);
      assert.deepEqual(await listKeys(store, 'list/'), keys.filter((k) => k.startsWith('list/')).sort());
      assert.deepEqual(await listKeys(store, 'list/a/'), ['list/a/1', 'list/a/2', 'list/a/3']);
      assert.deepEqual(await listKeys(store, 'nothing-here/'), []);
      const all = [];
      for await (const o of store.list()) all.push(o);
      assert.ok(all.some((o) => o.key === 'list/d/e/f' && o.size === 'list/d/e/f'.length));
    });

    test('a streamed body larger than a part reads back identical', async () => {
      const data = randomBytes(2 * PART + 123_457);
      await store.put('multi/part', slowly(data));
      assert.equal((await store.head('multi/part'))?.size, data.length);
      assert.equal(sha(await store.getBytes('multi/part')), sha(data));
    });

    test('a put whose source fails midway leaves no object, no temp file and no unfinished upload', async () => {
      const data = randomBytes(2 * PART + 1000);
      await assert.rejects(store.put('broken/obj', slowly(data, { failAfter: PART + 100_000 })), /source broke midway/);
      await assert.rejects(store.put('broken/small', slowly(data, { failAfter: 1 })), /source broke midway/);
      assert.equal(await store.head('broken/obj'), undefined);
      assert.equal(await store.head('broken/small'), undefined);
      assert.deepEqual(await listKeys(store, 'broken/'), []);
      assert.deepEqual(await backend.leftovers(store), []);
    });

    test('while a put is in flight readers see the old object whole, and never a partial new one', async () => {
      const old = Buffer.from('the old version');
      await store.put('atomic/obj', old);
      const data = randomBytes(2 * PART + 4321);
      let open!: () => void;
      const gate = new Promise<void>((r) => (open = r));
      // More than a part goes out, then the sources stall: the writes are really under way.
      const putting = store.put('atomic/obj', slowly(data, { gate, gateAt: PART + MiB }));
      const fresh = store.put('atomic/fresh', slowly(data, { gate, gateAt: PART + MiB }));
      for (let i = 0; i < 100 && (await backend.leftovers(store)).length < 2; i++) await new Promise((r) => setTimeout(r, 50));
      assert.equal((await backend.leftovers(store)).length, 2, 'both writes are in flight');
      assert.deepEqual(await store.getBytes('atomic/obj'), old);
      assert.equal(await store.head('atomic/fresh'), undefined);
      assert.deepEqual(await listKeys(store, 'atomic/'), ['atomic/obj'], 'list shows no temp or partial object');
      open();
      await Promise.all([putting, fresh]);
      assert.equal(sha(await store.getBytes('atomic/obj')), sha(data));
      assert.equal(sha(await store.getBytes('atomic/fresh')), sha(data));
      assert.deepEqual(await backend.leftovers(store), []);
    });

    test('a missing key: get and getBytes reject with NotFoundError, head says absent', async () => {
      await assert.rejects(store.get('no/such/key'), (e: Error) => e instanceof NotFoundError && e.message.includes('no/such/key'));
      await assert.rejects(store.getBytes('no/such/key', { start: -3 }), NotFoundError);
      assert.equal(await store.head('no/such/key'), undefined);
      await store.put('dir/child', 'x');
      await assert.rejects(store.get('dir'), NotFoundError, 'a prefix of other keys is not an object');
      assert.equal(await store.head('dir'), undefined);
    });

    test('delete removes an object; deleting a missing key is not an error', async () => {
      await store.put('del/x', 'x');
      await store.delete('del/x');
      assert.equal(await store.head('del/x'), undefined);
      assert.deepEqual(await listKeys(store, 'del/'), []);
      await store.delete('del/x');
    });

    test('keys that would escape the store root are refused; dots inside a name are fine', async () => {
      await assert.rejects(store.put('../outside', 'x'), /escapes|invalid object key/);
      await assert.rejects(store.put('a/../../outside', 'x'), /escapes|invalid object key/);
      await assert.rejects(store.getBytes(''), /escapes|invalid object key/);
      await store.put('..dots/a..b', 'x');
      assert.deepEqual(await listKeys(store, '..dots/'), ['..dots/a..b']);
    });
  });
}

describe('file store specifics', () => {
  test('deleting the last object of a folder removes the emptied folders (an object store has none), and a put into a just-emptied folder still works', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'easel-store-'));
    try {
      const store = new FileStore(dir);
      await store.put('step-1/weights.safetensors', 'w');
      await store.put('step-1/manifest.json', 'm');
      await store.put('keep/x', 'x');
      await store.delete('step-1/manifest.json');
      assert.ok(existsSync(join(dir, 'step-1')), 'a folder that still holds an object stays');
      await store.delete('step-1/weights.safetensors');
      assert.deepEqual((await readdir(dir)).sort(), ['keep'], 'the emptied folder is gone, the root and other folders stay');
      await store.put('a/b/c', 'c');
      await store.delete('a/b/c');
      assert.deepEqual((await readdir(dir)).sort(), ['keep'], 'nested empty folders go too');
      // A delete that empties a folder while a put into it is under way: every put lands (the folder may vanish
      // between the put's mkdir and its open).
      for (let r = 0; r < 20; r++) {
        await store.put('race/sentinel', 's');
        await Promise.all([store.delete('race/sentinel'), store.put(`race/k${String(r).padStart(2, '0')}`, String(r)), store.delete(`race/k${String(r - 1).padStart(2, '0')}`)]);
      }
      assert.deepEqual(await listKeys(store, 'race/'), ['race/k19']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('S3 store specifics', () => {
  test('listing really pages: ListObjectsV2 is called once per page of pageSize keys', async () => {
    const url = await createTestBucket(rgw, 'pages');
    const store = S3Store.fromUrl(url, { pageSize: 2 });
    try {
      for (let i = 0; i < 5; i++) await store.put(`k${i}`, String(i));
      let pages = 0;
      (store as unknown as { client: S3Client }).client.middlewareStack.add(
        (next, ctx) => async (args) => {
          if (ctx.commandName === 'ListObjectsV2Command') pages++;
          return next(args);
        },
        { step: 'initialize' },
      );
      assert.deepEqual(await listKeys(store), ['k0', 'k1', 'k2', 'k3', 'k4']);
      assert.equal(pages, 3);
    } finally {
      await store.close();
    }
  });

  test('a body above the part size is a multipart upload (its ETag counts the parts)', async () => {
    const url = await createTestBucket(rgw, '');
    const store = S3Store.fromUrl(url, { partSize: PART });
    const client = new S3Client({});
    try {
      await store.put('mp', randomBytes(2 * PART + 1));
      await store.put('single', randomBytes(PART));
      const etag = async (Key: string) => (await client.send(new HeadObjectCommand({ Bucket: parseS3Url(url).bucket, Key }))).ETag;
      assert.match((await etag('mp')) ?? '', /-3"$/);
      assert.doesNotMatch((await etag('single')) ?? '', /-\d+"$/);
    } finally {
      client.destroy();
      await store.close();
    }
  });

  test("with the SDK's default checksums every upload carries a CRC32 header, which RGW accepts", async () => {
    const url = await createTestBucket(rgw, 'checksums');
    const saved = process.env.AWS_REQUEST_CHECKSUM_CALCULATION;
    delete process.env.AWS_REQUEST_CHECKSUM_CALCULATION; // the SDK's default, WHEN_SUPPORTED, as on AWS
    const store = S3Store.fromUrl(url, { partSize: PART });
    const sent: string[] = [];
    (store as unknown as { client: S3Client }).client.middlewareStack.add(
      (next, ctx) => async (args) => {
        const headers = (args.request as { headers: Record<string, string> }).headers;
        sent.push(`${ctx.commandName}${headers['x-amz-checksum-crc32'] ? ' crc32' : ''}${headers['x-amz-checksum-algorithm'] ? ' algorithm' : ''}`);
        return next(args);
      },
      { step: 'finalizeRequest' },
    );
    try {
      const data = randomBytes(PART + 10);
      await store.put('small', 'hello');
      await store.put('big', slowly(data));
      assert.equal(sha(await store.getBytes('big')), sha(data));
      assert.deepEqual(sent.filter((c) => !c.startsWith('GetObject')), [
        'PutObjectCommand crc32',
        'CreateMultipartUploadCommand algorithm',
        'UploadPartCommand crc32',
        'UploadPartCommand crc32',
        'CompleteMultipartUploadCommand',
      ]);
    } finally {
      process.env.AWS_REQUEST_CHECKSUM_CALCULATION = saved;
      await store.close();
    }
  });

  test('openStore opens s3:// URLs; ?path_style=1 addresses the bucket by path without the env flag', async () => {
    const url = await createTestBucket(rgw, 'ps');
    const saved = process.env.EASEL_S3_FORCE_PATH_STYLE;
    delete process.env.EASEL_S3_FORCE_PATH_STYLE;
    try {
      const store = await openStore(`${url}?path_style=1`);
      await store.put('x', 'path style');
      assert.equal((await store.getBytes('x')).toString(), 'path style');
      assert.equal(store.url, url);
      await store.close();
    } finally {
      process.env.EASEL_S3_FORCE_PATH_STYLE = saved;
    }
  });

  test('S3 URLs are parsed strictly', () => {
    assert.deepEqual(parseS3Url('s3://bucket/a/b/'), { bucket: 'bucket', prefix: 'a/b', pathStyle: undefined });
    assert.deepEqual(parseS3Url('s3://bucket?path_style=0'), { bucket: 'bucket', prefix: '', pathStyle: false });
    assert.throws(() => parseS3Url('s3://key:secret@bucket/x'), /must not carry credentials/);
    assert.throws(() => parseS3Url('s3://bucket/x?region=eu'), /unknown S3 URL option "region"/);
    assert.throws(() => parseS3Url('s3:///x'), /invalid S3 URL/);
  });

  test('an unreachable endpoint fails after the bounded retries, naming the endpoint', async () => {
    const port = await closedPort();
    const logs = await captureStderr(async () => {
      const store = S3Store.fromUrl('s3://nowhere/x', { endpoint: `http://127.0.0.1:${port}`, retry: { maxAttempts: 3, baseDelayMs: 5 } });
      try {
        await assert.rejects(store.getBytes('k'), (e: Error) => {
          assert.match(e.message, new RegExp(`endpoint http://127\\.0\\.0\\.1:${port}`));
          assert.match(e.message, /gave up after 3 attempts/);
          assert.match(e.message, /ECONNREFUSED/);
          assert.match(e.message, /s3:\/\/nowhere\/x\/k/);
          return true;
        });
      } finally {
        await store.close();
      }
    });
    assert.equal(logs.match(/retrying S3 GetObject/g)?.length, 2, logs);
  });

  test('a download cut off midway resumes where it stopped and yields the exact bytes', async () => {
    const url = await createTestBucket(rgw, 'resume');
    const data = randomBytes(3 * MiB);
    const direct = S3Store.fromUrl(url);
    await direct.put('obj', data);
    await direct.close();
    const proxy = await cuttingProxy(new URL(rgw.endpoint).port, 1 * MiB);
    const store = S3Store.fromUrl(url, { endpoint: `http://127.0.0.1:${proxy.port}` });
    try {
      const logs = await captureStderr(async () => {
        assert.equal(sha(await store.getBytes('obj')), sha(data));
        assert.equal(sha(await store.getBytes('obj', { start: -2 * MiB - 5 })), sha(data.subarray(data.length - 2 * MiB - 5)));
      });
      assert.ok(proxy.cuts() >= 2, `the proxy cut ${proxy.cuts()} connections`);
      assert.match(logs, /resuming an interrupted S3 download/);
    } finally {
      await store.close();
      proxy.close();
    }
  });

  test('a server answering 503 or 500 now and then is retried until the request succeeds', async () => {
    const url = await createTestBucket(rgw, 'flaky');
    let n = 0;
    // Every third request fails: a SlowDown before the first GetObject, an InternalError mid multipart upload…
    const proxy = await faultyProxy(new URL(rgw.endpoint).port, () => (++n % 3 === 1 ? (n % 2 ? 503 : 500) : undefined));
    const store = S3Store.fromUrl(url, { endpoint: `http://127.0.0.1:${proxy.port}`, partSize: PART, retry: { baseDelayMs: 1 } });
    try {
      const data = randomBytes(2 * PART + 1);
      const logs = await captureStderr(async () => {
        await store.put('obj', data);
        assert.equal(sha(await store.getBytes('obj')), sha(data));
        assert.deepEqual(await listKeys(store), ['obj']);
      });
      assert.ok(proxy.failed() >= 3, `only ${proxy.failed()} failures injected`);
      assert.equal(logs.match(/retrying S3/g)?.length, proxy.failed(), logs);
      assert.match(logs, /HTTP 503/);
      assert.match(logs, /HTTP 500/);
    } finally {
      await store.close();
      proxy.close();
    }
  });

  test('closing the store ends its open downloads with a clear error, without retrying them', async () => {
    const url = await createTestBucket(rgw, 'close');
    const store = S3Store.fromUrl(url);
    await store.put('k', randomBytes(3 * MiB));
    const stream = await store.get('k');
    await once(stream, 'data');
    stream.pause();
    const logs = await captureStderr(async () => {
      await store.close();
      await assert.rejects(buffer(stream), /the store was closed during a download/);
    });
    assert.doesNotMatch(logs, /resuming/);
  });

  test('credentials never appear in error messages or logs', async () => {
    const url = await createTestBucket(rgw, 'creds');
    const savedLog = process.env.EASEL_LOG;
    const savedSecret = process.env.AWS_SECRET_ACCESS_KEY;
    process.env.EASEL_LOG = 'debug';
    const wrongSecret = 'wrong' + randomBytes(16).toString('hex');
    const messages: string[] = [];
    const logs = await captureStderr(async () => {
      process.env.AWS_SECRET_ACCESS_KEY = wrongSecret;
      const bad = S3Store.fromUrl(url, { retry: { maxAttempts: 2, baseDelayMs: 1 } });
      try {
        await assert.rejects(bad.put('x', 'y'), (e: Error) => (messages.push(e.message, String(e.cause)), true));
      } finally {
        process.env.AWS_SECRET_ACCESS_KEY = savedSecret;
        await bad.close();
      }
      const unreachable = S3Store.fromUrl(url, { endpoint: `http://127.0.0.1:${await closedPort()}`, retry: { maxAttempts: 2, baseDelayMs: 1 } });
      await assert.rejects(unreachable.head('x'), (e: Error) => (messages.push(e.message), true));
      await unreachable.close();
    });
    process.env.EASEL_LOG = savedLog;
    assert.match(messages[0], /S3 PutObject .* failed/);
    const everything = messages.join('\n') + logs;
    for (const secret of [wrongSecret, rgw.secretAccessKey, rgw.accessKeyId]) {
      assert.ok(!everything.includes(secret), `a credential leaked into: ${everything}`);
    }
  });
});

async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as { port: number };
  await new Promise((r) => srv.close(r));
  return port;
}

async function captureStderr(fn: () => Promise<void>): Promise<string> {
  const original = process.stderr.write.bind(process.stderr);
  let text = '';
  process.stderr.write = ((chunk: string | Uint8Array) => ((text += chunk.toString()), true)) as typeof process.stderr.write;
  try {
    await fn();
    await new Promise((r) => setTimeout(r, 20)); // retry warnings are logged asynchronously
  } finally {
    process.stderr.write = original;
  }
  return text;
}

/** A TCP proxy to 127.0.0.1:`port` that cuts every connection after `limit` bytes of response. */
async function cuttingProxy(port: string, limit: number): Promise<{ port: number; cuts(): number; close(): void }> {
  let cuts = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect(Number(port), '127.0.0.1');
    sockets.add(client).add(upstream);
    let sent = 0;
    client.pipe(upstream);
    upstream.on('data', (d: Buffer) => {
      if (sent + d.length > limit) {
        client.write(d.subarray(0, limit - sent));
        cuts++;
        client.destroy();
        upstream.destroy();
        return;
      }
      sent += d.length;
      client.write(d);
    });
    for (const s of [client, upstream]) s.on('error', () => {}).on('close', () => (client.destroy(), upstream.destroy()));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as { port: number }).port,
    cuts: () => cuts,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

/** An HTTP proxy to 127.0.0.1:`port` that answers a request with the status `fault()` returns, if any. */
async function faultyProxy(port: string, fault: () => number | undefined): Promise<{ port: number; failed(): number; close(): void }> {
  let failed = 0;
  const server = createHttpServer((req, res) => {
    const status = fault();
    if (status) {
      failed++;
      req.resume();
      const code = status === 503 ? 'SlowDown' : 'InternalError';
      res.writeHead(status, { 'content-type': 'application/xml', connection: 'close' });
      res.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>injected</Message></Error>`);
      return;
    }
    const up = httpRequest({ host: '127.0.0.1', port: Number(port), method: req.method, path: req.url, headers: req.headers }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      upRes.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as { port: number }).port,
    failed: () => failed,
    close: () => server.close(),
  };
}
