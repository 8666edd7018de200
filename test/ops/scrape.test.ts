// A real Prometheus (Debian's /usr/bin/prometheus) on a random loopback port scrapes a running coordinator's
// /metrics (src/coordinator, over a real nats-server) and its query API returns easel's metrics; the alert rules
// load into it. The operator's status derivation reads the same coordinator's real /status.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile, copyFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { parse as parseYaml } from 'yaml';
import { startNats, type NatsServer } from '../helpers/nats.ts';
import { freePort, spawnWatched, type Watched } from '../helpers/watchdog.ts';
import { Coordinator, startHttpServer, type HttpServer } from '../../src/coordinator/service.ts';
import { CoordinatorClient } from '../../src/coordinator/client.ts';
import { CoordinatorConfig } from '../../src/coordinator/config.ts';
import { deriveStatus, reconcile } from '../../src/operator/reconcile.ts';
import type { TrainingRun } from '../../src/operator/spec.ts';

const PROMETHEUS = process.env.PROMETHEUS ?? '/usr/bin/prometheus';
let nats: NatsServer;
let nc: NatsConnection;
let coordinator: Coordinator;
let http: HttpServer;
let prom: Watched;
let promUrl: string;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'easel-scrape-'));
  nats = await startNats();
  nc = await connect({ servers: nats.url });
  coordinator = await Coordinator.start({
    nc,
    run: 'scrape',
    config: CoordinatorConfig.parse({ minTrainers: 1, maxTrainers: 2, httpPort: 0 }),
    budgets: { clip: 5, prior: 0, decoder: 0, upsampler: 0 },
    shards: [{ key: '00000.tar', samples: 8 }, { key: '00001.tar', samples: 8 }],
    ticking: false,
  });
  http = await startHttpServer(coordinator, { port: 0, host: '127.0.0.1' });
  // One trainer registers and completes a step, so the run has members, a loss and all-reduce traffic.
  const trainer = new CoordinatorClient(nc, 'scrape', 't0');
  await trainer.request('register');
  await trainer.request('lease');
  await trainer.request('step', { generation: 1, step: 1, loss: 2.25, samples: 4, seconds: 0.5, allreduceBytes: 4096 });

  const port = await freePort();
  promUrl = `http://127.0.0.1:${port}`;
  await copyFile('infra/prometheus/alerts.yml', join(dir, 'alerts.yml'));
  await writeFile(
    join(dir, 'prometheus.yml'),
    [
      'global: { scrape_interval: 1s, evaluation_interval: 1s }',
      'rule_files: [alerts.yml]',
      'scrape_configs:',
      '  - job_name: easel-coordinator',
      `    static_configs: [{ targets: ['${new URL(http.url).host}'] }]`,
      '',
    ].join('\n'),
  );
  prom = await spawnWatched(
    PROMETHEUS,
    [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'],
    join(dir, 'prometheus.log'),
  );
});

after(async () => {
  await prom?.stop();
  await coordinator?.stop();
  await http?.close();
  await nc?.drain();
  await nats?.stop();
  await rm(dir, { recursive: true, force: true });
});

interface Sample { metric: Record<string, string>; value: [number, string] }

async function query(expr: string): Promise<Sample[]> {
  const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(expr)}`);
  const body = (await res.json()) as { status: string; data: { result: Sample[] } };
  assert.equal(body.status, 'success');
  return body.data.result;
}

/** Polls until `expr` returns a series (Prometheus needs a scrape or two); gives up after `ms`. */
async function eventually(expr: string, ms = 60_000): Promise<Sample[]> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      const r = await query(expr);
      if (r.length) return r;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`no result for ${expr} after ${ms} ms; prometheus log:\n${readFileSync(join(dir, 'prometheus.log'), 'utf8').slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

test('Prometheus scrapes the coordinator and its query API returns easel metrics with the run label', async () => {
  const up = await eventually('up{job="easel-coordinator"} == 1');
  assert.equal(up[0].value[1], '1');
  const step = await eventually('easel_step{run="scrape"}');
  assert.equal(step[0].value[1], '1');
  const loss = await eventually('easel_loss{run="scrape", stage="clip"}');
  assert.equal(loss[0].value[1], '2.25');
  assert.equal((await eventually('easel_members{run="scrape"}'))[0].value[1], '1');
  assert.equal((await eventually('easel_allreduce_bytes_total{run="scrape"}'))[0].value[1], '4096');
  const shards = await eventually('easel_shards{run="scrape"}');
  assert.deepEqual(shards.map((s) => s.metric.state).sort(), ['done', 'leased', 'pending']);
});

test('the alert rules load into that Prometheus and evaluate without errors', async () => {
  let groups: { rules: { name: string; health: string; lastError?: string }[] }[] = [];
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const body = (await (await fetch(`${promUrl}/api/v1/rules`)).json()) as { data: { groups: typeof groups } };
    groups = body.data.groups;
    if (groups.length && groups[0].rules.every((r) => r.health !== 'unknown')) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  const rules = groups.flatMap((g) => g.rules);
  assert.equal(rules.length, 8);
  for (const r of rules) assert.equal(r.health, 'ok', `${r.name}: ${r.lastError ?? ''}`);
});

test('the operator derives a TrainingRun status from the running coordinator\'s real /status', async () => {
  const run = parseYaml(readFileSync('k8s/overlays/example/trainingrun.yaml', 'utf8')) as TrainingRun;
  (run.spec as { trainers: { min: number } }).trainers.min = 1;
  const body = await (await fetch(`${http.url}/status`)).json();
  const s = deriveStatus(run, reconcile(run), { coordinator: { ok: true, body }, now: new Date() });
  assert.equal(s.phase, 'Running');
  assert.equal(s.stage, 'clip');
  assert.equal(s.step, 1);
  assert.equal(s.loss, 2.25);
  assert.equal(s.readyTrainers, 1);
  assert.equal(s.conditions.find((c) => c.type === 'Ready')?.status, 'True');
});
