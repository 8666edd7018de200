import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { stringify } from 'yaml';
import { startNats, type NatsServer } from '../helpers/nats.ts';
import { spawnWatched, type Watched } from '../helpers/watchdog.ts';
import { CoordinatorClient } from '../../src/coordinator/client.ts';
import { discoverShards } from '../../src/coordinator/dataset.ts';
import { StateStore } from '../../src/coordinator/store.ts';
import { openStore } from '../../src/data/store/index.ts';
import { Tokenizer } from '../../src/model/tokenizer.ts';
import { parseRunConfig } from '../../src/trainer/config.ts';
import { learnRunTokenizer } from '../../src/trainer/vocab.ts';
import { writeDataset } from '../trainer/distributed-harness.ts';

let nats: NatsServer;
let nc: NatsConnection;
let dir: string;
before(async () => {
  nats = await startNats();
  nc = await connect({ servers: nats.url });
  dir = await mkdtemp(join(tmpdir(), 'easel-coord-cli-'));
  const data = join(dir, 'data');
  await mkdir(data);
  // The coordinator reads only the shard list and the filter's per-shard stats, never the tars themselves.
  for (const [i, kept] of [5, 7, 0].entries()) {
    const stem = String(i).padStart(5, '0');
    await writeFile(join(data, `${stem}.tar`), '');
    await writeFile(join(data, `${stem}_stats.json`), JSON.stringify({ shard: `${stem}.tar`, input: kept + 2, kept, dropped: { language: 1, image: 1 } }));
  }
  await writeFile(
    join(dir, 'run.yaml'),
    ['name: cli-run', `data: { train: ${JSON.stringify(data)} }`, 'stages: { clip: { steps: 2 }, prior: { steps: 1 }, decoder: { steps: 1 } }', 'coordinator: { heartbeatTimeoutMs: 60000, httpPort: 0, httpHost: 127.0.0.1 }', ''].join('\n'),
  );
});
/** Every coordinator process this file starts: stopped at the end even if a test timed out and skipped its own stop. */
const started: Watched[] = [];
async function watched(args: string[], log: string): Promise<Watched> {
  const proc = await spawnWatched(process.execPath, ['bin/easel.js', ...args], log);
  started.push(proc);
  return proc;
}
after(async () => {
  await Promise.all(started.map((p) => p.stop()));
  await nc.drain();
  await nats.stop();
  await rm(dir, { recursive: true, force: true });
});

/** Starts `easel coordinator` as a process; resolves with its HTTP URL (the one JSON line it prints). */
async function startCoordinator(log: string, config = join(dir, 'run.yaml')): Promise<{ proc: Watched; url: string }> {
  const proc = await watched(['coordinator', '--config', config, '--nats', nats.url], log);
  for (let i = 0; i < 600; i++) {
    const text = existsSync(log) ? readFileSync(log, 'utf8') : '';
    const line = text.split('\n').reverse().find((l) => l.startsWith('{"run"'));
    if (line && text.split('{"run"').length - 1 > (startCoordinator.seen.get(log) ?? 0)) {
      startCoordinator.seen.set(log, text.split('{"run"').length - 1);
      return { proc, url: (JSON.parse(line) as { http: string }).http };
    }
    if (proc.child.exitCode !== null) throw new Error(`easel coordinator exited: ${text}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  await proc.stop();
  throw new Error(`easel coordinator did not start: ${readFileSync(log, 'utf8')}`);
}
startCoordinator.seen = new Map<string, number>();

test('the dataset is the filtered shards with their kept counts; a shard without stats is named', async () => {
  const store = await openStore(join(dir, 'data'));
  const d = await discoverShards(store);
  assert.deepEqual(d.shards, [
    { key: '00000.tar', samples: 5 },
    { key: '00001.tar', samples: 7 },
    { key: '00002.tar', samples: 0 },
  ]);
  assert.deepEqual(d.dropped, { language: 3, image: 3 });
  await writeFile(join(dir, 'data', '00003.tar'), '');
  await assert.rejects(discoverShards(store), /00003_stats\.json/);
  await rm(join(dir, 'data', '00003.tar'));
  await store.close();
});

test('easel coordinator killed with -9 resumes from JetStream KV in a new process', async () => {
  const log = join(dir, 'coordinator.log');
  const first = await startCoordinator(log);
  try {
    const a = new CoordinatorClient(nc, 'cli-run', 'a');
    await a.request('register');
    const lease = (await a.request<{ lease: { shard: number; samples: number } }>('lease')).lease;
    await a.request('progress', { shard: lease.shard, offset: 2 });
    await a.request('step', { generation: 1, step: 1, loss: 4.5 });
    const before = (await (await fetch(`${first.url}/status`)).json()) as Record<string, unknown>;
    assert.equal(before.samples_seen, 2);
    assert.equal(before.expected_samples, 12);
    await first.proc.stop(); // SIGKILL

    const second = await startCoordinator(log);
    try {
      const now = (await (await fetch(`${second.url}/status`)).json()) as Record<string, unknown>;
      assert.deepEqual(now, before);
      const metrics = await (await fetch(`${second.url}/metrics`)).text();
      assert.ok(metrics.includes('easel_filter_dropped_samples{reason="language",run="cli-run"} 3'));
      await a.request('complete', { shard: lease.shard, samples: lease.samples });
      assert.equal(((await (await fetch(`${second.url}/status`)).json()) as { samples_seen: number }).samples_seen, 5);
    } finally {
      await second.proc.stop();
    }
  } finally {
    await first.proc.stop();
  }
});

test('easel coordinator names a bad field of the run file and exits 2', async () => {
  const bad = join(dir, 'bad.yaml');
  await writeFile(bad, 'name: bad\ncoordinator: { leaseMs: 0 }\n');
  const log = join(dir, 'bad.log');
  const proc = await watched(['coordinator', '--config', bad, '--nats', nats.url], log);
  const code = await new Promise<number | null>((r) => proc.child.once('exit', (c) => r(c)));
  assert.equal(code, 2);
  assert.match(readFileSync(log, 'utf8'), /coordinator\.leaseMs/);
});

test('easel coordinator restarted with another model architecture is refused naming the field; other changes are logged', async () => {
  const file = (extra: string) => ['name: cli-arch', `data: { train: ${JSON.stringify(join(dir, 'data'))} }`, 'coordinator: { httpPort: 0, httpHost: 127.0.0.1 }', extra, ''].join('\n');
  const path = join(dir, 'arch.yaml');
  await writeFile(path, file('stages: { clip: { steps: 2 }, decoder: { model: { channels: 16 } } }'));
  const log = join(dir, 'arch.log');
  const first = await startCoordinator(log, path);
  await first.proc.stop();

  await writeFile(path, file('stages: { clip: { steps: 2 }, decoder: { model: { channels: 32 } } }'));
  const refused = await watched(['coordinator', '--config', path, '--nats', nats.url], join(dir, 'arch-refused.log'));
  const code = await new Promise<number | null>((r) => refused.child.once('exit', (c) => r(c)));
  assert.equal(code, 2);
  assert.match(readFileSync(join(dir, 'arch-refused.log'), 'utf8'), /run cli-arch was started with another model architecture .*\nstages\.decoder\.model\.channels: the run has 16, .*arch\.yaml has 32/);

  await writeFile(path, file('stages: { clip: { steps: 5 }, decoder: { model: { channels: 16 } } }'));
  const longer = await startCoordinator(log, path);
  try {
    assert.match(readFileSync(log, 'utf8'), /run cli-arch continues with 1 changed setting\(s\).*stages\.clip\.steps: the run has 2, .*arch\.yaml has 5/);
  } finally {
    await longer.proc.stop();
  }
});

test('a run with tokenizer.merges: the coordinator learns them once, keeps them in JetStream KV and hands them out with the run file', async () => {
  const data = join(dir, 'bpe-data');
  await writeDataset(data, 2);
  const path = join(dir, 'bpe.yaml');
  const runFile = { name: 'cli-bpe', data: { train: data }, tokenizer: { merges: 30 }, coordinator: { httpPort: 0, httpHost: '127.0.0.1' } };
  await writeFile(path, stringify(runFile));
  const log = join(dir, 'bpe.log');
  const client = new CoordinatorClient(nc, 'cli-bpe', 'test', 5000);

  const first = await startCoordinator(log, path);
  try {
    const reply = await client.request<{ tokenizer?: unknown }>('config');
    const expected = await learnRunTokenizer(parseRunConfig(runFile));
    assert.ok(expected.merges.length > 0);
    assert.deepEqual(reply.tokenizer, expected.toJson(), 'the merges a trainer would learn from the same data');
  } finally {
    await first.proc.stop();
  }
  // Restarted, it serves the merges stored in the run's state instead of learning again: told apart by storing others.
  await (await StateStore.open(nc, 'cli-bpe')).putTokenizer(new Tokenizer([[97, 98]]).toJson());
  const second = await startCoordinator(log, path);
  try {
    assert.deepEqual((await client.request<{ tokenizer?: unknown }>('config')).tokenizer, { format: 'easel-bpe/1', merges: [[97, 98]] });
  } finally {
    await second.proc.stop();
  }
});
