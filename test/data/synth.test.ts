import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import sharp from 'sharp';
import { FileStore } from '../../src/data/store/file.ts';
import { readShard, type Sample } from '../../src/data/webdataset/index.ts';
import {
  BACKGROUND_RGB,
  COLOR_RGB,
  FOREIGN,
  SynthConfig,
  englishCaption,
  parseColorShapePairs,
  rasterize,
  renderImage,
  writeSynthDataset,
  type GroundTruth,
  type ShapeSpec,
} from '../../src/data/synth/index.ts';

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'easel-synth-'));
}

async function samplesOf(store: FileStore, keys: string[]): Promise<Array<Sample & { truth: GroundTruth }>> {
  const out: Array<Sample & { truth: GroundTruth }> = [];
  for (const k of keys) for await (const s of readShard(store, k)) out.push({ ...s, truth: JSON.parse(s.json!.toString()).synth });
  return out;
}

async function filesUnder(dir: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (e.isFile()) out.set(join(e.parentPath, e.name).slice(dir.length), await readFile(join(e.parentPath, e.name)));
  }
  return out;
}

const SMALL = SynthConfig.parse({ shards: 2, perShard: 40, size: 32, seed: 7, badFraction: 0.25, evalPerPair: 3 });

test('synth writes byte-identical datasets for the same seed and different ones for another seed', async () => {
  const [a, b, c] = [await tempDir(), await tempDir(), await tempDir()];
  try {
    await writeSynthDataset(new FileStore(a), SMALL);
    await writeSynthDataset(new FileStore(b), SMALL);
    await writeSynthDataset(new FileStore(c), { ...SMALL, seed: 8 });
    const [fa, fb, fc] = [await filesUnder(a), await filesUnder(b), await filesUnder(c)];
    assert.deepEqual([...fa.keys()].sort(), ['/00000.tar', '/00000_stats.json', '/00001.tar', '/00001_stats.json', '/eval/00000.tar', '/eval/00000_stats.json', '/synth.json']);
    for (const [name, bytes] of fa) assert.ok(bytes.equals(fb.get(name)!), `${name} differs between two runs with seed 7`);
    assert.ok(!fa.get('/00000.tar')!.equals(fc.get('/00000.tar')!), 'seed 8 gave the same shard as seed 7');
  } finally {
    await Promise.all([a, b, c].map((d) => rm(d, { recursive: true, force: true })));
  }
});

test('jitter bounds how far shapes sit from the centre: 0 centres every shape, 1 spreads them over the free room', async () => {
  const offsets = async (jitter: number) => {
    const dir = await tempDir();
    try {
      await writeSynthDataset(new FileStore(dir), { ...SMALL, badFraction: 0, jitter });
      const store = new FileStore(dir);
      const good = (await samplesOf(store, ['00000.tar', '00001.tar', 'eval/00000.tar'])).map((s) => s.truth);
      return good.map((t) => Math.max(Math.abs(t.cx - t.width / 2), Math.abs(t.cy - t.height / 2)) / ((t.width - t.extent) / 2));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  };
  const [centred, some, anywhere] = [await offsets(0), await offsets(0.3), await offsets(1)];
  assert.ok(centred.every((o) => o === 0), 'jitter 0: every shape at the centre');
  assert.ok(Math.max(...some) <= 0.3 + 1e-9 && Math.max(...some) > 0.1, `jitter 0.3: within 30% of the half-room (max ${Math.max(...some)})`);
  assert.ok(Math.max(...anywhere) > 0.5, `jitter 1: shapes spread far from the centre (max ${Math.max(...anywhere)})`);
});

test('held-out colour–shape pairs never appear in training and make up the eval split', async () => {
  const dir = await tempDir();
  try {
    const store = new FileStore(dir);
    const m = await writeSynthDataset(store, { ...SMALL, badFraction: 0, holdout: 'green triangle, Yellow Square' });
    assert.deepEqual(m.holdout, [{ color: 'green', shape: 'triangle' }, { color: 'yellow', shape: 'square' }]);
    const train = await samplesOf(store, m.train.shards);
    assert.equal(train.length, 80);
    const pairs = new Set(train.map((s) => `${s.truth.color} ${s.truth.shape}`));
    assert.ok(!pairs.has('green triangle') && !pairs.has('yellow square'));
    assert.ok(pairs.size >= 8, `only ${pairs.size} training pairs drawn`);
    for (const s of train) {
      const caption = s.caption!.toString().toLowerCase();
      assert.ok(caption.includes(s.truth.color) && caption.includes(s.truth.shape), `caption "${caption}" does not name its ${s.truth.color} ${s.truth.shape}`);
    }
    const evalSamples = await samplesOf(store, m.eval.shards);
    assert.deepEqual(m.eval.shards, ['eval/00000.tar']);
    assert.deepEqual(evalSamples.map((s) => `${s.truth.color} ${s.truth.shape}`), [...Array(3).fill('green triangle'), ...Array(3).fill('yellow square')]);
    assert.ok(evalSamples.every((s) => s.truth.split === 'eval' && !s.truth.drop));
    assert.deepEqual(JSON.parse(await readFile(join(dir, 'synth.json'), 'utf8')).eval, m.eval);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('samples meant to be dropped are really broken in the way their ground truth says', async () => {
  const dir = await tempDir();
  try {
    const store = new FileStore(dir);
    const m = await writeSynthDataset(store, { ...SMALL, badFraction: 0.6 });
    const train = await samplesOf(store, m.train.shards);
    const counts: Record<string, number> = {};
    for (const s of train) counts[s.truth.drop ?? 'good'] = (counts[s.truth.drop ?? 'good'] ?? 0) + 1;
    assert.deepEqual(counts, { good: m.train.good, ...m.train.dropped });
    assert.equal(m.train.good + Object.values(m.train.dropped).reduce((a, b) => a + b, 0), 80);
    const defects = new Set(train.map((s) => s.truth.defect).filter(Boolean));
    for (const d of ['foreign-caption', 'too-wide', 'too-tall', 'truncated-jpeg', 'not-an-image', 'zero-bytes', 'empty-caption', 'blank-caption']) assert.ok(defects.has(d as never), `no ${d} sample`);

    for (const s of train) {
      const caption = s.caption!.toString();
      const decode = async () => sharp(s.image!.bytes).raw().toBuffer({ resolveWithObject: true });
      switch (s.truth.drop) {
        case 'image':
          await assert.rejects(decode(), `${s.key} (${s.truth.defect}) decoded`);
          break;
        case 'aspect_ratio': {
          const { info } = await decode();
          const r = info.width / info.height;
          assert.ok(r >= 3 || r <= 1 / 3, `${s.key} has aspect ${r}`);
          break;
        }
        case 'caption':
          assert.equal(caption.trim(), '');
          break;
        case 'language':
          assert.notEqual(s.truth.lang, 'en');
          assert.ok(caption.split(' ').length >= 5, `"${caption}" is too short to be a real sentence`);
          break;
        default: {
          const { info } = await decode();
          assert.deepEqual([info.width, info.height], [32, 32]);
          assert.match(caption, /^[A-Za-z ,.]+$/);
        }
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('the renderer fills the shape with its colour and leaves the background around it', async () => {
  const spec: ShapeSpec = { shape: 'triangle', color: 'blue', background: 'gray', size: 'large', width: 40, height: 30, cx: 20, cy: 15, extent: 20 };
  const px = rasterize(spec);
  const at = (x: number, y: number) => [...px.subarray((y * 40 + x) * 3, (y * 40 + x) * 3 + 3)];
  assert.deepEqual(at(20, 20), [...COLOR_RGB.blue], 'inside, near the base');
  assert.deepEqual(at(11, 6), [...BACKGROUND_RGB.gray], 'top-left corner of the bounding box is outside a triangle');
  assert.deepEqual(at(0, 0), [...BACKGROUND_RGB.gray]);
  const square = rasterize({ ...spec, shape: 'square' });
  assert.deepEqual([...square.subarray((6 * 40 + 11) * 3, (6 * 40 + 11) * 3 + 3)], [...COLOR_RGB.blue], 'the same corner is inside a square');
  // PNG is lossless: decoding gives back exactly the rasterised pixels.
  const { data, info } = await sharp(await renderImage(spec, 'png')).raw().toBuffer({ resolveWithObject: true });
  assert.deepEqual([info.width, info.height, info.channels], [40, 30, 3]);
  assert.ok(Buffer.from(px).equals(data));
});

test('captions: English templates name colour, shape and background; foreign templates are real sentences', () => {
  const spec: ShapeSpec = { shape: 'square', color: 'yellow', background: 'black', size: 'small', width: 64, height: 64, cx: 10, cy: 10, extent: 19 };
  assert.equal(englishCaption(spec, 0), 'a yellow square on a black background');
  assert.equal(englishCaption(spec, 1), 'black background with a small yellow square');
  assert.equal(englishCaption(spec, 3), 'a yellow square in the top left of a black image');
  assert.equal(FOREIGN.de[0](spec), 'Ein kleines gelbes Quadrat auf schwarzem Hintergrund');
  assert.equal(FOREIGN.de[2]({ ...spec, shape: 'circle' }), 'Das Bild zeigt einen gelben Kreis vor einem schwarzen Hintergrund');
  assert.equal(FOREIGN.fr[1](spec), 'Sur un fond noir, on voit un petit carré jaune');
  assert.equal(FOREIGN.nl[1](spec), 'Een zwarte achtergrond met een klein geel vierkant');
  assert.equal(FOREIGN.nl[1]({ ...spec, shape: 'circle' }), 'Een zwarte achtergrond met een kleine gele cirkel');
});

test('held-out pairs are parsed strictly and a bad one is named', () => {
  assert.deepEqual(parseColorShapePairs(''), []);
  assert.deepEqual(parseColorShapePairs('red circle'), [{ color: 'red', shape: 'circle' }]);
  assert.throws(() => parseColorShapePairs('red circle, purple hexagon'), /"purple hexagon" is not a "<colour> <shape>" pair/);
});

test('easel data synth writes a dataset and rejects a bad flag naming the field', async () => {
  const dir = await tempDir();
  try {
    const ok = spawnSync(process.execPath, ['bin/easel.js', 'data', 'synth', '--out', dir, '--shards', '1', '--per-shard', '5', '--size', '16', '--eval-per-pair', '1'], { encoding: 'utf8' });
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal(JSON.parse(ok.stdout.trim().split('\n').at(-1)!).train.samples, 5);
    assert.ok((await readdir(dir)).includes('00000.tar'));
    const bad = spawnSync(process.execPath, ['bin/easel.js', 'data', 'synth', '--out', dir, '--bad-fraction', '2', '--holdout', 'purple hexagon'], { encoding: 'utf8' });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /badFraction: /);
    assert.match(bad.stderr, /holdout: "purple hexagon"/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
