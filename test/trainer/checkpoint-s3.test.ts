// Checkpoints on a real S3 server (Ceph RADOS Gateway on loopback): written by a training run, pruned, resolved
// through latest.json, resumed from and loaded for sampling.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { openStore } from '../../src/data/store/index.ts';
import { initBackend } from '../../src/model/backend.ts';
import { loadCheckpoint } from '../../src/trainer/models.ts';
import { train } from '../../src/trainer/train.ts';
import { createTestBucket, startRgw, useRgwEnv, type Rgw } from '../helpers/rgw.ts';
import { tinyConfig, withTempDir, writeTinyDataset } from './fixtures.ts';

let rgw: Rgw | undefined;
let restoreEnv: (() => void) | undefined;
before(async () => {
  await initBackend();
  rgw = await startRgw();
  restoreEnv = useRgwEnv(rgw);
});
after(async () => {
  restoreEnv?.();
  await rgw?.stop();
});

test('a run checkpoints to s3://, keeps the newest `keep`, resumes from latest and loads for sampling', () =>
  withTempDir(async (dir) => {
    await writeTinyDataset(join(dir, 'data'));
    const url = await createTestBucket(rgw!, 'runs/tiny');
    const cfg = tinyConfig(join(dir, 'data'), url, { clip: 2, prior: 2, decoder: 1 });
    const first = await train(cfg, { stopAtStep: 3 });
    assert.equal(first.finished, false);
    first.dispose();

    const resumed = await train(cfg, { resume: 'latest' });
    assert.equal(resumed.finished, true);
    assert.equal(resumed.globalStep, 5);
    assert.match(resumed.lastCheckpoint!, /^s3:\/\/.*\/runs\/tiny\/step-000000005$/);
    resumed.dispose();

    const store = await openStore(url);
    const folders = new Set<string>();
    for await (const o of store.list()) folders.add(o.key.split('/')[0]);
    await store.close();
    assert.deepEqual([...folders].sort(), ['latest.json', 'step-000000004', 'step-000000005']);

    const loaded = await loadCheckpoint(url);
    assert.equal(loaded.manifest.global_step, 5);
    assert.equal(loaded.manifest.stage, 'decoder');
    loaded.dispose();
  }));
