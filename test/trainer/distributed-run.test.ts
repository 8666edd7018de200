// `easel run` end to end: nats-server, coordinator and two trainers as processes; Ctrl-C stops the run with a
// checkpoint; the same command again resumes it (coordinator state from JetStream, weights from the checkpoint)
// and finishes CLIP → prior → decoder; status.json holds the coordinator's final /status.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { writeDataset } from './distributed-harness.ts';
import { tinyRun, withTempDir } from './fixtures.ts';

function easelRun(configPath: string, out: string, onLine?: (line: string, kill: () => void) => void): Promise<{ code: number | null; log: string }> {
  const child = spawn(process.execPath, ['bin/easel.js', 'run', '--config', configPath, '--workers', '2', '--out', out], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, EASEL_LOG: 'info' } });
  let log = '';
  const onData = (d: Buffer) => {
    log += d;
    for (const line of d.toString().split('\n')) onLine?.(line, () => child.kill('SIGINT'));
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, log })));
}

test('easel run: Ctrl-C leaves a resumable checkpoint, the same command finishes the run and writes status.json', { timeout: 240_000 }, async () => {
  await withTempDir(async (dir) => {
    const data = join(dir, 'data');
    await writeDataset(data, 2);
    const configPath = join(dir, 'run.yaml');
    const run = { ...tinyRun(data, join(dir, 'ckpt'), { clip: 3, prior: 1, decoder: 1 }), name: 'runtest', backend: 'cpu' };
    await writeFile(configPath, stringify({ ...run, checkpoint: { ...run.checkpoint, everySteps: 0 }, coordinator: { minTrainers: 2, epochs: 4, tickMs: 200 } }));
    const out = join(dir, 'out');

    let interrupted = false;
    const first = await easelRun(configPath, out, (line, kill) => {
      if (!interrupted && /\[trainer\] clip rank=0 step=1\//.test(line)) {
        interrupted = true;
        kill();
      }
    });
    assert.equal(first.code, 0, first.log);
    const stopped = JSON.parse(await readFile(join(out, 'status.json'), 'utf8'));
    assert.equal(stopped.phase === 'done', false, 'stopped before the end');
    assert.ok(stopped.step >= 1 && stopped.step < 5, `stopped at step ${stopped.step}`);
    assert.equal(stopped.checkpoint?.step, stopped.step, 'rank 0 wrote a checkpoint of the last step');

    const second = await easelRun(configPath, out);
    assert.equal(second.code, 0, second.log);
    const s = JSON.parse(await readFile(join(out, 'status.json'), 'utf8'));
    assert.equal(s.phase, 'done');
    assert.equal(s.step, 5);
    assert.equal(s.stage, 'decoder');
    assert.match(second.log, /resuming/);
    // The step budgets end this run before its 4 epochs: 2 ranks × 8 samples in CLIP's 3 steps and the prior's 1,
    // × 4 in the decoder's, which is what expected_samples says the configuration calls for; the resumed run read
    // exactly those. (Exactly-once per applied sample is checked with step traces in distributed*.test.ts.)
    assert.equal(s.expected_samples, 4 * 16 + 8);
    assert.ok(stopped.samples_seen < s.samples_seen, `samples_seen ${stopped.samples_seen} → ${s.samples_seen}`);
    assert.equal(s.samples_seen, s.expected_samples, 'the run that ended normally applied what its configuration calls for');
    assert.equal(s.shards.done + s.shards.leased + s.shards.pending, 2);
  });
});
