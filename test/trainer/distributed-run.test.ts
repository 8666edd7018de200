// `easel run` end to end: nats-server, coordinator and two trainers as processes; Ctrl-C stops the run with a
// checkpoint; the same command again resumes it (coordinator state from JetStream, weights from the checkpoint)
// and finishes CLIP → prior → decoder; status.json holds the coordinator's final /status. With --nats it uses that
// server; without, and without nats-server on PATH, it says how to get one.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { startNats } from '../helpers/nats.ts';
import { writeDataset } from './distributed-harness.ts';
import { tinyRun, withTempDir } from './fixtures.ts';

/**
 * `easel run <args>` as a child process; `onLine` sees every line of its output and can Ctrl-C it. If it still runs
 * after `t` (the test timed out), it gets Ctrl-C; a second one, which kills its trainers, only if they have not
 * stopped within 20 s (one that arrives while it stops its coordinator and nats-server kills it first); kill -9 last:
 * its children run in process groups of their own, and only `easel run` stops them.
 */
function easelRun(t: TestContext, args: string[], onLine?: (line: string, kill: () => void) => void): Promise<{ code: number | null; log: string }> {
  const child = spawn(process.execPath, ['bin/easel.js', 'run', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, EASEL_LOG: 'info' } });
  let log = '';
  const onData = (d: Buffer) => {
    log += d;
    for (const line of d.toString().split('\n')) onLine?.(line, () => child.kill('SIGINT'));
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exited = new Promise<{ code: number | null; log: string }>((resolve) => child.once('exit', (code) => resolve({ code, log })));
  const running = () => child.exitCode === null && child.signalCode === null;
  t.after(async () => {
    for (const waitMs of [20_000, 15_000]) {
      if (!running()) return;
      child.kill('SIGINT');
      await Promise.race([exited, sleep(waitMs, undefined, { ref: false })]);
    }
    if (running()) child.kill('SIGKILL');
  });
  return exited;
}

type TinyRun = ReturnType<typeof tinyRun>;

/**
 * A run file for `easel run` over `shards` tiny shards under `dir` (cpu backend): the tiny run with `steps`, named
 * `name`, plus the keys `extra` returns for it. Returns the file and the --out folder.
 */
async function prepareRun(dir: string, shards: number, name: string, steps: Parameters<typeof tinyRun>[2], extra: (run: TinyRun) => object): Promise<{ configPath: string; out: string }> {
  const data = join(dir, 'data');
  await writeDataset(data, shards);
  const configPath = join(dir, 'run.yaml');
  const run = { ...tinyRun(data, join(dir, 'ckpt'), steps), name, backend: 'cpu' };
  await writeFile(configPath, stringify({ ...run, ...extra(run) }));
  return { configPath, out: join(dir, 'out') };
}

test('easel run: Ctrl-C leaves a resumable checkpoint, the same command finishes the run and writes status.json', { timeout: 240_000 }, async (t) => {
  await withTempDir(async (dir) => {
    const { configPath, out } = await prepareRun(dir, 2, 'runtest', { clip: 3, prior: 1, decoder: 1 }, (run) => ({
      checkpoint: { ...run.checkpoint, everySteps: 0 },
      coordinator: { minTrainers: 2, epochs: 4, tickMs: 200 },
    }));

    let interrupted = false;
    const args = ['--config', configPath, '--workers', '2', '--out', out];
    const first = await easelRun(t, args, (line, kill) => {
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

    const second = await easelRun(t, args);
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

/** PIDs of the live processes whose command line mentions `text` (from /proc: Linux only, as the tests are). */
function processesMentioning(text: string): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d) && Number(d) !== process.pid)
    .filter((d) => {
      try {
        return readFileSync(`/proc/${d}/cmdline`, 'utf8').includes(text);
      } catch {
        return false; // gone meanwhile
      }
    })
    .map(Number);
}

/**
 * `easel run <args>` as a plain child process, for tests that signal it themselves; after `t`, it and every
 * process whose command line mentions `dir` are killed.
 */
function spawnRun(t: TestContext, dir: string, args: string[]) {
  const child = spawn(process.execPath, ['bin/easel.js', 'run', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, EASEL_LOG: 'info' } });
  t.after(() => {
    child.kill('SIGKILL');
    for (const pid of processesMentioning(dir)) process.kill(pid, 'SIGKILL');
  });
  let log = '';
  child.stdout!.on('data', (d) => (log += d));
  child.stderr!.on('data', (d) => (log += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return { child, exited, log: () => log };
}

test('easel run: Ctrl-C while its nats-server starts stops everything it started (exit 130, no process left behind)', { timeout: 120_000 }, async (t) => {
  await withTempDir(async (dir) => {
    const { configPath, out } = await prepareRun(dir, 1, 'earlystop', { clip: 1, prior: 0, decoder: 0 }, () => ({ coordinator: { minTrainers: 1, tickMs: 200 } }));
    const { child, exited, log } = spawnRun(t, dir, ['--config', configPath, '--workers', '1', '--out', out]);
    // Its JetStream store is under --out: the nats-server is up (or starting) once a process names it.
    while (processesMentioning(join(out, 'nats')).length === 0) {
      assert.equal(child.exitCode, null, `easel run exited before starting nats-server:\n${log()}`);
      await sleep(20);
    }
    child.kill('SIGINT');
    assert.equal(await exited, 130, log());
    assert.match(log(), /interrupted before the trainers started/);
    assert.doesNotMatch(log(), /\[trainer-0\]/, 'no trainer was started');
    assert.deepEqual(processesMentioning(dir), [], 'easel run left a process behind (its nats-server, coordinator or a trainer)');
  });
});

test('easel run killed with -9 mid-run: its trainer, coordinator and nats-server stop on their own', { timeout: 120_000 }, async (t) => {
  await withTempDir(async (dir) => {
    const { configPath, out } = await prepareRun(dir, 2, 'orphans', { clip: 200, prior: 0, decoder: 0 }, () => ({ coordinator: { minTrainers: 1, epochs: 100, tickMs: 200 } }));
    const { child, log } = spawnRun(t, dir, ['--config', configPath, '--workers', '1', '--out', out]);
    while (!/\[trainer-0\] .*clip rank=0 step=1\//.test(log())) {
      assert.equal(child.exitCode, null, log());
      await sleep(50);
    }
    const started = processesMentioning(dir).filter((pid) => pid !== child.pid);
    assert.ok(started.length >= 3, `nats-server (under its shell), the coordinator and a trainer run: ${started}`);
    child.kill('SIGKILL');
    // They notice the pipe from easel run close: the trainer stops after its step (with NATS going, its collective
    // may have to time out first: 15 s), the coordinator and nats-server at once.
    for (let i = 0; i < 600 && processesMentioning(dir).length > 0; i++) await sleep(100);
    assert.deepEqual(processesMentioning(dir), [], 'a process easel run started outlived it');
  });
});

test('easel run --nats <url> runs on that server and starts no nats-server of its own', { timeout: 120_000 }, async (t) => {
  await withTempDir(async (dir) => {
    // One trainer, one CLIP step of 8 samples.
    const { configPath, out } = await prepareRun(dir, 1, 'natstest', { clip: 1, prior: 0, decoder: 0 }, () => ({ coordinator: { minTrainers: 1, tickMs: 200 } }));
    const nats = await startNats();
    try {
      const r = await easelRun(t, ['--config', configPath, '--workers', '1', '--nats', nats.url, '--out', out]);
      assert.equal(r.code, 0, r.log);
      const s = JSON.parse(await readFile(join(out, 'status.json'), 'utf8'));
      assert.equal(s.phase, 'done', r.log);
      assert.equal(s.step, 1);
      assert.equal(s.samples_seen, 8);
      assert.equal(s.samples_seen, s.expected_samples);
      assert.match(r.log, new RegExp(`NATS ${nats.url};`), 'the run says which server it used');
      assert.equal(existsSync(join(out, 'nats')), false, 'easel run started a nats-server of its own (its JetStream store is there)');
    } finally {
      await nats.stop();
    }
  });
});

test('easel run without --nats and without nats-server on PATH exits 2 and says how to install it', async () => {
  await withTempDir(async (dir) => {
    const configPath = join(dir, 'run.yaml');
    await writeFile(configPath, stringify({ ...tinyRun(join(dir, 'data'), join(dir, 'ckpt')), name: 'nonats' }));
    // An empty folder as the whole PATH: node itself is started by its absolute path.
    const emptyPath = join(dir, 'bin');
    await mkdir(emptyPath);
    const r = spawnSync(process.execPath, ['bin/easel.js', 'run', '--config', configPath, '--workers', '1', '--out', join(dir, 'out')], { encoding: 'utf8', env: { ...process.env, PATH: emptyPath } });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /nats-server is not on PATH/);
    assert.match(r.stderr, /apt-get install nats-server/);
    assert.match(r.stderr, /--nats <url>/);
  });
});
