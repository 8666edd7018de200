// How `lease` answers a trainer that names its epoch (the distributed trainer always does): shards of that epoch
// only, dealt by the generation's plan, and the epoch turns over when the trainers say so — see docs/coordinator.md,
// Determinism.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { natsPerFile } from '../helpers/nats-per-file.ts';
import { Coordinator, type CoordinatorOptions } from '../../src/coordinator/service.ts';
import { CoordinatorConfig } from '../../src/coordinator/config.ts';

const shared = natsPerFile();

function options(run: string): CoordinatorOptions {
  return {
    nc: shared.nc,
    run,
    config: CoordinatorConfig.parse({ heartbeatTimeoutMs: 1000, leaseMs: 5000, minTrainers: 2, maxTrainers: 4, epochs: 2, httpPort: 0 }),
    budgets: { clip: 100, prior: 0, decoder: 0, upsampler: 0 },
    shards: Array.from({ length: 4 }, (_, i) => ({ key: `${String(i).padStart(5, '0')}.tar`, samples: 8 })),
    clock: () => 1_000_000,
    ticking: false,
  };
}

type Lease = { shard: number; samples: number; epoch: number };
type LeaseReply = { lease: Lease | null; epoch: number; done: boolean; retry?: boolean };

async function lease(c: Coordinator, trainer: string, epoch: number): Promise<LeaseReply> {
  const r = await c.request('lease', { trainer, epoch });
  assert.ok(r.ok, JSON.stringify(r));
  return r as unknown as LeaseReply;
}

async function complete(c: Coordinator, trainer: string, l: Lease): Promise<void> {
  const r = await c.request('complete', { trainer, shard: l.shard, samples: l.samples });
  assert.ok(r.ok, JSON.stringify(r));
}

test('a trainer naming its epoch gets shards of its residue in that epoch only; the epoch turns over when the trainers ask for the next', async () => {
  const c = await Coordinator.start(options('epochs-plan'));
  try {
    await c.request('register', { trainer: 'a' });
    await c.request('register', { trainer: 'b' });
    assert.deepEqual(c.status().members, ['a', 'b']);
    // Rank 1 (b) reads shards 1 and 3, whatever the order of requests.
    const b1 = (await lease(c, 'b', 0)).lease!;
    assert.equal(b1.shard, 1);
    await complete(c, 'b', b1);
    const b3 = (await lease(c, 'b', 0)).lease!;
    assert.equal(b3.shard, 3);
    await complete(c, 'b', b3);
    // b's residue is read while a's is not: nothing for b, and the epoch is not over.
    assert.deepEqual(await lease(c, 'b', 0), { ok: true, lease: null, epoch: 0, done: false });
    const a0 = (await lease(c, 'a', 0)).lease!;
    assert.equal(a0.shard, 0);
    // b asks for epoch 1 early (its peers' reports are late): shard 2 is still pending, so b reads it — a fallback
    // that keeps the run going, not the plan.
    const fallback = await lease(c, 'b', 1);
    assert.deepEqual([fallback.lease?.shard, fallback.lease?.epoch], [2, 0]);
    await complete(c, 'b', fallback.lease!);
    // Only a's lease is left: asking for epoch 1 now is answered "retry".
    assert.equal((await lease(c, 'b', 1)).retry, true);
    await complete(c, 'a', a0);
    // Epoch 0 is finished: it has nothing left, and epoch 1 deals by plan again.
    assert.equal(c.status().epoch, 1);
    assert.deepEqual(await lease(c, 'a', 0), { ok: true, lease: null, epoch: 1, done: false });
    const a1 = (await lease(c, 'a', 1)).lease!;
    assert.deepEqual([a1.shard, a1.epoch], [0, 1]);
    await complete(c, 'a', a1);
    for (const [t, s] of [['a', 2], ['b', 1], ['b', 3]] as const) {
      const l = (await lease(c, t, 1)).lease!;
      assert.equal(l.shard, s);
      await complete(c, t, l);
    }
    // The last epoch is read: done, for that epoch and any later one.
    assert.deepEqual(await lease(c, 'a', 1), { ok: true, lease: null, epoch: 1, done: true });
    assert.equal((await lease(c, 'b', 2)).done, true);
    assert.equal(c.status().samples_seen, 64);
  } finally {
    await c.stop();
  }
});
