// The coordinator's answers to lost messages and outages, one rule each (the end-to-end runs through a coordinator
// kill -9 and a nats-server restart are in test/trainer/distributed-coordinator-kill.test.ts and
// distributed-nats-restart.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { natsPerFile } from '../helpers/nats-per-file.ts';
import { Coordinator, type CoordinatorOptions } from '../../src/coordinator/service.ts';
import { CoordinatorConfig } from '../../src/coordinator/config.ts';
import { CoordinatorClient, CoordinatorUnavailable } from '../../src/coordinator/client.ts';
import { stateBucket } from '../../src/coordinator/subjects.ts';
import { Membership } from '../../src/coordinator/membership.ts';

const shared = natsPerFile();

function options(run: string, minTrainers = 1): CoordinatorOptions {
  const t = 1_000_000;
  return {
    nc: shared.nc,
    run,
    config: CoordinatorConfig.parse({ heartbeatTimeoutMs: 1000, leaseMs: 5000, minTrainers, maxTrainers: 4, httpPort: 0 }),
    budgets: { clip: 3, prior: 2, decoder: 0, upsampler: 0 },
    shards: Array.from({ length: 4 }, (_, i) => ({ key: `${String(i).padStart(5, '0')}.tar`, samples: 8 })),
    clock: () => t,
    ticking: false,
  };
}

async function ok(c: Coordinator, verb: Parameters<Coordinator['request']>[0], body: Record<string, unknown>): Promise<Record<string, any>> {
  const r = await c.request(verb, body);
  assert.ok(r.ok, `${verb} refused: ${JSON.stringify(r)}`);
  return r;
}

test('a trainer asking for a lease again (the reply was lost) strands no shard: the one it held comes back to it at its reported offset', async () => {
  const c = await Coordinator.start(options('faults-lease'));
  try {
    await ok(c, 'register', { trainer: 'a' });
    const first = (await ok(c, 'lease', { trainer: 'a' })).lease;
    await ok(c, 'progress', { trainer: 'a', shard: first.shard, offset: 3 });
    // The shard goes back to pending at offset 3, and under the plan (one rank: every shard is rank 0's) the lowest
    // pending shard of a's residue is that one again: it continues where it stopped, nothing stays leased twice.
    const second = (await ok(c, 'lease', { trainer: 'a' })).lease;
    assert.equal(second.shard, first.shard);
    assert.equal(second.fromSample, 3);
    assert.deepEqual(c.status().shards, { done: 0, leased: 1, pending: 3 });
    assert.equal(c.status().samples_seen, 3, 'the consumed samples stay counted');
    // Its lessee completes it from the new lease's start: 3 samples were already counted.
    await ok(c, 'complete', { trainer: 'a', shard: first.shard, samples: first.samples - 3 });
    assert.equal(c.status().samples_seen, first.samples);
    const third = (await ok(c, 'lease', { trainer: 'a' })).lease;
    assert.notEqual(third.shard, first.shard);
  } finally {
    await c.stop();
  }
});

test('a step report past the next step advances the run through the reports that were lost', async () => {
  const c = await Coordinator.start(options('faults-step'));
  try {
    const w = await ok(c, 'register', { trainer: 'a' });
    await ok(c, 'step', { trainer: 'a', generation: w.generation, step: 1, loss: 2 });
    // Steps 2 and 3 were applied by the trainers but their reports never arrived.
    const r = await ok(c, 'step', { trainer: 'a', generation: w.generation, step: 4, loss: 1.5 });
    assert.deepEqual({ stage: r.stage, stageStep: r.stageStep, step: r.step }, { stage: 'prior', stageStep: 1, step: 4 });
    assert.equal(c.status().loss, 1.5);
    // A late duplicate changes nothing; a report beyond the end of the run is refused.
    await ok(c, 'step', { trainer: 'a', generation: w.generation, step: 2 });
    assert.equal(c.status().step, 4);
    const beyond = await c.request('step', { trainer: 'a', generation: w.generation, step: 9 });
    assert.equal(beyond.ok === false && beyond.reason, 'bad-step');
    assert.equal(c.status().phase, 'done');
  } finally {
    await c.stop();
  }
});

test('a departure that leaves fewer than minTrainers voids the generation, so registering again forms a new one', () => {
  const m = new Membership({ heartbeatTimeoutMs: 1000, minTrainers: 2, maxTrainers: 4 });
  m.register('a', 0);
  m.register('b', 0);
  assert.equal(m.tick(0).formed?.number, 1);
  m.leave('a');
  m.tick(10, { admitJoiners: false });
  assert.deepEqual(m.generation.ring, [], 'one trainer cannot train a run of minTrainers 2');
  m.register('a', 20);
  const g = m.tick(20, { admitJoiners: false }).formed;
  assert.deepEqual(g && { number: g.number, ring: g.ring }, { number: 2, ring: ['b', 'a'] });
});

test('reform starts a new generation of the same ring, and none while no generation runs', () => {
  const m = new Membership({ heartbeatTimeoutMs: 1000, minTrainers: 2, maxTrainers: 4 });
  m.register('a', 0);
  assert.equal(m.reform(0), undefined);
  m.register('b', 0);
  m.tick(0);
  assert.deepEqual(m.reform(5), { number: 2, ring: ['a', 'b'], formedAt: 5 });
  assert.equal(m.changes, 1);
});

test('after a NATS outage longer than the heartbeat timeout, heartbeats count from the reconnect', () => {
  const m = new Membership({ heartbeatTimeoutMs: 1000, minTrainers: 1, maxTrainers: 4 });
  m.register('a', 0);
  m.tick(0);
  m.refreshHeartbeats(5000);
  assert.deepEqual(m.tick(5500).dead, []);
  assert.deepEqual(m.tick(6001).dead, ['a']);
});

test('a stall of the coordinator\'s own process does not count as the trainers\' silence', () => {
  const m = new Membership({ heartbeatTimeoutMs: 1000, minTrainers: 1, maxTrainers: 4 });
  m.register('a', 0);
  m.register('b', 0);
  m.tick(0);
  m.heartbeat('b', 900);
  m.excuseStall(2000, 2500); // nothing was read between 500 and 2500
  assert.deepEqual(m.tick(2500).dead, []);
  assert.deepEqual(m.tick(3001).dead, ['a'], 'silence outside the stall still counts');
  assert.deepEqual(m.tick(3501).dead, ['b']);
});

test('a change the coordinator cannot save is answered unavailable (retried by the client), and saved with the next request', async () => {
  const c = await Coordinator.start(options('faults-kv'));
  const client = new CoordinatorClient(shared.nc, 'faults-kv', 'a');
  try {
    await client.request('register');
    const { lease } = await client.request<{ lease: { shard: number } }>('lease');
    const jsm = await shared.nc.jetstreamManager();
    await jsm.streams.delete(`KV_${stateBucket('faults-kv')}`); // the state store is gone: every write fails
    await assert.rejects(client.request('progress', { shard: lease.shard, offset: 5 }), (e) => e instanceof CoordinatorUnavailable && /progress/.test(e.message));
    assert.match(await c.metrics.registry.metrics(), /^easel_coordinator_state_write_failures_total\{[^}]*\} [1-9]/m);
    assert.equal(c.status().samples_seen, 5, 'applied in memory, not acknowledged');
    const kv = await shared.nc.jetstream().views.kv(stateBucket('faults-kv'), { history: 1 });
    await client.request('progress', { shard: lease.shard, offset: 5 }); // the retry: same absolute offset, acknowledged now
    const saved = JSON.parse(new TextDecoder().decode((await kv.get(`shards.0.${lease.shard}`))!.value));
    assert.equal(saved.offset, 5);
  } finally {
    await c.stop();
  }
});

test('a second coordinator started for the same run takes it over: the first stops answering at its next tick and says who replaced it', async () => {
  const a = await Coordinator.start(options('faults-leader'));
  let replacedBy: { id: string; term: number } | undefined;
  const b = await Coordinator.start(options('faults-leader'));
  try {
    (a as unknown as { opts: CoordinatorOptions }).opts.onSuperseded = (by) => (replacedBy = by);
    await ok(a, 'register', { trainer: 'x' }); // between the claim and a's next tick, a still answers
    await a.tick();
    const refused = await a.request('lease', { trainer: 'x' });
    assert.equal(refused.ok === false && refused.reason, 'unavailable');
    assert.match(refused.ok === false ? refused.error : '', /superseded by .* \(term 2\)/);
    for (let i = 0; i < 50 && !replacedBy; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(replacedBy?.term, 2);
    assert.equal(a.ready(), false);
    assert.match(await a.metrics.registry.metrics(), /easel_coordinator_superseded\{run="faults-leader"\} 1/);
    // The run's new owner answers, and its own tick finds it still is.
    await b.tick();
    await ok(b, 'register', { trainer: 'x' });
    assert.ok((await ok(b, 'lease', { trainer: 'x' })).lease);
    assert.equal(b.ready(), true);
  } finally {
    await a.stop();
    await b.stop();
  }
});
