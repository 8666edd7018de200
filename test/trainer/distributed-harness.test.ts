// The distributed tests' harness itself: a test that times out while its trainer runs still leaves no process
// behind, because it registers h.stop() with t.after (which runs on a timeout, unlike the test's own `finally`).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { isAlive } from '../helpers/watchdog.ts';
import { withTempDir } from './fixtures.ts';

const HARNESS = new URL('./distributed-harness.ts', import.meta.url).href;

/** A test file written the way the distributed tests are, whose trainer waits forever for a second one. */
const hangingTest = (dir: string) => `
import { test } from 'node:test';
import { writeFile } from 'node:fs/promises';
import { startHarness } from ${JSON.stringify(HARNESS)};

test('a trainer waits for a second one that never comes', { timeout: 5000 }, async (t) => {
  const h = await startHarness(${JSON.stringify(dir)}, { steps: { clip: 100, prior: 0, decoder: 0 }, minTrainers: 2 });
  t.after(() => h.stop());
  const a = h.spawnTrainer('a');
  await writeFile(${JSON.stringify(join(dir, 'pids.json'))}, JSON.stringify({ trainer: a.pid, nats: h.nats.pid() }));
  try {
    await a.exited;
  } finally {
    await h.stop();
  }
});
`;

test('a test that times out still stops its harness: its trainer and nats-server are gone and its process exits', { timeout: 60_000 }, async (t) => {
  await withTempDir(async (dir) => {
    const file = join(dir, 'hangs.test.mts');
    await writeFile(file, hangingTest(dir));
    // Without NODE_TEST_CONTEXT (set when this file runs under --test) it reports as a test run of its own, in text.
    const { NODE_TEST_CONTEXT: _, ...env } = process.env;
    const child = spawn(process.execPath, ['--import', 'tsx', file], { stdio: ['ignore', 'pipe', 'pipe'], env });
    let log = '';
    child.stdout!.on('data', (d) => (log += d));
    child.stderr!.on('data', (d) => (log += d));
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    const pids = async (): Promise<{ trainer: number; nats: number }> => JSON.parse(await readFile(join(dir, 'pids.json'), 'utf8'));
    // Should this test fail, it leaves nothing behind either (nats-server's watchdog follows the test process).
    t.after(async () => {
      child.kill('SIGKILL');
      const trainer = (await pids().catch(() => undefined))?.trainer;
      if (trainer && isAlive(trainer)) process.kill(trainer, 'SIGKILL');
    });

    const ended = await Promise.race([exited.then(() => true), sleep(40_000, false, { ref: false })]);
    assert.ok(ended, `the test process still runs 40 s after it started (its test times out after 5 s):\n${log}`);
    assert.match(log, /timed out after 5000ms/, 'the test timed out');
    const { trainer, nats } = await pids();
    assert.equal(isAlive(trainer), false, 'the trainer outlived its test');
    assert.equal(isAlive(nats), false, 'nats-server outlived its test');
  });
});
