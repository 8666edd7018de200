import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LeaseTable } from '../../src/coordinator/leases.ts';
import { Rng } from '../../src/util/rng.ts';

test('a lease hands out each pending shard once, in order, then none', () => {
  const t = new LeaseTable([3, 4], { leaseMs: 1000 });
  assert.equal(t.lease('a', 0)?.shard, 0);
  assert.equal(t.lease('b', 0)?.shard, 1);
  assert.equal(t.lease('c', 0), undefined);
  assert.deepEqual(t.stats(), { pending: 0, leased: 2, done: 0, samplesSeen: 0, expectedSamples: 7 });
});

test("a killed trainer's shard is leased again from its last reported sample", () => {
  const t = new LeaseTable([10, 10], { leaseMs: 1000 });
  const l = t.lease('dead', 0)!;
  assert.deepEqual(t.progress(l.shard, 'dead', 4), { ok: true });
  assert.deepEqual(t.release('dead'), [0]);
  const again = t.lease('alive', 1)!;
  assert.equal(again.shard, 1, 'the released shard queues behind the untouched one');
  const back = t.lease('alive', 1)!;
  assert.equal(back.shard, 0);
  assert.equal(back.fromSample, 4);
  assert.deepEqual(t.complete(0, 'alive', 6), { ok: true });
  assert.equal(t.stats().samplesSeen, 10);
});

test('an expired lease returns to pending; a renewed one does not', () => {
  const t = new LeaseTable([5, 5], { leaseMs: 100 });
  t.lease('slow', 0);
  t.lease('live', 0);
  t.renew('live', 80);
  assert.deepEqual(t.expire(150), [0]);
  assert.equal(t.leaseOf(1)?.trainer, 'live');
  assert.equal(t.stats().pending, 1);
  assert.deepEqual(t.expire(181), [1]);
});

test('reports from a trainer that lost its lease are refused with a reason', () => {
  const t = new LeaseTable([5, 5], { leaseMs: 100 });
  t.lease('a', 0);
  t.expire(200);
  t.lease('b', 200); // gets shard 1
  t.lease('b', 200); // gets shard 0 back
  assert.equal(t.complete(0, 'a', 5).ok, false);
  assert.equal((t.complete(0, 'a', 5) as { reason: string }).reason, 'wrong-owner');
  assert.equal((t.progress(7, 'b', 1) as { reason: string }).reason, 'unknown-shard');
  assert.equal((t.complete(0, 'b', 4) as { reason: string }).reason, 'bad-offset');
  assert.equal((t.progress(0, 'b', 6) as { reason: string }).reason, 'bad-offset');
  assert.deepEqual(t.complete(0, 'b', 5), { ok: true });
  assert.equal((t.complete(0, 'b', 5) as { reason: string }).reason, 'already-done');
  const t2 = new LeaseTable([5], { leaseMs: 100 });
  assert.equal((t2.progress(0, 'x', 1) as { reason: string }).reason, 'not-leased');
});

for (const plan of [false, true]) {
test(`no sample lost or doubled across a simulated epoch with random trainer deaths and expiries (counted)${plan ? ', under a plan re-dealt at every death' : ''}`, () => {
  const rng = new Rng(7);
  const sizes = Array.from({ length: 200 }, () => Math.floor(rng.float() * 20));
  const t = new LeaseTable(sizes, { leaseMs: 50 });
  if (plan) t.setPlan(4);
  const consumed = new Array<number>(sizes.length).fill(0); // samples each shard yielded to applied steps
  const held = new Map<string, { shard: number; at: number; end: number; start: number }>();
  let now = 0;
  const trainers = ['t0', 't1', 't2', 't3'];
  let deaths = 0;
  while (!t.finished()) {
    now += 10;
    t.expire(now);
    for (const id of [...trainers]) {
      let h = held.get(id);
      if (!h) {
        const l = t.lease(id, now, plan ? trainers.indexOf(id) : undefined);
        if (!l) continue;
        h = { shard: l.shard, at: l.fromSample, start: l.fromSample, end: l.samples };
        held.set(id, h);
      }
      const r = rng.float();
      if (r < 0.05) {
        // kill -9: its in-flight (unreported) samples are lost with it, its shard is released
        trainers.splice(trainers.indexOf(id), 1, `t${trainers.length + ++deaths + 10}`);
        held.delete(id);
        t.release(id);
        if (plan) t.setPlan(deaths % 2 ? 3 : 4); // a generation change: the survivors' plan is re-dealt
        continue;
      }
      if (r < 0.08) continue; // a stall: the lease may expire under it
      if (t.leaseOf(h.shard)?.trainer !== id) {
        held.delete(id); // lost the lease: the trainer drops the shard
        continue;
      }
      t.renew(id, now);
      const step = Math.min(3, h.end - h.at);
      consumed[h.shard]! += step;
      h.at += step;
      if (h.at === h.end) {
        assert.deepEqual(t.complete(h.shard, id, h.end - h.start), { ok: true });
        held.delete(id);
      } else assert.deepEqual(t.progress(h.shard, id, h.at), { ok: true });
    }
    assert.ok(now < 1e6, 'the epoch finishes');
  }
  assert.ok(deaths > 0, 'some trainers died');
  assert.deepEqual(consumed, sizes, 'every shard consumed exactly once');
  const total = sizes.reduce((a, b) => a + b, 0);
  assert.deepEqual(t.stats(), { pending: 0, leased: 0, done: 200, samplesSeen: total, expectedSamples: total });
});
}

test('the table survives a JSON round trip and persisted shard records', () => {
  const t = new LeaseTable([5, 6, 7, 8], { epoch: 2, leaseMs: 100 });
  t.lease('a', 0);
  t.progress(0, 'a', 3);
  t.lease('b', 0);
  t.complete(1, 'b', 6);
  const copy = LeaseTable.fromJSON(JSON.parse(JSON.stringify(t.toJSON())));
  assert.deepEqual(copy.stats(), t.stats());
  assert.equal(copy.epoch, 2);
  assert.deepEqual(copy.leaseOf(0), t.leaseOf(0));
  assert.deepEqual(copy.complete(0, 'a', 5), { ok: true }, 'the lease started at 0');
  assert.equal(copy.lease('c', 0)?.shard, 2);

  // the same state rebuilt from change records only
  const fresh = new LeaseTable([5, 6, 7, 8], { epoch: 2, leaseMs: 100 });
  const again = new LeaseTable([5, 6, 7, 8], { epoch: 2, leaseMs: 100 });
  again.lease('a', 0);
  again.progress(0, 'a', 3);
  fresh.restore(again.takeChanges());
  assert.deepEqual(fresh.stats(), again.stats());
  assert.equal(fresh.leaseOf(0)?.fromSample, 3);
  assert.deepEqual(fresh.complete(0, 'a', 5), { ok: true });
});

test('empty shards count as done when reached', () => {
  const t = new LeaseTable([0, 2, 0], { leaseMs: 10 });
  assert.equal(t.lease('a', 0)?.shard, 1);
  assert.equal(t.lease('a', 0), undefined);
  assert.deepEqual(t.complete(1, 'a', 2), { ok: true });
  assert.ok(t.finished());
});

test('under a plan of W ranks, rank r reads the shards i ≡ r (mod W) in ascending order, whatever the request order', () => {
  const take = (order: number[]) => {
    const t = new LeaseTable(new Array(10).fill(4), { leaseMs: 1000 });
    t.setPlan(3);
    const got: number[][] = [[], [], []];
    // Ranks ask in the given order, each completing what it got before asking again.
    for (const r of order) {
      const l = t.lease(`t${r}`, 0, r);
      if (!l) continue;
      got[r].push(l.shard);
      assert.deepEqual(t.complete(l.shard, `t${r}`, 4), { ok: true });
    }
    assert.ok(t.finished());
    return got;
  };
  const expected = [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]];
  assert.deepEqual(take([0, 1, 2, 0, 1, 2, 0, 1, 2, 0]), expected);
  assert.deepEqual(take([2, 2, 2, 1, 1, 1, 0, 0, 0, 0]), expected);
  // A rank whose residue is read gets nothing, although other residues still have pending shards.
  const t = new LeaseTable([4, 4, 4], { leaseMs: 1000 });
  t.setPlan(2);
  assert.equal(t.lease('b', 0, 1)?.shard, 1);
  t.complete(1, 'b', 4);
  assert.equal(t.lease('b', 0, 1), undefined);
  // Without a rank (a fallback), the lowest pending shard of any residue.
  assert.equal(t.lease('x', 0)?.shard, 0);
});

test('a shard given back under a plan goes to the lowest-first queue of its residue, at its offset; a new plan re-deals pending shards', () => {
  const t = new LeaseTable(new Array(6).fill(10), { leaseMs: 1000 });
  t.setPlan(2);
  const a = t.lease('a', 0, 0)!;
  assert.equal(a.shard, 0);
  t.progress(0, 'a', 7);
  t.release('a');
  const again = t.lease('a2', 0, 0)!;
  assert.deepEqual([again.shard, again.fromSample], [0, 7]);
  t.release('a2');
  // World 3: shard 0 (pending at 7) belongs to rank 0, shard 4 to rank 1, shard 2 and 5 to rank 2.
  t.setPlan(3);
  assert.deepEqual([t.lease('r1', 0, 1)?.shard, t.lease('r2', 0, 2)?.shard, t.lease('r0', 0, 0)?.shard], [1, 2, 0]);
  assert.equal(t.leaseOf(0)?.fromSample, 7);
  assert.equal(t.stats().samplesSeen, 7);
});

test('a table snapshot (offsets only) rebuilds the epoch: shards at their end are done, the rest pending at their offset', () => {
  const t = new LeaseTable([5, 0, 8, 6], { epoch: 2, leaseMs: 1000 });
  t.setPlan(2);
  const l0 = t.lease('a', 0, 0)!;
  t.complete(l0.shard, 'a', 5);
  const l2 = t.lease('a', 0, 0)!;
  t.progress(l2.shard, 'a', 3);
  const l3 = t.lease('b', 0, 1)!; // shard 1 is empty: done on reach, so rank 1 gets shard 3
  assert.equal(l3.shard, 3);
  t.progress(3, 'b', 6); // read to its end, complete not yet arrived
  const snap = JSON.parse(JSON.stringify(t.snapshot()));
  const u = LeaseTable.fromSnapshot([5, 0, 8, 6], snap, { leaseMs: 1000 });
  assert.equal(u.epoch, 2);
  assert.deepEqual(u.stats(), { pending: 1, leased: 0, done: 3, samplesSeen: 5 + 3 + 6, expectedSamples: 19 });
  u.setPlan(2);
  assert.equal(u.lease('b', 0, 1), undefined, "rank 1's residue is read");
  const back = u.lease('a', 0, 0)!;
  assert.deepEqual([back.shard, back.fromSample], [2, 3]);
  assert.throws(() => LeaseTable.fromSnapshot([5, 0, 8], snap, { leaseMs: 1000 }), /offsets for 4 shards, but the dataset has 3/);
  assert.throws(() => LeaseTable.fromSnapshot([5, 0, 2, 6], snap, { leaseMs: 1000 }), /3 samples of shard 2 were read, but it has 2/);
});
