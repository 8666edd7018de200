import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { FileStore } from '../../src/data/store/file.ts';
import { openStore } from '../../src/data/store/index.ts';
import type { ObjectStore } from '../../src/data/store/types.ts';
import { writeSynthDataset, COLOR_RGB, BACKGROUND_RGB, type GroundTruth, type SynthManifest } from '../../src/data/synth/index.ts';
import { mapOrdered, prefetch, readShard, ShardWriter, writeShard } from '../../src/data/webdataset/index.ts';
import { decodeImage, openLoader, shardBatches, shardOrder, shuffleBuffered, type Batch, type LoaderOptions } from '../../src/data/loader.ts';
import { Rng } from '../../src/util/rng.ts';
import { createTestBucket, startRgw, useRgwEnv, type Rgw } from '../helpers/rgw.ts';

let dir: string;
let store: FileStore;
let manifest: SynthManifest;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'easel-loader-'));
  store = new FileStore(dir);
  // 3 shards × 14 samples, a few with broken images (which the loader skips) among them.
  manifest = await writeSynthDataset(store, { shards: 3, perShard: 14, size: 24, seed: 3, badFraction: 0.2, evalPerPair: 0, format: 'png' });
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function collect(it: AsyncIterable<Batch>, limit = Infinity): Promise<Batch[]> {
  const out: Batch[] = [];
  for await (const b of it) {
    out.push(b);
    if (out.length >= limit) break;
  }
  return out;
}

function base(over: Partial<LoaderOptions> = {}): LoaderOptions {
  return { store, shards: manifest.train.shards, batchSize: 5, imageSize: 8, seed: 11, epochs: 2, shuffleBuffer: 6, ...over };
}

function rgbAt(images: Float32Array, size: number, b: number, x: number, y: number): number[] {
  const o = ((b * size + y) * size + x) * 3;
  return [...images.subarray(o, o + 3)].map((v) => Math.round((v + 1) * 127.5));
}

test('decodeImage centre-crops, resizes and maps pixels to [-1, 1]', async () => {
  // A 64×16 strip: red on its left quarter, blue in the middle half, green on the right quarter.
  const raw = Buffer.alloc(64 * 16 * 3);
  for (let y = 0; y < 16; y++) {
    for (let x = 0; x < 64; x++) raw.set(x < 16 ? [255, 0, 0] : x < 48 ? [0, 0, 255] : [0, 255, 0], (y * 64 + x) * 3);
  }
  const png = await sharp(raw, { raw: { width: 64, height: 16, channels: 3 } }).png().toBuffer();
  const img = await decodeImage(png, 4);
  assert.equal(img.length, 4 * 4 * 3);
  // The centre square (x 24..40) is all blue: the red and green ends were cropped away.
  for (let i = 0; i < 16; i++) {
    const [r, g, b] = img.subarray(i * 3, i * 3 + 3);
    assert.ok(r <= -0.98 && g <= -0.98 && b >= 0.98, `pixel ${i} is ${[r, g, b]}, not blue`); // resampling may move a level or two
  }
});

test('decodeImage turns grayscale, alpha, 16-bit, CMYK and EXIF-rotated images into upright sRGB', async () => {
  const gray = await sharp({ create: { width: 8, height: 8, channels: 3, background: { r: 51, g: 51, b: 51 } } }).toColourspace('b-w').png().toBuffer();
  assert.deepEqual([...(await decodeImage(gray, 2)).subarray(0, 3)].map((v) => Math.round((v + 1) * 127.5)), [51, 51, 51]);
  const transparent = await sharp({ create: { width: 8, height: 8, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0 } } }).png().toBuffer();
  assert.deepEqual([...(await decodeImage(transparent, 2)).subarray(0, 3)], [1, 1, 1], 'transparent pixels become white');
  const deep = await sharp({ create: { width: 8, height: 8, channels: 3, background: { r: 255, g: 0, b: 0 } } }).toColourspace('rgb16').png().toBuffer();
  assert.equal((await sharp(deep).metadata()).depth, 'ushort');
  assert.deepEqual([...(await decodeImage(deep, 2)).subarray(0, 3)], [1, -1, -1]);
  const cmyk = await sharp({ create: { width: 8, height: 8, channels: 3, background: { r: 0, g: 0, b: 255 } } }).toColourspace('cmyk').jpeg().toBuffer();
  assert.equal((await sharp(cmyk).metadata()).space, 'cmyk');
  // Pure sRGB blue lies outside the CMYK gamut, so it comes back a duller blue, but blue.
  const [r, g, b] = [...(await decodeImage(cmyk, 2)).subarray(0, 3)];
  assert.ok(b - r > 0.5 && b - g > 0.5, `CMYK blue decoded as ${[r, g, b]}`);
  // 8×4 stored, left half red, right half green, EXIF orientation 6 (display rotated 90° clockwise):
  // upright it is 4 wide × 8 tall with red on top.
  const stored = Buffer.alloc(8 * 4 * 3);
  for (let y = 0; y < 4; y++) for (let x = 0; x < 8; x++) stored.set(x < 4 ? [255, 0, 0] : [0, 255, 0], (y * 8 + x) * 3);
  const rotated = await sharp(stored, { raw: { width: 8, height: 4, channels: 3 } }).png().withMetadata({ orientation: 6 }).toBuffer();
  const up = await decodeImage(rotated, 4); // centre crop of the upright 4×8 keeps rows 2..5: top half red
  assert.deepEqual(rgbAt(up, 4, 0, 0, 0), [255, 0, 0]);
  assert.deepEqual(rgbAt(up, 4, 0, 0, 3), [0, 255, 0]);
  await assert.rejects(decodeImage(Buffer.from('not an image'), 4));
  const jpeg = await sharp({ create: { width: 32, height: 32, channels: 3, background: { r: 9, g: 99, b: 199 } } }).jpeg().toBuffer();
  await assert.rejects(decodeImage(jpeg.subarray(0, Math.floor(jpeg.length * 0.6)), 4), 'a truncated JPEG is refused, not grey-filled');
});

test('one epoch yields every decodable sample once, in batches of the configured shape', async () => {
  const loader = openLoader(base({ epochs: 1 }));
  const batches = await collect(loader);
  const keys = batches.flatMap((b) => b.keys);
  const good = manifest.train.samples - manifest.train.dropped.image;
  assert.equal(keys.length, good);
  assert.equal(new Set(keys).size, good);
  assert.ok(batches.slice(0, -1).every((b) => b.captions.length === 5 && b.images.length === 5 * 8 * 8 * 3));
  assert.equal(batches.at(-1)!.images.length, batches.at(-1)!.captions.length * 8 * 8 * 3);
  assert.ok(batches.every((b) => b.images.every((v) => v >= -1 && v <= 1)));
  assert.equal(loader.stats.skipped.image, manifest.train.dropped.image);
  assert.ok(manifest.train.dropped.image > 0, 'the fixture should hold broken images');
  assert.deepEqual(batches.at(-1)!.cursor, { epoch: 1, shard: 0, sample: 0 });
});

test('a batch holds each sample\'s own caption and image', async () => {
  const truth = new Map<string, { caption: string; synth: GroundTruth }>();
  for (const key of manifest.train.shards) for await (const s of readShard(store, key)) truth.set(s.key, JSON.parse(s.json!.toString()));
  const [batch] = await collect(openLoader(base({ imageSize: 24, batchSize: 8 })), 1);
  let checked = 0;
  for (let i = 0; i < batch.keys.length; i++) {
    const t = truth.get(batch.keys[i])!;
    assert.equal(batch.captions[i], t.caption);
    if (t.synth.width !== 24 || t.synth.height !== 24) continue; // cropped: pixel positions moved
    // Square 24×24 images at imageSize 24 are neither cropped nor resized.
    assert.deepEqual(rgbAt(batch.images, 24, i, Math.floor(t.synth.cx), Math.floor(t.synth.cy)), [...COLOR_RGB[t.synth.color]]);
    assert.deepEqual(rgbAt(batch.images, 24, i, 0, 0), [...BACKGROUND_RGB[t.synth.background]]);
    checked++;
  }
  assert.ok(checked >= 4, `only ${checked} samples checked`);
});

test('the order is the same for the same seed and differs for another seed and another epoch', async () => {
  const a = (await collect(openLoader(base()))).flatMap((b) => b.keys);
  const b = (await collect(openLoader(base()))).flatMap((b) => b.keys);
  const c = (await collect(openLoader(base({ seed: 12 })))).flatMap((b) => b.keys);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  const half = a.length / 2;
  assert.notDeepEqual(a.slice(0, half), a.slice(half), 'epoch 2 repeats epoch 1 in the same order');
  assert.deepEqual([...a.slice(0, half)].sort(), [...a.slice(half)].sort());
});

test('resuming from any batch\'s cursor yields exactly the batches that followed it', async () => {
  for (const shuffleBuffer of [3, 1000]) {
    const all = await collect(openLoader(base({ shuffleBuffer })));
    assert.ok(all.length >= 12);
    // Every cut point with the small buffer; every third with the full shuffle (keeps the test quick).
    for (let k = 0; k < all.length - 1; k += shuffleBuffer === 3 ? 1 : 3) {
      const cursor = JSON.parse(JSON.stringify(all[k].cursor)); // as a checkpoint stores it
      const rest = await collect(openLoader(base({ shuffleBuffer, cursor })));
      assert.equal(rest.length, all.length - k - 1, `resume after batch ${k} (cursor ${JSON.stringify(cursor)})`);
      for (let j = 0; j < rest.length; j++) {
        const want = all[k + 1 + j];
        assert.deepEqual(rest[j].keys, want.keys);
        assert.deepEqual(rest[j].captions, want.captions);
        assert.deepEqual(rest[j].cursor, want.cursor);
        assert.ok(Buffer.from(rest[j].images.buffer).equals(Buffer.from(want.images.buffer)), `images of batch ${k + 1 + j} differ`);
      }
    }
  }
});

test('one leased shard gives the batches the loader would give for it in that epoch, resumable by sample', async () => {
  const key = manifest.train.shards[1];
  const opts = { store, batchSize: 4, imageSize: 8, seed: 11, shuffleBuffer: 6 };
  for (const epoch of [0, 3]) {
    const viaLoader = await collect(openLoader({ ...opts, shards: [key], epochs: epoch + 1, cursor: { epoch, shard: 0, sample: 0 } }));
    const viaShard = await collect(shardBatches({ ...opts, shard: key, epoch }));
    assert.deepEqual(viaShard.map((b) => b.keys), viaLoader.map((b) => b.keys));
    assert.deepEqual(viaShard.at(-1)!.cursor, { epoch, shard: 0, sample: 14 });
    const rest = await collect(shardBatches({ ...opts, shard: key, epoch, startSample: viaShard[0].cursor.sample }));
    assert.deepEqual(rest.map((b) => b.keys), viaShard.slice(1).map((b) => b.keys));
  }
});

test('samples without image, caption or UTF-8 are skipped and counted; a truncated shard gives its complete samples, is reported, and the loader goes on', async () => {
  const d = await mkdtemp(join(tmpdir(), 'easel-loader-bad-'));
  try {
    const s = new FileStore(d);
    const samples = [];
    for (let i = 0; i < 6; i++) {
      const img = await sharp({ create: { width: 8, height: 8, channels: 3, background: { r: 0, g: 40 * i, b: 0 } } }).png().toBuffer();
      samples.push({ key: `00000000${i}`, image: { ext: 'png', bytes: img }, caption: Buffer.from(`sample ${i}`), extra: {} });
    }
    const img = samples[0].image;
    const odd = [
      { key: 'no-image', caption: Buffer.from('a caption without an image'), extra: {} },
      { key: 'no-caption', image: img, extra: {} },
      { key: 'latin1', image: img, caption: Buffer.from('un caf\xe9 noir', 'latin1'), extra: {} },
    ];
    await writeShard(s, 'good.tar', [...samples.slice(0, 3), ...odd]);
    await writeShard(s, 'cut.tar', samples.slice(3));
    const whole = await s.getBytes('cut.tar');
    await s.put('cut.tar', whole.subarray(0, whole.length - 1500)); // cuts into the last sample
    const loader = openLoader({ store: s, shards: ['good.tar', 'cut.tar'], batchSize: 2, imageSize: 4, seed: 0, epochs: 1 });
    const keys = (await collect(loader)).flatMap((b) => b.keys).sort();
    assert.deepEqual(keys, ['000000000', '000000001', '000000002', '000000003', '000000004']);
    assert.deepEqual(loader.stats.skipped, { missing_image: 1, missing_caption: 1, caption_encoding: 1, image: 0 });
    assert.equal(loader.stats.failedShards.length, 1);
    assert.equal(loader.stats.failedShards[0].shard, 'cut.tar');
    assert.match(loader.stats.failedShards[0].reason, /truncated tar/);
  } finally {
    await rm(d, { recursive: true, force: true });
  }
});

test('a loader over shards that hold nothing fails instead of spinning', async () => {
  const loader = openLoader({ store, shards: ['no-such.tar'], batchSize: 2, imageSize: 4, seed: 0 });
  await assert.rejects(collect(loader), /a whole epoch over 1 shards produced no samples/);
});

test('shard order is a seeded permutation; the shuffle buffer emits every item once', async () => {
  assert.deepEqual(shardOrder(5, 1, 0), shardOrder(5, 1, 0));
  assert.deepEqual([...shardOrder(5, 1, 0)].sort(), [0, 1, 2, 3, 4]);
  assert.notDeepEqual(shardOrder(8, 1, 0), shardOrder(8, 1, 1));
  async function* count(n: number) {
    for (let i = 0; i < n; i++) yield i;
  }
  const out = [];
  for await (const x of shuffleBuffered(count(20), 4, new Rng(9))) out.push(x);
  assert.deepEqual(out.map((o) => o.item).sort((a, b) => a - b), Array.from({ length: 20 }, (_, i) => i));
  assert.deepEqual(out.map((o) => o.last), [...Array(19).fill(false), true]);
  assert.notDeepEqual(out.map((o) => o.item), Array.from({ length: 20 }, (_, i) => i));
});

test('mapOrdered keeps input order with at most N calls in flight; prefetch runs at most depth ahead', async () => {
  let inFlight = 0;
  let maxInFlight = 0;
  const out: number[] = [];
  for await (const v of mapOrdered(Array.from({ length: 12 }, (_, i) => i), 3, async (i) => {
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    await new Promise((r) => setTimeout(r, (12 - i) % 4));
    inFlight--;
    return i * 10;
  })) out.push(v);
  assert.deepEqual(out, Array.from({ length: 12 }, (_, i) => i * 10));
  assert.equal(maxInFlight, 3);

  let produced = 0;
  async function* source() {
    for (let i = 0; i < 10; i++) {
      produced++;
      yield i;
    }
  }
  const it = prefetch(source(), 2);
  assert.equal((await it.next()).value, 0);
  await new Promise((r) => setTimeout(r, 5));
  assert.equal(produced, 3, 'one consumed and two ready ahead');
  await it.return(undefined);
});

let rgw: Rgw | undefined;
let restoreEnv: (() => void) | undefined;
after(async () => {
  restoreEnv?.();
  await rgw?.stop();
});

test('shards written to and read from an s3:// store (real RADOS Gateway) load exactly as from files', async () => {
  rgw = await startRgw();
  restoreEnv = useRgwEnv(rgw);
  const url = await createTestBucket(rgw, 'shards');
  const s3: ObjectStore = await openStore(url);
  try {
    // Re-pack through the streaming writer (multipart upload underneath): same samples, same bytes.
    const writer = new ShardWriter(s3, { samplesPerShard: 14 });
    for (const key of manifest.train.shards) for await (const sample of readShard(store, key)) await writer.write(sample);
    assert.deepEqual((await writer.close()).map((w) => w.key), manifest.train.shards);
    for (const key of manifest.train.shards) assert.ok((await s3.getBytes(key)).equals(await store.getBytes(key)), `${key} changed on the way through S3`);
    const fromS3 = await collect(openLoader(base({ store: s3, epochs: 1 })));
    const fromFiles = await collect(openLoader(base({ epochs: 1 })));
    assert.deepEqual(fromS3.map((b) => b.keys), fromFiles.map((b) => b.keys));
    assert.ok(fromS3.every((b, i) => Buffer.from(b.images.buffer).equals(Buffer.from(fromFiles[i].images.buffer))));
    const resumed = await collect(openLoader(base({ store: s3, epochs: 1, cursor: fromFiles[4].cursor })));
    assert.deepEqual(resumed.map((b) => b.keys), fromFiles.slice(5).map((b) => b.keys));
  } finally {
    await s3.close();
  }
});
