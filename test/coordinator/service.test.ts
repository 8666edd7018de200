import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startNats } from '../helpers/nats.ts';
import { natsPerFile } from '../helpers/nats-per-file.ts';
import { Coordinator, startHttpServer, type CoordinatorOptions } from '../../src/coordinator/service.ts';
import { CoordinatorClient, CoordinatorRefusal } from '../../src/coordinator/client.ts';
import { CoordinatorConfig } from '../../src/coordinator/config.ts';

const shared = natsPerFile();

interface Lease { shard: number; key: string; fromSample: number; samples: number }

/** A hand-driven clock, so heartbeat and lease timeouts are exact regardless of machine load. */
function clock(start = 1_000_000) {
  const c = { now: start, fn: () => c.now };
  return c;
}

function options(run: string, t: { fn: () => number }, over: Partial<CoordinatorOptions> = {}): CoordinatorOptions {
  return {
    nc: shared.nc,
    run,
    config: CoordinatorConfig.parse({ heartbeatTimeoutMs: 1000, leaseMs: 5000, minTrainers: 1, maxTrainers: 4, httpPort: 0 }),
    budgets: { clip: 3, prior: 2, decoder: 0, upsampler: 0 },
    shards: Array.from({ length: 6 }, (_, i) => ({ key: `${String(i).padStart(5, '0')}.tar`, samples: 4 + i })),
    clock: t.fn,
    ticking: false,
    ...over,
  };
}

test("a killed trainer's shard is leased again over NATS, from its last reported sample", async () => {
  const t = clock();
  const c = await Coordinator.start(options('killed', t));
  try {
    const a = new CoordinatorClient(shared.nc, 'killed', 'a');
    const b = new CoordinatorClient(shared.nc, 'killed', 'b');
    await a.request('register');
    await b.request('register');
    const la = (await a.request<{ lease: Lease }>('lease')).lease;
    await a.request('progress', { shard: la.shard, offset: 2 });
    // a goes silent (kill -9); b keeps heartbeating
    t.now += 600;
    await b.request('heartbeat');
    t.now += 600;
    await c.tick();
    await assert.rejects(a.request('heartbeat'), (e: CoordinatorRefusal) => e.reason === 'unknown-trainer');
    const seen: Lease[] = [];
    for (;;) {
      const r = await b.request<{ lease: Lease | null }>('lease');
      if (!r.lease) break;
      seen.push(r.lease);
      await b.request('complete', { shard: r.lease.shard, samples: r.lease.samples - r.lease.fromSample });
    }
    const again = seen.find((l) => l.shard === la.shard)!;
    assert.equal(again.fromSample, 2);
    assert.deepEqual(seen.map((l) => l.shard).sort(), [0, 1, 2, 3, 4, 5]);
    const st = c.status();
    assert.deepEqual(st.shards, { done: 6, leased: 0, pending: 0 });
    assert.equal(st.samples_seen, st.expected_samples);
    assert.equal(st.expected_samples, 4 + 5 + 6 + 7 + 8 + 9);
    await assert.rejects(a.request('complete', { shard: la.shard, samples: 2 }), (e: CoordinatorRefusal) => e.reason === 'already-done');
  } finally {
    await c.stop();
  }
});

test('membership generations on join and leave, step reports move the stages', async () => {
  const t = clock();
  const c = await Coordinator.start(options('gens', t));
  try {
    const a = new CoordinatorClient(shared.nc, 'gens', 'a');
    const b = new CoordinatorClient(shared.nc, 'gens', 'b');
    const r1 = await a.request<{ generation: number; rank: number }>('register');
    assert.deepEqual([r1.generation, r1.rank], [1, 0]);
    const r2 = await b.request<{ generation: number; waiting: boolean }>('register');
    assert.deepEqual([r2.generation, r2.waiting], [1, true], 'b waits for the next step boundary');
    await c.tick();
    assert.equal(c.status().generation, 1, 'a tick mid-step does not let a joiner in');
    const s = await a.request<{ step: number; stage: string }>('step', { generation: 1, step: 1, loss: 2.5, samples: 8, seconds: 0.5 });
    assert.deepEqual([s.step, s.stage], [1, 'clip']);
    const hb = await b.request<{ generation: number; rank: number; worldSize: number }>('heartbeat');
    assert.deepEqual([hb.generation, hb.rank, hb.worldSize], [2, 1, 2], 'b entered at the step boundary');
    await assert.rejects(a.request('step', { generation: 1, step: 2 }), (e: CoordinatorRefusal) => e.reason === 'stale-generation');
    for (let step = 2; step <= 3; step++) {
      await a.request('step', { generation: 2, step, loss: 2 });
      await b.request('step', { generation: 2, step, loss: 2 }); // the second report of a step only adds counters
    }
    assert.equal(c.status().stage, 'prior');
    assert.equal(c.status().step, 3);
    await b.request('leave');
    await c.tick();
    assert.deepEqual(c.status().members, ['a']);
    assert.equal(c.status().generation, 3);
    // Two generations after the first: b joining, b leaving.
    assert.match(await c.metrics.registry.metrics(), /^easel_generation_changes_total\{run="gens"\} 2$/m);
  } finally {
    await c.stop();
  }
});

test('expected_samples is what the step budgets call for when they end the run before its epochs, at the world size', async () => {
  const t = clock();
  // 6 shards of 4…9 samples, 2 per trainer per step; CLIP 3 steps, the prior 2 (options()).
  const c = await Coordinator.start(options('expected', t, { batchSizes: { clip: 2, prior: 2, decoder: 2, upsampler: 2 } }));
  try {
    const a = new CoordinatorClient(shared.nc, 'expected', 'a');
    const b = new CoordinatorClient(shared.nc, 'expected', 'b');
    await a.request('register');
    // One trainer: CLIP reads 2 + 2 of shard 0, then 2 of shard 1; the prior 2 more and shard 1's last sample.
    assert.equal(c.status().expected_samples, 9);
    assert.match(await c.metrics.registry.metrics(), /^easel_expected_samples\{run="expected"\} 9$/m);
    await b.request('register');
    await a.request('step', { generation: 1, step: 1 }); // b enters: two trainers
    // Rank 0 reads shards 0, 2, 4, rank 1 shards 1, 3, 5: CLIP 4 + 4 + (2 + 1), the prior 4 + 4.
    assert.equal(c.status().expected_samples, 19);
  } finally {
    await c.stop();
  }
  const d = await Coordinator.start(options('expected-data', t, { batchSizes: { clip: 2, prior: 2, decoder: 2, upsampler: 2 }, budgets: { clip: 100, prior: 0, decoder: 0, upsampler: 0 } }));
  try {
    assert.equal(d.status().expected_samples, 4 + 5 + 6 + 7 + 8 + 9, 'the epoch ends it first');
  } finally {
    await d.stop();
  }
});

test('a restarted coordinator resumes from JetStream KV with the same lease table and generation', async () => {
  const t = clock();
  const first = await Coordinator.start(options('resume', t));
  const a = new CoordinatorClient(shared.nc, 'resume', 'a');
  const b = new CoordinatorClient(shared.nc, 'resume', 'b');
  await a.request('register');
  await b.request('register');
  await a.request('step', { generation: 1, step: 1, loss: 1.25 }); // b enters: generation 2
  const la = (await a.request<{ lease: Lease }>('lease')).lease;
  const lb = (await b.request<{ lease: Lease }>('lease')).lease;
  await a.request('complete', { shard: la.shard, samples: la.samples });
  await b.request('progress', { shard: lb.shard, offset: 3 });
  await a.request('checkpoint', { step: 1, key: 'ckpt/000001', seconds: 0.2 });
  const before = first.status();
  await first.stop(); // as if killed: nothing is written on the way out

  const second = await Coordinator.start(options('resume', t));
  try {
    const now = second.status();
    assert.deepEqual({ ...now, checkpoint: null }, { ...before, checkpoint: null });
    assert.equal(now.checkpoint?.key, 'ckpt/000001');
    assert.deepEqual(now.members, ['a', 'b']);
    assert.equal(now.generation, 2);
    assert.equal(now.loss, 1.25);
    // b still holds its lease and continues from its offset
    await b.request('complete', { shard: lb.shard, samples: lb.samples });
    const next = (await a.request<{ lease: Lease }>('lease')).lease;
    assert.ok(![la.shard, lb.shard].includes(next.shard));
    assert.equal(second.status().samples_seen, la.samples + lb.samples);
  } finally {
    await second.stop();
  }
});

test('a restarted coordinator refuses a dataset with a different shard count', async () => {
  const t = clock();
  const c = await Coordinator.start(options('dataset', t));
  await c.stop();
  await assert.rejects(Coordinator.start(options('dataset', t, { shards: [{ key: 'x.tar', samples: 3 }] })), /6 shards, but the dataset now has 1/);
});

test('/status, /metrics, /healthz and /readyz answer over HTTP', async () => {
  const t = clock();
  const c = await Coordinator.start(options('http', t, { filterDropped: { language: 7 } }));
  const http = await startHttpServer(c, { port: 0 });
  try {
    const a = new CoordinatorClient(shared.nc, 'http', 'a');
    await a.request('register');
    const l = (await a.request<{ lease: Lease }>('lease')).lease;
    // The fleet consumed 12 samples in the step (this rank 4): 6 samples/s over the step's 2 s.
    await a.request('step', { generation: 1, step: 1, loss: 3.5, gradNorm: 0.75, samples: 4, globalSamples: 12, seconds: 2, allreduceBytes: 1024, allreduceSeconds: 0.25, dataWaitSeconds: 0.125, skipped: true });
    // Rank 0's report of the same step, after the step was completed: its held-out loss still reaches the metrics.
    await a.request('step', { generation: 1, step: 1, validation: { stage: 'clip', loss: 1.25 } });
    await assert.rejects(a.request('step', { generation: 1, step: 1, validation: { stage: 'vae', loss: 1 } }), /validation\.stage/);
    await a.request('progress', { shard: l.shard, offset: 4 });
    await a.request('checkpoint', { step: 1, key: 'ckpt/1', seconds: 0.5 });
    const status = (await (await fetch(`${http.url}/status`)).json()) as Record<string, unknown>;
    assert.equal(status.phase, 'training');
    assert.equal(status.step, 1);
    assert.equal(status.loss, 3.5);
    assert.deepEqual(status.shards, { done: 0, leased: 1, pending: 5 });
    assert.equal(status.samples_seen, 4);
    assert.deepEqual(status.members, ['a']);
    assert.equal((status.checkpoint as { key: string }).key, 'ckpt/1');
    const res = await fetch(`${http.url}/metrics`);
    assert.equal(res.status, 200);
    const text = await res.text();
    for (const line of [
      'easel_shards{state="leased",run="http"} 1',
      'easel_shards{state="pending",run="http"} 5',
      'easel_loss{stage="clip",run="http"} 3.5',
      'easel_allreduce_bytes_total{run="http"} 1024',
      'easel_members{run="http"} 1',
      'easel_samples_seen{run="http"} 4',
      'easel_filter_dropped_samples{reason="language",run="http"} 7',
      'easel_checkpoint_step{run="http"} 1',
      'easel_step_seconds_sum{run="http",stage="clip"} 2',
      'easel_step_seconds_count{run="http",stage="clip"} 1',
      'easel_samples_per_second{stage="clip",run="http"} 6',
      'easel_grad_norm{stage="clip",run="http"} 0.75',
      'easel_validation_loss{stage="clip",run="http"} 1.25',
      'easel_allreduce_seconds_total{run="http"} 0.25',
      'easel_data_wait_seconds_total{run="http"} 0.125',
      'easel_checkpoint_seconds_sum{run="http"} 0.5',
      'easel_checkpoint_seconds_count{run="http"} 1',
      'easel_generation_changes_total{run="http"} 0',
      'easel_steps_skipped_total{stage="clip",run="http"} 1',
    ]) {
      assert.ok(text.includes(line), `metrics include ${line}`);
    }
    assert.match(text, /easel_checkpoint_age_seconds\{run="http"\} \d/);
    assert.equal((await fetch(`${http.url}/healthz`)).status, 200);
    assert.equal((await fetch(`${http.url}/readyz`)).status, 200);
    assert.equal((await fetch(`${http.url}/nope`)).status, 404);
    await c.stop();
    assert.equal((await fetch(`${http.url}/readyz`)).status, 503);
  } finally {
    await c.stop();
    await http.close();
  }
});

test('a malformed request is refused with the field named', async () => {
  const t = clock();
  const c = await Coordinator.start(options('bad', t));
  try {
    const a = new CoordinatorClient(shared.nc, 'bad', 'a');
    await a.request('register');
    await assert.rejects(a.request('progress', { shard: -1, offset: 'x' }), (e: CoordinatorRefusal) => e.reason === 'bad-request' && /shard/.test(e.message) && /offset/.test(e.message));
  } finally {
    await c.stop();
  }
});

test('bad coordinator config names the field', async () => {
  const { parseCoordinatorConfig } = await import('../../src/coordinator/config.ts');
  assert.throws(() => parseCoordinatorConfig({ leaseMs: -1 }), /coordinator\.leaseMs/);
  assert.throws(() => parseCoordinatorConfig({ minTrainers: 5, maxTrainers: 2 }), /coordinator\.minTrainers: must be at most maxTrainers/);
  assert.throws(() => parseCoordinatorConfig({ heartbeatTimeout: 3 }), /heartbeatTimeout/);
});

test('after nats-server restarts, the coordinator answers again with its state intact', async () => {
  const { openNats, closeNats } = await import('../../src/transport/connection.ts');
  const own = await startNats();
  const cnc = await openNats({ servers: own.url, reconnectWaitMs: 50, reconnectJitterMs: 10 });
  const tnc = await openNats({ servers: own.url, reconnectWaitMs: 50, reconnectJitterMs: 10 });
  const t = clock();
  const c = await Coordinator.start({ ...options('restart', t), nc: cnc });
  try {
    const a = new CoordinatorClient(tnc, 'restart', 'a');
    await a.request('register');
    const l = (await a.request<{ lease: Lease }>('lease')).lease;
    await a.request('progress', { shard: l.shard, offset: 3 });
    await own.restart({ downMs: 200 });
    let done = false;
    for (let i = 0; i < 100 && !done; i++) {
      try {
        await a.request('complete', { shard: l.shard, samples: l.samples });
        done = true;
      } catch (err) {
        if (err instanceof CoordinatorRefusal) throw err;
        await new Promise((r) => setTimeout(r, 100)); // not reconnected yet
      }
    }
    assert.ok(done, 'a request succeeded after the restart');
    assert.equal(c.status().samples_seen, l.samples);
    await c.stop();
    // and the KV state itself survived the server restart (JetStream on disk)
    const again = await Coordinator.start({ ...options('restart', t), nc: cnc });
    assert.equal(again.status().shards.done, 1);
    await again.stop();
  } finally {
    await c.stop();
    await closeNats(tnc);
    await closeNats(cnc);
    await own.stop();
  }
});
