// The weights checksum every coordinator.checksumEvery steps: ranks whose weights differ are found and re-synced
// from rank 0. To make two ranks diverge for real, trainer b runs a run file with another CLIP learning rate (the
// in-process coordinator holds no run file to compare theirs with).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { startHarness } from './distributed-harness.ts';
import { withTempDir } from './fixtures.ts';

test('ranks whose weights diverge are detected by the periodic checksum and re-synced from rank 0', { timeout: 180_000 }, async (t) => {
  await withTempDir(async (dir) => {
    // 4 shards × 16 samples, batch 8 per rank: 4 steps; checksums compared after steps 2 and 4.
    const h = await startHarness(dir, { steps: { clip: 4, prior: 0, decoder: 0 }, shards: 4, minTrainers: 2 });
    t.after(() => h.stop());
    try {
      const run = parse(await readFile(h.configPath, 'utf8'));
      run.coordinator = { ...run.coordinator, checksumEvery: 2 };
      const same = join(dir, 'same.yaml');
      const other = join(dir, 'other.yaml');
      await writeFile(same, stringify(run));
      await writeFile(other, stringify({ ...run, stages: { ...run.stages, clip: { ...run.stages.clip, optimizer: { lr: 0.05 } } } }));
      const a = h.spawnTrainer('a', { config: same });
      const b = h.spawnTrainer('b', { config: other });
      const codes = await Promise.all([a.exited, b.exited]);
      const logs = () => `--- a ---\n${a.log()}\n--- b ---\n${b.log()}`;
      assert.deepEqual(codes, [0, 0], logs());
      const [ta, tb] = [await h.trace('a'), await h.trace('b')];
      assert.deepEqual(ta.map((r) => r.globalStep), [1, 2, 3, 4], logs());
      // Between checks the ranks drift apart (so the check has something to find) …
      for (const i of [0, 2]) assert.notEqual(ta[i].weights, tb[i].weights, `step ${i + 1}: the ranks should differ`);
      // … and after each check they hold rank 0's weights again.
      for (const i of [1, 3]) assert.equal(ta[i].weights, tb[i].weights, `step ${i + 1}: not re-synced\n${logs()}`);
      assert.equal((logs().match(/weights differ across ranks/g) ?? []).length, 4, 'each rank logged both re-syncs');
      assert.equal((await h.status()).samples_seen, 64);
    } finally {
      await h.stop();
    }
  });
});
