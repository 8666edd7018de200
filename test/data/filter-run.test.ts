// filterDataset end to end over file stores: real tars written by the WebDataset writer, real images,
// the real language detector; every bad input counted under its reason; failed shards; resuming.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, readdir, readFile, truncate, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FilterConfig } from '../../src/data/filter/config.ts';
import { CONFIG_KEY, STATS_KEY, filterDataset, type FilterProgress } from '../../src/data/filter/run.ts';
import type { LanguageCheck } from '../../src/data/filter/sample.ts';
import type { FilterStats, ShardStats } from '../../src/data/filter/stats.ts';
import { loadLanguageDetector } from '../../src/data/language.ts';
import { FileStore } from '../../src/data/store/file.ts';
import type { ObjectStore } from '../../src/data/store/types.ts';
import { readShard } from '../../src/data/webdataset/reader.ts';
import { writeShard } from '../../src/data/webdataset/writer.ts';
import { sampleMembers, type Sample } from '../../src/data/webdataset/sample.ts';
import * as img from '../fixtures/filter/images.ts';

const cfg = FilterConfig.parse({ workers: 4, maxPixels: 4_000_000 });
let language: LanguageCheck;
let dir: string;

before(async () => {
  language = await loadLanguageDetector();
  dir = await mkdtemp(join(tmpdir(), 'easel-filter-run-'));
});
after(() => rm(dir, { recursive: true, force: true }));

const EN = 'a red circle on a blue background';
const jpg = async (w = 96, h = 64) => ({ ext: 'jpg', bytes: await img.jpeg(w, h) });

/** Shard 0: every bad input from issue 2 next to good samples. Expected verdicts in `expect`. */
async function mixedShard(): Promise<{ samples: Sample[]; expect: Record<string, string> }> {
  const rows: Array<[Sample, string]> = [
    [img.sample('000000000', await jpg(), EN), 'kept'],
    [img.sample('000000001', { ext: 'jpg', bytes: await img.truncatedJpeg() }, EN), 'image'],
    [img.sample('000000002', { ext: 'jpg', bytes: await img.corruptJpeg() }, EN), 'image'],
    [img.sample('000000003', { ext: 'jpg', bytes: img.notAnImage() }, EN), 'image'],
    [img.sample('000000004', { ext: 'jpg', bytes: img.zeroBytes() }, EN), 'image'],
    [img.sample('000000005', { ext: 'jpg', bytes: await img.cmykJpeg() }, EN), 'kept'],
    [img.sample('000000006', { ext: 'jpg', bytes: await img.grayscaleJpeg() }, EN), 'kept'],
    [img.sample('000000007', { ext: 'png', bytes: await img.png16() }, EN), 'kept'],
    [img.sample('000000008', { ext: 'png', bytes: await img.pngWithAlpha() }, EN), 'kept'],
    [img.sample('000000009', { ext: 'webp', bytes: await img.webp() }, EN), 'kept'],
    [img.sample('000000010', { ext: 'jpg', bytes: await img.exifRotatedJpeg(120, 80) }, EN), 'kept'],
    [img.sample('000000011', { ext: 'png', bytes: await img.bombPng() }, EN), 'image'],
    [img.sample('000000012', await jpg(), undefined), 'missing_caption'],
    [img.sample('000000013', await jpg(), '   \n'), 'caption'],
    [img.sample('000000014', await jpg(), img.latin1Caption()), 'caption_encoding'],
    [img.sample('000000015', undefined, EN), 'missing_image'],
    [img.sample('000000016', await jpg(), EN, '{"url": "http://exa'), 'json'],
    [img.sample('000000017', await jpg(), 'ein roter Kreis auf blauem Hintergrund'), 'language'],
    [img.sample('000000018', await jpg(300, 100), EN), 'aspect_ratio'],
    [img.sample('000000019', await jpg(200, 100), 'a wide photo of a beach at sunset'), 'kept'],
  ];
  return { samples: rows.map(([s]) => s), expect: Object.fromEntries(rows.map(([s, v]) => [s.key, v])) };
}

async function goodShard(shard: number, n: number): Promise<Sample[]> {
  const out: Sample[] = [];
  for (let i = 0; i < n; i++) out.push(img.sample(`0000${shard}${String(i).padStart(4, '0')}`, await jpg(80 + i, 64), `${EN} number ${i}`));
  return out;
}

async function dataset(name: string, shards: Sample[][]): Promise<FileStore> {
  const store = new FileStore(join(dir, name));
  for (const [i, samples] of shards.entries()) await writeShard(store, `${String(i).padStart(5, '0')}.tar`, samples);
  return store;
}

async function readAll(store: ObjectStore, key: string): Promise<Sample[]> {
  const out: Sample[] = [];
  for await (const s of readShard(store, key)) out.push(s);
  return out;
}

async function json<T>(store: ObjectStore, key: string): Promise<T> {
  return JSON.parse((await store.getBytes(key)).toString('utf8')) as T;
}

/** Every file of a FileStore and its bytes, for comparing whole outputs. */
async function snapshot(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of (await readdir(root)).sort()) {
    const text = name.endsWith('_stats.json') ? JSON.stringify({ ...JSON.parse(await readFile(join(root, name), 'utf8')), seconds: 0 }) : (await readFile(join(root, name))).toString('base64');
    out[name] = text;
  }
  return out;
}

describe('filterDataset', () => {
  let mixed: Awaited<ReturnType<typeof mixedShard>>;
  before(async () => {
    mixed = await mixedShard();
  });

  test('filter keeps good samples byte for byte and counts every bad input under its reason', async () => {
    const input = await dataset('mixed-in', [mixed.samples, await goodShard(1, 5)]);
    const output = new FileStore(join(dir, 'mixed-out'));
    const stats = await filterDataset({ input, output, config: cfg, language });

    const expectDropped: Record<string, number> = {};
    for (const v of Object.values(mixed.expect)) if (v !== 'kept') expectDropped[v] = (expectDropped[v] ?? 0) + 1;
    const keptInMixed = Object.values(mixed.expect).filter((v) => v === 'kept').length;
    assert.equal(stats.input, 25);
    assert.equal(stats.kept, keptInMixed + 5);
    for (const [reason, n] of Object.entries(stats.dropped)) assert.equal(n, expectDropped[reason] ?? 0, reason);
    assert.deepEqual(stats.shards, { total: 2, done: 2, failed: 0 });
    assert.deepEqual(stats.failed_shards, []);
    assert.deepEqual(await json<FilterStats>(output, STATS_KEY), stats, 'stats.json holds the returned totals');

    const kept = await readAll(output, '00000.tar');
    assert.deepEqual(
      kept.map((s) => s.key),
      Object.keys(mixed.expect).filter((k) => mixed.expect[k] === 'kept'),
      'kept samples in input order',
    );
    const byKey = new Map(mixed.samples.map((s) => [s.key, s]));
    for (const s of kept) assert.deepEqual(sampleMembers(s), sampleMembers(byKey.get(s.key)!), `${s.key} members unchanged`);
    assert.equal((await readAll(output, '00001.tar')).length, 5);

    const shard0 = await json<ShardStats>(output, '00000_stats.json');
    assert.equal(shard0.shard, '00000.tar');
    assert.equal(shard0.input, 20);
    assert.equal(shard0.kept, keptInMixed);
    assert.equal(shard0.dropped.language, 1);
  });

  test('a truncated tar fails that shard with a clear error and the other shards are still filtered', async () => {
    const input = await dataset('trunc-in', [await goodShard(0, 4), await goodShard(1, 6), await goodShard(2, 3)]);
    const tar1 = join(dir, 'trunc-in', '00001.tar');
    await truncate(tar1, Math.floor((await stat(tar1)).size / 2));
    const output = new FileStore(join(dir, 'trunc-out'));
    const stats = await filterDataset({ input, output, config: cfg, language });

    assert.deepEqual(stats.shards, { total: 3, done: 2, failed: 1 });
    assert.equal(stats.failed_shards[0].shard, '00001.tar');
    assert.match(stats.failed_shards[0].error, /00001\.tar: truncated tar/);
    assert.equal(stats.input, 7, 'only finished shards are counted');
    assert.equal(stats.kept, 7);
    assert.equal(await output.head('00001.tar'), undefined, 'nothing is published for the failed shard');
    assert.equal(await output.head('00001_stats.json'), undefined);
    assert.equal((await readAll(output, '00002.tar')).length, 3);

    // Replacing the broken shard and re-running does only that shard.
    await writeShard(input, '00001.tar', await goodShard(1, 6));
    const again = await filterDataset({ input, output, config: cfg, language });
    assert.deepEqual(again.shards, { total: 3, done: 3, failed: 0 });
    assert.equal(again.input, 13);
  });

  test('a re-run skips finished shards and does not duplicate output', async () => {
    const input = await dataset('rerun-in', [await goodShard(0, 3), await goodShard(1, 3)]);
    const output = new FileStore(join(dir, 'rerun-out'));
    const first = await filterDataset({ input, output, config: cfg, language });
    const before = await snapshot(join(dir, 'rerun-out'));
    const seen: FilterProgress[] = [];
    const second = await filterDataset({ input, output, config: cfg, language, onProgress: (p) => seen.push(p) });
    assert.equal(seen.filter((p) => p.samples > 0).length, 0, 'no sample is checked again');
    assert.deepEqual(second, first);
    assert.deepEqual(await snapshot(join(dir, 'rerun-out')), before);
  });

  test('a run that dies after publishing a shard but before its done marker is completed by a re-run, output identical to a clean run', async () => {
    const shards = [await goodShard(0, 3), mixed.samples, await goodShard(2, 4)];
    const input = await dataset('crash-in', shards);
    const clean = new FileStore(join(dir, 'crash-clean'));
    await filterDataset({ input, output: clean, config: cfg, language });

    // The output store "dies" at the worst moment: shard 1's tar is published, its marker never is.
    class Crash extends Error {}
    const real = new FileStore(join(dir, 'crash-out'));
    const dying: ObjectStore = Object.assign(Object.create(real) as FileStore, {
      put: async (key: string, body: Parameters<ObjectStore['put']>[1]) => {
        if (key === '00001_stats.json') throw new Crash('process killed');
        return real.put(key, body);
      },
    });
    const crashed = await filterDataset({ input, output: dying, config: cfg, language });
    assert.deepEqual(crashed.failed_shards.map((f) => f.shard), ['00001.tar']);
    assert.equal(await real.head('00001.tar'), undefined, 'a shard without its marker leaves no tar behind');
    // A real crash leaves the tar published without its marker: the re-run must overwrite it, not add to it.
    await writeShard(real, '00001.tar', [img.sample('000019999', await jpg(), 'a stale sample from the crashed run')]);

    const resumed = await filterDataset({ input, output: real, config: cfg, language });
    assert.deepEqual(resumed.shards, { total: 3, done: 3, failed: 0 });
    assert.deepEqual(await snapshot(join(dir, 'crash-out')), await snapshot(join(dir, 'crash-clean')));
  });

  test('filter shows progress: samples, kept and bytes read towards the total', async () => {
    const input = await dataset('progress-in', [await goodShard(0, 4), mixed.samples]);
    const output = new FileStore(join(dir, 'progress-out'));
    let last: FilterProgress | undefined;
    await filterDataset({ input, output, config: cfg, language, onProgress: (p) => (last = p) });
    assert.ok(last);
    assert.equal(last.samples, 24);
    assert.equal(last.kept, 4 + Object.values(mixed.expect).filter((v) => v === 'kept').length);
    assert.equal(last.shardsDone, 2);
    assert.equal(last.bytesRead, last.bytesTotal, 'every input byte was read');
  });

  test('resuming into an output made with different settings is refused', async () => {
    const input = await dataset('settings-in', [await goodShard(0, 2)]);
    const output = new FileStore(join(dir, 'settings-out'));
    await filterDataset({ input, output, config: cfg, language });
    const other = FilterConfig.parse({ ...cfg, minAspect: 0.8 });
    await assert.rejects(filterDataset({ input, output, config: other, language }), /filtered with different settings.*"minAspect":0.5/);
    assert.deepEqual(await json(output, CONFIG_KEY), { lang: 'en', minAspect: 0.5, maxAspect: 2, minCaptionChars: 5, minCaptionWords: 1, maxPixels: 4_000_000 });
  });

  test('an output that already holds foreign shards, or is the input itself, is refused', async () => {
    const input = await dataset('foreign-in', [await goodShard(0, 2)]);
    await assert.rejects(filterDataset({ input, output: input, config: cfg, language }), /--out must differ from --in/);
    const foreign = await dataset('foreign-out', [await goodShard(0, 1)]);
    await assert.rejects(filterDataset({ input, output: foreign, config: cfg, language }), /already holds shards \(00000\.tar\) that the filter did not write/);
    await assert.rejects(filterDataset({ input: new FileStore(join(dir, 'empty')), output: new FileStore(join(dir, 'empty-out')), config: cfg, language }), /no shards/);
  });
});
