import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, readFile, rm, writeFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import type { Readable } from 'node:stream';
import sharp from 'sharp';
import tar from 'tar-stream';
import { FileStore } from '../../src/data/store/file.ts';
import type { ObjectStore } from '../../src/data/store/types.ts';
import {
  emptyReadStats,
  listShards,
  parseSampleKey,
  parseShardName,
  parquetKeyFor,
  readShard,
  sampleKey,
  shardName,
  ShardReadError,
  ShardWriter,
  splitMemberName,
  statsKeyFor,
  writeShard,
  type Sample,
} from '../../src/data/webdataset/index.ts';

async function withStore(fn: (store: FileStore, dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'easel-wds-'));
  try {
    await fn(new FileStore(dir), dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function jpeg(r: number, g: number, b: number, size = 16): Promise<Buffer> {
  return sharp({ create: { width: size, height: size, channels: 3, background: { r, g, b } } }).jpeg().toBuffer();
}

/** A tar built with tar-stream directly (not easel's writer), members in the given order. */
async function tarOf(members: Array<[string, Buffer | string]>, { endOfArchive = true } = {}): Promise<Buffer> {
  const pack = tar.pack();
  for (const [name, body] of members) pack.entry({ name, mtime: new Date(0) }, typeof body === 'string' ? Buffer.from(body) : body);
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  const all = Buffer.concat(chunks);
  return endOfArchive ? all : all.subarray(0, all.length - 1024);
}

async function collect(it: AsyncIterable<Sample>): Promise<Sample[]> {
  const out: Sample[] = [];
  for await (const s of it) out.push(s);
  return out;
}

test('shard and sample names follow img2dataset: 00042.tar, 000420012', () => {
  assert.equal(shardName(0), '00000.tar');
  assert.equal(shardName(42), '00042.tar');
  assert.equal(shardName(123456), '123456.tar');
  assert.throws(() => shardName(-1), /non-negative/);
  assert.equal(parseShardName('00042.tar'), 42);
  assert.equal(parseShardName('data/train/00007.tar'), 7);
  assert.equal(parseShardName('00042.parquet'), undefined);
  assert.equal(parseShardName('shard-a.tar'), undefined);
  assert.equal(sampleKey(42, 12), '000420012');
  assert.equal(sampleKey(0, 0), '000000000');
  assert.throws(() => sampleKey(0, 10000), /sample index/);
  assert.deepEqual(parseSampleKey('000420012'), { shard: 42, index: 12 });
  assert.equal(parseSampleKey('abc'), undefined);
  assert.equal(parquetKeyFor('x/00003.tar'), 'x/00003.parquet');
  assert.equal(statsKeyFor('x/00003.tar'), 'x/00003_stats.json');
});

test('a member name splits at the first dot of its file name, WebDataset style', () => {
  assert.deepEqual(splitMemberName('000000012.jpg'), { key: '000000012', ext: 'jpg' });
  assert.deepEqual(splitMemberName('000000012.seg.png'), { key: '000000012', ext: 'seg.png' });
  assert.deepEqual(splitMemberName('some.dir/000000012.txt'), { key: 'some.dir/000000012', ext: 'txt' });
  assert.deepEqual(splitMemberName('./000000012.txt'), { key: '000000012', ext: 'txt' });
  assert.equal(splitMemberName('README'), undefined);
  assert.equal(splitMemberName('.hidden'), undefined);
  assert.equal(splitMemberName('trailing.'), undefined);
});

test('reader reads a shard written by GNU tar and groups image, caption and json by key', async () => {
  await withStore(async (store, dir) => {
    const src = join(dir, 'src');
    await mkdir(src);
    const red = await jpeg(255, 0, 0);
    const blue = await jpeg(0, 0, 255);
    await writeFile(join(src, '000000000.jpg'), red);
    await writeFile(join(src, '000000000.txt'), 'a red square');
    await writeFile(join(src, '000000000.json'), '{"key":"000000000","status":"success"}');
    await writeFile(join(src, '000000001.png'), blue);
    await writeFile(join(src, '000000001.txt'), Buffer.from([0x63, 0xff, 0xfe])); // not UTF-8: kept as raw bytes
    await writeFile(join(src, '000000001.json'), '{"key":"000000001"}');
    const r = spawnSync('tar', ['--sort=name', '--format=gnu', '-cf', join(dir, '00000.tar'), '-C', src, '.'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    await writeFile(join(dir, '00000.parquet'), 'PAR1');
    await writeFile(join(dir, '00000_stats.json'), '{}');

    const stats = emptyReadStats();
    const samples = await collect(readShard(store, '00000.tar', { stats }));
    assert.deepEqual(samples.map((s) => s.key), ['000000000', '000000001']);
    assert.equal(samples[0].image?.ext, 'jpg');
    assert.deepEqual(samples[0].image?.bytes, red);
    assert.equal(samples[0].caption?.toString(), 'a red square');
    assert.deepEqual(JSON.parse(samples[0].json!.toString()), { key: '000000000', status: 'success' });
    assert.equal(samples[1].image?.ext, 'png');
    assert.deepEqual(samples[1].caption, Buffer.from([0x63, 0xff, 0xfe]));
    assert.equal(stats.samples, 2);
    assert.equal(stats.skippedEntries, 1, 'the ./ directory entry is not a sample member');

    const shards = await listShards(store);
    assert.deepEqual(shards, [{ key: '00000.tar', index: 0, size: (await readFile(join(dir, '00000.tar'))).length, parquet: '00000.parquet', stats: '00000_stats.json' }]);
  });
});

test('a sample missing its image or its caption is yielded and counted, not fatal', async () => {
  await withStore(async (store) => {
    const img = await jpeg(0, 255, 0);
    await store.put(
      '00000.tar',
      await tarOf([
        ['000000000.jpg', img],
        ['000000000.txt', 'complete'],
        ['000000001.txt', 'no image here'],
        ['000000001.json', '{}'],
        ['000000002.webp', img],
        ['000000003.jpg', img],
        ['000000003.txt', 'complete too'],
      ]),
    );
    const stats = emptyReadStats();
    const samples = await collect(readShard(store, '00000.tar', { stats }));
    assert.deepEqual(samples.map((s) => s.key), ['000000000', '000000001', '000000002', '000000003']);
    assert.equal(samples[1].image, undefined);
    assert.equal(samples[2].caption, undefined);
    assert.deepEqual({ samples: stats.samples, missingImage: stats.missingImage, missingCaption: stats.missingCaption }, { samples: 4, missingImage: 1, missingCaption: 1 });
  });
});

test('a truncated tar yields its complete samples, then fails naming the shard and the reason', async () => {
  await withStore(async (store) => {
    const members: Array<[string, Buffer | string]> = [];
    for (let i = 0; i < 4; i++) members.push([`${sampleKey(3, i)}.jpg`, await jpeg(i * 60, 0, 0, 64)], [`${sampleKey(3, i)}.txt`, `caption ${i}`]);
    const whole = await tarOf(members);
    // Cut inside the third sample's image.
    const cut = whole.indexOf(Buffer.from(`${sampleKey(3, 2)}.jpg`)) + 512 + 100;
    await store.put('00003.tar', whole.subarray(0, cut));
    const got: string[] = [];
    await assert.rejects(
      async () => {
        for await (const s of readShard(store, '00003.tar')) got.push(s.key);
      },
      (err: unknown) => {
        assert.ok(err instanceof ShardReadError);
        assert.equal(err.shard, '00003.tar');
        assert.match(err.message, /shard 00003\.tar: truncated tar/);
        assert.equal(err.samplesYielded, 2);
        return true;
      },
    );
    assert.deepEqual(got, [sampleKey(3, 0), sampleKey(3, 1)]);
  });
});

test('a tar cut exactly between members (no end-of-archive marker) is reported as truncated', async () => {
  await withStore(async (store) => {
    await store.put('00000.tar', await tarOf([['000000000.txt', 'a'], ['000000001.txt', 'b']], { endOfArchive: false }));
    const got: string[] = [];
    await assert.rejects(async () => {
      for await (const s of readShard(store, '00000.tar')) got.push(s.key);
    }, /shard 00000\.tar: truncated tar: .*without the end-of-archive marker/);
    assert.deepEqual(got, ['000000000'], 'the last sample may have lost members, so it is not yielded');
  });
});

test('bytes that are not a tar fail the shard as corrupt; a missing shard fails as unopenable', async () => {
  await withStore(async (store) => {
    await store.put('00000.tar', Buffer.alloc(2048, 0x41));
    await assert.rejects(collect(readShard(store, '00000.tar')), /shard 00000\.tar: corrupt tar/);
    await assert.rejects(collect(readShard(store, '00009.tar')), /shard 00009\.tar: cannot open: object not found/);
  });
});

test('a key whose members are not adjacent becomes two samples and is counted', async () => {
  await withStore(async (store) => {
    await store.put('00000.tar', await tarOf([['a.txt', 'x'], ['b.txt', 'y'], ['a.json', '{}'], ['b.txt', 'dup'], ['b.txt', 'dup2']]));
    const stats = emptyReadStats();
    const samples = await collect(readShard(store, '00000.tar', { stats }));
    assert.deepEqual(samples.map((s) => s.key), ['a', 'b', 'a', 'b']);
    assert.equal(stats.splitKeys, 2);
    assert.equal(stats.duplicateMembers, 1);
  });
});

test('reader streams: the first sample arrives before the shard has been read through', async () => {
  await withStore(async (store) => {
    const members: Array<[string, Buffer]> = [];
    for (let i = 0; i < 40; i++) members.push([`${sampleKey(0, i)}.bin`, Buffer.alloc(256 * 1024, i)], [`${sampleKey(0, i)}.txt`, Buffer.from('c')]);
    const whole = await tarOf(members);
    await store.put('00000.tar', whole);
    let bytesRead = 0;
    const counting: ObjectStore = Object.create(store, {
      get: {
        value: async (key: string): Promise<Readable> => {
          const s = await store.get(key);
          s.on('data', (c: Buffer) => (bytesRead += c.length));
          return s;
        },
      },
    });
    for await (const s of readShard(counting, '00000.tar')) {
      assert.equal(s.key, sampleKey(0, 0));
      assert.ok(bytesRead < whole.length / 4, `read ${bytesRead} of ${whole.length} bytes before the first sample`);
      break;
    }
  });
});

function sample(i: number, extra: Record<string, Buffer> = {}): Sample {
  return {
    key: sampleKey(7, i),
    image: { ext: i % 2 ? 'png' : 'jpg', bytes: Buffer.from(`image-${i}`) },
    caption: Buffer.from(`caption ${i}`),
    json: Buffer.from(JSON.stringify({ i })),
    extra,
  };
}

test('writer re-packs samples into 00000.tar… of the configured size, preserving keys and members', async () => {
  await withStore(async (store, dir) => {
    const input = Array.from({ length: 7 }, (_, i) => sample(i, i === 3 ? { cls: Buffer.from('3'), 'seg.png': Buffer.from('mask') } : {}));
    const published: string[] = [];
    const writer = new ShardWriter(store, { prefix: 'out', samplesPerShard: 3, onShard: (s) => void published.push(s.key) });
    for (const s of input) await writer.write(s);
    const written = await writer.close();
    assert.deepEqual(written.map((w) => [w.key, w.samples, w.firstKey, w.lastKey]), [
      ['out/00000.tar', 3, sampleKey(7, 0), sampleKey(7, 2)],
      ['out/00001.tar', 3, sampleKey(7, 3), sampleKey(7, 5)],
      ['out/00002.tar', 1, sampleKey(7, 6), sampleKey(7, 6)],
    ]);
    assert.deepEqual(published, ['out/00000.tar', 'out/00001.tar', 'out/00002.tar']);
    assert.deepEqual((await listShards(store, 'out')).map((s) => s.key), published);

    const back: Sample[] = [];
    for (const key of published) back.push(...(await collect(readShard(store, key))));
    assert.deepEqual(back, input);

    // GNU tar agrees on the members.
    const r = spawnSync('tar', ['-tf', join(dir, 'out/00001.tar')], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), [
      `${sampleKey(7, 3)}.png`, `${sampleKey(7, 3)}.txt`, `${sampleKey(7, 3)}.json`, `${sampleKey(7, 3)}.cls`, `${sampleKey(7, 3)}.seg.png`,
      `${sampleKey(7, 4)}.jpg`, `${sampleKey(7, 4)}.txt`, `${sampleKey(7, 4)}.json`,
      `${sampleKey(7, 5)}.png`, `${sampleKey(7, 5)}.txt`, `${sampleKey(7, 5)}.json`,
    ]);
  });
});

test('writer output is byte-identical for the same samples, and continues numbering from firstShard', async () => {
  await withStore(async (store) => {
    const input = Array.from({ length: 4 }, (_, i) => sample(i));
    await writeShard(store, 'a.tar', input);
    await writeShard(store, 'b.tar', input);
    assert.deepEqual(await store.getBytes('a.tar'), await store.getBytes('b.tar'));
    const w = new ShardWriter(store, { samplesPerShard: 10, firstShard: 12 });
    assert.equal(w.nextShardKey, '00012.tar');
    await w.write(input[0]);
    await w.flush();
    await w.write(input[1]);
    assert.deepEqual((await w.close()).map((s) => s.key), ['00012.tar', '00013.tar']);
  });
});

test('an aborted writer publishes nothing under the shard key, leaves no temp files, and reuses the key', async () => {
  await withStore(async (store, dir) => {
    const w = new ShardWriter(store, { samplesPerShard: 100 });
    await w.write(sample(0));
    await w.write(sample(1));
    await w.abort(new Error('input failed'));
    assert.equal(await store.head('00000.tar'), undefined);
    assert.deepEqual(await readdir(dir), []);
    await w.write(sample(2));
    assert.deepEqual((await w.close()).map((s) => [s.key, s.firstKey]), [['00000.tar', sampleKey(7, 2)]], 'the next write reuses the aborted key');
  });
});
