import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { initBackend } from '../../src/model/backend.ts';
import { Tokenizer } from '../../src/model/tokenizer.ts';
import { checkResumable, readCheckpoint } from '../../src/trainer/checkpoint.ts';
import { parseRunConfig } from '../../src/trainer/config.ts';
import { loadCheckpoint } from '../../src/trainer/models.ts';
import { train } from '../../src/trainer/train.ts';
import { checkpointTokenizer, firstCaptions, learnRunTokenizer, sameTokenizer, tokenizerManifest } from '../../src/trainer/vocab.ts';
import { assertSameWeights, tinyRun, weights, withTempDir, writeTinyDataset } from './fixtures.ts';

before(async () => {
  await initBackend();
});

const bpeRun = (data: string, ckpt: string, merges: number, steps = { clip: 2, prior: 1, decoder: 1 }) => parseRunConfig({ ...tinyRun(data, ckpt, steps), tokenizer: { merges } });

test('the run tokenizer: bytes for 0 merges; otherwise learnt from the first captions in shard order, the same every time', () =>
  withTempDir(async (dir) => {
    const data = join(dir, 'data');
    await writeTinyDataset(data);
    assert.equal(await learnRunTokenizer(bpeRun(data, join(dir, 'c'), 0)), Tokenizer.BYTES);

    const captions = await firstCaptions(data, 20);
    assert.equal(captions.length, 20, 'stops at max, across the shard boundary (16 per shard)');
    assert.deepEqual(captions.slice(0, 16), await firstCaptions(data, 16));

    const cfg = { ...bpeRun(data, join(dir, 'c'), 50), tokenizer: { merges: 50, learnFrom: 20 } };
    const a = await learnRunTokenizer(cfg);
    const b = await learnRunTokenizer(cfg);
    assert.ok(a.merges.length > 0 && a.merges.length <= 50);
    assert.ok(sameTokenizer(a, b));
    assert.ok(sameTokenizer(a, Tokenizer.learn(captions, 50)), 'learnt from exactly those captions');
    assert.ok(!sameTokenizer(a, Tokenizer.BYTES));
    // A shard that cannot be read stops learning, naming it: skipping it could give two learners different merges.
    assert.equal((await firstCaptions(data, 100)).length, 32);
    const tar = join(data, '00001.tar');
    const bytes = await readFile(tar);
    await writeFile(tar, bytes.subarray(0, Math.floor(bytes.length / 2)));
    await assert.rejects(firstCaptions(data, 100), /cannot learn tokenizer merges from .*shard 00001\.tar: .*fix or remove the shard/);
    assert.equal((await firstCaptions(data, 16)).length, 16, 'captions before the bad shard are enough: it is never read');
    await writeFile(tar, bytes);
    // Fewer captions teach other merges: learnFrom is honoured.
    assert.ok(!sameTokenizer(a, await learnRunTokenizer({ ...cfg, tokenizer: { merges: 50, learnFrom: 2 } })));
  }));

test('checkpoints carry the merges (byte-level ones carry none); a checkpoint names its tokenizer and a bad one fails naming the field', () => {
  const t = Tokenizer.learn(['a red circle', 'a red square', 'a blue circle'], 10);
  assert.deepEqual(tokenizerManifest(Tokenizer.BYTES), {});
  const m = tokenizerManifest(t);
  assert.ok(sameTokenizer(checkpointTokenizer(JSON.parse(JSON.stringify(m)), 'ckpt'), t));
  assert.equal(checkpointTokenizer({}, 'ckpt'), Tokenizer.BYTES);
  assert.throws(() => checkpointTokenizer({ tokenizer: { format: 'easel-bpe/1', merges: [[1, 9999]] } }, 'step-000000002'), /invalid tokenizer in step-000000002\/manifest.json:\s+merges\.0/);
});

test('a BPE run: every model reads its tokens, checkpoints carry its merges, loadCheckpoint restores them, and a resume is bit-exact', () =>
  withTempDir(async (dir) => {
    const data = join(dir, 'data');
    await writeTinyDataset(data);
    const steps = { clip: 2, prior: 1, decoder: 1 };
    const full = await train(bpeRun(data, join(dir, 'full'), 60, steps));
    assert.equal(full.finished, true);
    const t = full.models.tokenizer;
    assert.ok(t.merges.length > 0);
    // The token tables have a row per token of the learnt vocabulary.
    const tables = { clip: 'text.token.table', prior: 'tokens.table', decoder: 'text.tokens.table' } as const;
    for (const stage of ['clip', 'prior', 'decoder'] as const) {
      const table = full.models[stage].params().get(tables[stage]);
      // The decoder has one only when it reads captions (captionContext).
      if (stage === 'decoder' && !full.models.decoder.config.captionContext) assert.equal(table, undefined);
      else assert.equal(table?.shape[0], t.vocabSize, `${stage}: rows of ${tables[stage]}`);
    }
    const m = (await readCheckpoint(join(dir, 'full'))).manifest;
    assert.ok(m.tokenizer && sameTokenizer(Tokenizer.fromJson(m.tokenizer, 'manifest'), t));
    const loaded = await loadCheckpoint(join(dir, 'full'));
    assert.ok(sameTokenizer(loaded.models.tokenizer, t));
    assert.deepEqual(loaded.models.tokenizer.encode('a red circle', 24), t.encode('a red circle', 24));
    loaded.dispose();
    const expected = weights(full);
    full.dispose();

    // Stopped mid-CLIP and resumed: bit-identical to the uninterrupted run.
    const cfg = bpeRun(data, join(dir, 'parts'), 60, steps);
    (await train(cfg, { resume: 'latest', stopAtStep: 1 })).dispose();
    const rest = await train(cfg, { resume: 'latest' });
    assert.equal(rest.finished, true);
    assert.ok(sameTokenizer(rest.models.tokenizer, t));
    assertSameWeights(weights(rest), expected);
    rest.dispose();

    // The merges are architecture: resuming with another count is refused, naming the field.
    assert.throws(() => checkResumable({ url: 'ckpt', manifest: m }, bpeRun(data, join(dir, 'full'), 30, steps)), /tokenizer\.merges/);
    // learnFrom only decides what a fresh run learns from: a resume keeps the checkpoint's merges, so it may change.
    const moreCaptions = parseRunConfig({ ...tinyRun(data, join(dir, 'full'), steps), tokenizer: { merges: 60, learnFrom: 5 } });
    assert.deepEqual(checkResumable({ url: 'ckpt', manifest: m }, moreCaptions).changed.map((d) => d.path), ['tokenizer.learnFrom']);
  }));

test('tokenizer config errors name the field', () => {
  assert.throws(() => parseRunConfig({ tokenizer: { merges: -1 } }), /tokenizer\.merges/);
  assert.throws(() => parseRunConfig({ tokenizer: { learnFrom: 0 } }), /tokenizer\.learnFrom/);
  assert.throws(() => parseRunConfig({ tokenizer: { vocab: 'x' } }), /tokenizer/);
});
