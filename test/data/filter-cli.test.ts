// `easel filter` as users run it: the real CLI entry point (main([...]), in this process so the language models
// load once) over the synthetic dataset, on a file store and between buckets of a real S3 server (Ceph RGW);
// a truncated shard; and a run in a child process killed with SIGKILL, then resumed.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { main } from '../../src/cli/main.ts';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, stat, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FilterStats } from '../../src/data/filter/stats.ts';
import { openStore } from '../../src/data/store/index.ts';
import { FileStore } from '../../src/data/store/file.ts';
import { writeSynthDataset, type SynthManifest } from '../../src/data/synth/dataset.ts';
import { readShard } from '../../src/data/webdataset/reader.ts';
import { createTestBucket, startRgw, type Rgw } from '../helpers/rgw.ts';
import { killAfter } from '../helpers/watchdog.ts';

let dir: string;
let data: string;
let manifest: SynthManifest;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'easel-filter-cli-'));
  data = join(dir, 'synth');
  manifest = await writeSynthDataset(new FileStore(data), { shards: 3, perShard: 40, size: 48, seed: 7, badFraction: 0.3, evalPerPair: 2 });
});
after(() => rm(dir, { recursive: true, force: true }));

/**
 * Runs `easel <args>` through the CLI's main(), capturing what it prints: console.log (stdout itself carries
 * the test runner's own messages, so it is left alone) and stderr, where the logs go (at info level).
 */
async function easel(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const log = console.log;
  const { write } = process.stderr;
  const level = process.env.EASEL_LOG;
  console.log = (...parts: unknown[]) => void out.push(parts.join(' ') + '\n');
  process.stderr.write = ((chunk: string | Uint8Array) => err.push(String(chunk)) > 0) as typeof process.stderr.write;
  process.env.EASEL_LOG = 'info';
  try {
    const status = await main(args);
    return { status, stdout: out.join(''), stderr: err.join('') };
  } finally {
    console.log = log;
    process.stderr.write = write;
    if (level === undefined) delete process.env.EASEL_LOG;
    else process.env.EASEL_LOG = level;
  }
}

/** The last stdout line, which `easel filter` prints as the run's stats. */
function printedStats(stdout: string): FilterStats {
  return JSON.parse(stdout.trim().split('\n').at(-1)!) as FilterStats;
}

async function snapshot(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of (await readdir(root)).sort()) {
    if (name.includes('.easel-tmp-')) continue; // a killed write's temp file: invisible to the store
    const bytes = await readFile(join(root, name));
    out[name] = name.endsWith('_stats.json') ? JSON.stringify({ ...JSON.parse(bytes.toString('utf8')), seconds: 0 }) : bytes.toString('base64');
  }
  return out;
}

describe('easel filter', () => {
  test('filters the synthetic dataset on a file store: drops exactly its planted defects, by reason', async () => {
    const out = join(dir, 'out-file');
    const r = await easel(['filter', '--in', data, '--out', `file://${out}`, '--workers', '3']);
    assert.equal(r.status, 0, r.stderr);
    const stats = JSON.parse(await readFile(join(out, 'stats.json'), 'utf8')) as FilterStats;
    assert.deepEqual(printedStats(r.stdout), stats);
    assert.equal(stats.input, manifest.train.samples);
    assert.equal(stats.kept, manifest.train.good);
    for (const [reason, n] of Object.entries(manifest.train.dropped)) assert.equal(stats.dropped[reason as keyof FilterStats['dropped']], n, reason);
    assert.deepEqual(stats.shards, { total: 3, done: 3, failed: 0 });
    assert.match(r.stderr, /\[filter\] shard done shard=00002\.tar/, 'plain log lines when stderr is not a terminal');
    assert.match(r.stderr, new RegExp(`kept ${stats.kept} of ${stats.input} samples`));
    const files = (await readdir(out)).sort();
    assert.deepEqual(files, ['00000.tar', '00000_stats.json', '00001.tar', '00001_stats.json', '00002.tar', '00002_stats.json', 'filter_config.json', 'stats.json']);
  });

  test('a truncated shard makes the run exit 1, names the shard, and the other shards are filtered', async () => {
    const broken = join(dir, 'synth-broken');
    await writeSynthDataset(new FileStore(broken), { shards: 3, perShard: 10, size: 32, seed: 3, evalPerPair: 0 });
    const tar = join(broken, '00001.tar');
    await truncate(tar, (await stat(tar)).size - 2000);
    const out = join(dir, 'out-broken');
    const r = await easel(['filter', '--in', broken, '--out', out]);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /shard failed.*shard=00001\.tar.*truncated tar/);
    assert.match(r.stderr, /1 of 3 shards failed/);
    const stats = printedStats(r.stdout);
    assert.deepEqual(stats.failed_shards.map((f) => f.shard), ['00001.tar']);
    assert.equal(stats.shards.done, 2);
    assert.ok(existsSync(join(out, '00002.tar')));
  });

  test('a SIGKILLed run resumes without redoing finished shards or duplicating output', async (t) => {
    const big = join(dir, 'synth-big');
    await writeSynthDataset(new FileStore(big), { shards: 8, perShard: 60, size: 64, seed: 11, evalPerPair: 0 });
    const clean = join(dir, 'out-clean');
    assert.equal((await easel(['filter', '--in', big, '--out', clean, '--workers', '2'])).status, 0);

    const out = join(dir, 'out-killed');
    const child = spawn(process.execPath, ['bin/easel.js', 'filter', '--in', big, '--out', out, '--workers', '2'], { stdio: 'ignore' });
    killAfter(t, child);
    const exited = new Promise((resolve) => child.on('exit', resolve));
    while (!existsSync(join(out, '00000_stats.json'))) {
      if (child.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 5));
    }
    child.kill('SIGKILL');
    await exited;
    assert.equal(existsSync(join(out, 'stats.json')), false, 'the run was killed before it finished');
    const finishedBefore = (await readdir(out)).filter((f) => f.endsWith('_stats.json'));
    assert.ok(finishedBefore.length >= 1 && finishedBefore.length < 8);

    const r = await easel(['filter', '--in', big, '--out', out, '--workers', '2']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`resuming finished=${finishedBefore.length} remaining=${8 - finishedBefore.length}`));
    assert.deepEqual(await snapshot(out), await snapshot(clean), 'same files, byte for byte, as a run that was never killed');
  });

  test('bad flags exit 2 and name the setting', async () => {
    const r = await easel(['filter', '--in', data, '--out', join(dir, 'x'), '--min-aspect', '3']);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /minAspect: minAspect must not exceed maxAspect/);
    const w = await easel(['filter', '--in', data, '--out', join(dir, 'x'), '--workers', 'lots']);
    assert.equal(w.status, 2);
    assert.match(w.stderr, /workers:/);
    assert.equal((await easel(['filter', '--in', data])).status, 2);
  });
});

describe('easel filter on S3 (Ceph RGW)', () => {
  let rgw: Rgw;
  before(async () => {
    rgw = await startRgw();
  });
  after(() => rgw?.stop());

  test('filters a dataset from one bucket into another', async () => {
    const inUrl = await createTestBucket(rgw, 'laion/part-a');
    const outUrl = await createTestBucket(rgw, 'filtered');
    const input = await openStore(inUrl);
    try {
      await writeSynthDataset(input, { shards: 2, perShard: 20, size: 32, seed: 5, badFraction: 0.3, evalPerPair: 0 });
    } finally {
      await input.close();
    }
    const r = await easel(['filter', '--in', inUrl, '--out', outUrl]); // createTestBucket pointed process.env at RGW
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stderr, new RegExp(rgw.secretAccessKey), 'credentials never reach the log');

    const output = await openStore(outUrl);
    try {
      const stats = JSON.parse((await output.getBytes('stats.json')).toString('utf8')) as FilterStats;
      assert.equal(stats.input, 40);
      assert.deepEqual(printedStats(r.stdout), stats);
      let kept = 0;
      for (const key of ['00000.tar', '00001.tar']) for await (const _ of readShard(output, key)) kept++;
      assert.equal(kept, stats.kept);
      assert.ok(stats.kept < 40 && stats.kept > 0);
    } finally {
      await output.close();
    }
  });
});
