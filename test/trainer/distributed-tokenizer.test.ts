// Ranks must encode captions alike: a trainer whose BPE merges differ from rank 0's — same count, so every tensor
// has the same shape and nothing else would notice — refuses to train when the generation forms.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { parseRunConfig } from '../../src/trainer/config.ts';
import { learnRunTokenizer, sameTokenizer } from '../../src/trainer/vocab.ts';
import { startHarness } from './distributed-harness.ts';
import { withTempDir } from './fixtures.ts';

test('a trainer whose tokenizer merges differ from rank 0’s stops with an error naming them, instead of training on other tokens', { timeout: 180_000 }, async (t) => {
  await withTempDir(async (dir) => {
    const h = await startHarness(dir, { steps: { clip: 50, prior: 0, decoder: 0 }, shards: 2, minTrainers: 2, tokenizerMerges: 10 });
    t.after(() => h.stop());
    // The same run file but learnt from the first 6 captions only: as many merges, other ones.
    const run = parse(await readFile(h.configPath, 'utf8'));
    const otherPath = join(dir, 'other.yaml');
    await writeFile(otherPath, stringify({ ...run, tokenizer: { merges: 10, learnFrom: 6 } }));
    const [mine, other] = await Promise.all([learnRunTokenizer(parseRunConfig(run)), learnRunTokenizer(parseRunConfig(parse(await readFile(otherPath, 'utf8'))))]);
    assert.equal(mine.merges.length, other.merges.length, 'precondition: the same vocabulary size');
    assert.ok(!sameTokenizer(mine, other), 'precondition: other merges');

    const trainers = [h.spawnTrainer('t0'), h.spawnTrainer('t1', { config: otherPath })];
    const first = await Promise.race(trainers.map((p, i) => p.exited.then((code) => ({ i, code }))));
    assert.notEqual(first.code, 0, trainers[first.i].log());
    assert.match(trainers[first.i].log(), /rank 0 encodes captions with other tokenizer merges \(fingerprint \d+, this trainer's \d+\)/);
  });
});
