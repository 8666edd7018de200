// A trainer of a coordinated run trains with the coordinator's run config: fetched over a real nats-server with the
// `config` verb when the trainer has no --config, compared by hash when it has one.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { NatsConnection } from 'nats';
import { runEasel } from '../helpers/easel.ts';
import { startNats, type NatsServer } from '../helpers/nats.ts';
import { Coordinator, type CoordinatorOptions } from '../../src/coordinator/service.ts';
import { CoordinatorConfig } from '../../src/coordinator/config.ts';
import { UsageError } from '../../src/cli/args.ts';
import { Tokenizer } from '../../src/model/tokenizer.ts';
import { parseRunConfig, type RunConfig } from '../../src/trainer/config.ts';
import { coordinatedRunConfig, fetchRunConfig } from '../../src/trainer/coordinated-config.ts';
import { closeNats, openNats } from '../../src/transport/connection.ts';
import { tinyRun } from './fixtures.ts';

let nats: NatsServer;
let nc: NatsConnection;
let dir: string;
before(async () => {
  nats = await startNats();
  nc = await openNats({ servers: nats.url, name: 'test' });
  dir = await mkdtemp(join(tmpdir(), 'easel-coordinated-config-'));
});
after(async () => {
  await closeNats(nc);
  await nats.stop();
  await rm(dir, { recursive: true, force: true });
});

function runFile(run: string, steps = { clip: 2, prior: 1, decoder: 1 }) {
  return { ...tinyRun(join(dir, 'data'), join(dir, `ckpt-${run}`), steps), name: run, backend: 'cpu' };
}

function start(run: string, runConfig: RunConfig | undefined, over: Partial<CoordinatorOptions> = {}): Promise<Coordinator> {
  return Coordinator.start({
    nc,
    run,
    config: CoordinatorConfig.parse({ httpPort: 0 }),
    runConfig,
    budgets: { clip: runConfig?.stages.clip.steps ?? 1, prior: 0, decoder: 0, upsampler: 0 },
    shards: [{ key: '00000.tar', samples: 4 }],
    ticking: false,
    ...over,
  });
}

test("a trainer without a run file trains with the coordinator's", async () => {
  const config = parseRunConfig(runFile('fetch'));
  const c = await start('fetch', config);
  try {
    assert.deepEqual(await fetchRunConfig(nc, 'fetch'), { config });
    assert.deepEqual(await coordinatedRunConfig(nc, 'fetch'), { config });
  } finally {
    await c.stop();
  }
});

test('a trainer whose run file differs from the coordinator’s stops, naming the first field that differs', async () => {
  const coordinator = parseRunConfig(runFile('differs'));
  const file = runFile('differs');
  file.stages.decoder.model.channels = 16;
  Object.assign(file.stages.prior, { optimizer: { lr: 0.01 } });
  const c = await start('differs', coordinator);
  try {
    await assert.rejects(
      coordinatedRunConfig(nc, 'differs', { config: parseRunConfig(file), name: '--config mine.yaml' }),
      (e: Error) =>
        e instanceof UsageError &&
        /^--config mine\.yaml differs from the run config the coordinator was started with: stages\.prior\.optimizer\.lr: --config mine\.yaml has 0\.01, the coordinator has 0\.0003 \(and 1 more field: stages\.decoder\.model\.channels\)/.test(e.message),
    );
    // The same config written differently (defaults spelt out, keys in another order) is the same config.
    const { checkpoint, ...rest } = runFile('differs');
    const same = parseRunConfig({ checkpoint, ...rest, coordinator: { leaseMs: 60_000 } });
    assert.deepEqual(await coordinatedRunConfig(nc, 'differs', { config: same, name: '--config same.yaml' }), { config: coordinator });
  } finally {
    await c.stop();
  }
});

test('a trainer started before its coordinator waits for it to answer', async () => {
  const config = parseRunConfig(runFile('late'));
  const fetching = fetchRunConfig(nc, 'late', { patienceMs: 20_000, timeoutMs: 500 });
  await new Promise((r) => setTimeout(r, 800));
  const c = await start('late', config);
  try {
    assert.deepEqual(await fetching, { config });
  } finally {
    await c.stop();
  }
});

test('with no coordinator at all the trainer gives up after its patience, naming the run', async () => {
  await assert.rejects(fetchRunConfig(nc, 'nobody', { patienceMs: 600, timeoutMs: 200 }), /no coordinator of run 'nobody' answered within 1 s/);
});

test('a coordinator holding no run config: a trainer with a file uses it, one without is refused', async () => {
  const c = await start('bare', undefined);
  try {
    const local = parseRunConfig(runFile('bare'));
    assert.deepEqual(await coordinatedRunConfig(nc, 'bare', { config: local, name: 'f' }), { config: local });
    await assert.rejects(coordinatedRunConfig(nc, 'bare'), /coordinator refused config: this coordinator was started without a run file/);
  } finally {
    await c.stop();
  }
});

test('easel trainer --nats --run, without --config, runs the coordinator’s run; a different --config exits 2 naming the field', { timeout: 60_000 }, async (t) => {
  // Every stage budget 0: the run is done at once, so the trainer fetches the config, builds the models, registers and ends.
  const config = parseRunConfig(runFile('cli', { clip: 0, prior: 0, decoder: 0 }));
  const c = await start('cli', config, { budgets: { clip: 0, prior: 0, decoder: 0, upsampler: 0 } });
  try {
    const ok = await runEasel(t, ['trainer', '--nats', nats.url, '--run', 'cli', '--id', 'w0'], { EASEL_BACKEND: 'cpu' });
    assert.equal(ok.code, 0, ok.log);
    assert.match(ok.log, /trainer run-done at step 0/);
    const other = join(dir, 'other.yaml');
    await writeFile(other, stringify({ ...runFile('cli', { clip: 0, prior: 0, decoder: 0 }), seed: 99 }));
    const bad = await runEasel(t, ['trainer', '--nats', nats.url, '--run', 'cli', '--config', other, '--id', 'w1'], { EASEL_BACKEND: 'cpu' });
    assert.equal(bad.code, 2, bad.log);
    assert.match(bad.log, /seed: --config .*other\.yaml has 99, the coordinator has 11/);
  } finally {
    await c.stop();
  }
});

test('with the run file comes the coordinator’s tokenizer: a trainer trains with those merges and learns none of its own', { timeout: 60_000 }, async (t) => {
  const config = parseRunConfig({ ...runFile('bpe', { clip: 0, prior: 0, decoder: 0 }), tokenizer: { merges: 30 } });
  const merges = new Tokenizer([[97, 98], [259, 99]]).toJson();
  const c = await start('bpe', config, { budgets: { clip: 0, prior: 0, decoder: 0, upsampler: 0 }, tokenizer: merges });
  try {
    const got = await fetchRunConfig(nc, 'bpe');
    assert.deepEqual(got.tokenizer?.toJson(), merges);
    // data.train does not exist here: a trainer that tried to learn merges from it would fail.
    const r = await runEasel(t, ['trainer', '--nats', nats.url, '--run', 'bpe', '--id', 'w0'], { EASEL_BACKEND: 'cpu', EASEL_LOG: 'info' });
    assert.equal(r.code, 0, r.log);
    assert.match(r.log, /bpeMerges=2/);
  } finally {
    await c.stop();
  }
  // Merges this trainer cannot read are an answer, not a silence: refused at once, not retried for a minute.
  const odd = await start('bpe-odd', config, { tokenizer: { format: 'easel-bpe/2', merges: [] } });
  try {
    // (Retried, it would end as a plain "no coordinator answered" error after the 60 s patience.)
    await assert.rejects(fetchRunConfig(nc, 'bpe-odd'), (e: Error) => e instanceof UsageError && /invalid tokenizer in the coordinator of run 'bpe-odd'/.test(e.message));
  } finally {
    await odd.stop();
  }
});
