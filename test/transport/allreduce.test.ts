// Ring all-reduce, allGather and broadcast between real NATS connections on a real nats-server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startNats, type NatsServer } from '../helpers/nats.ts';
import { CollectiveAbortedError, CollectiveTimeoutError, openRing, Ring } from '../../src/transport/allreduce.ts';
import { closeNats, openNats } from '../../src/transport/connection.ts';
import { openRings, ringOrderMean, sameBytes, seededVector, worstErrorVsFloat64Mean } from './ring-fixtures.ts';

// A small max_payload, so a 50k-element vector really travels in many chunks per segment.
const MAX_PAYLOAD = 16 * 1024;
let nats: NatsServer;
before(async () => {
  nats = await startNats({ maxPayload: MAX_PAYLOAD, jetstream: false });
});
after(() => nats.stop());

for (const world of [2, 3]) {
  test(`${world} ranks all-reduce odd-sized vectors to the same bytes: the float32 ring-order mean`, async () => {
    const { rings, close } = await openRings(nats.url, world);
    try {
      let step = 0;
      for (const n of [1, 2, 5, 1001, 50_001]) {
        const inputs = rings.map((_, r) => seededVector(n, 1000 * n + r));
        const copies = inputs.map((x) => x.slice());
        const results = await Promise.all(rings.map((ring, r) => ring.allReduce(inputs[r], { step })));
        step++;
        for (const res of results) {
          assert.equal(res.values.length, n);
          assert.equal(res.nonFinite, false);
          assert.ok(sameBytes(res.values, results[0].values), `n=${n}: rank results differ`);
        }
        assert.ok(sameBytes(results[0].values, ringOrderMean(inputs)), `n=${n}: not the ring-order float32 mean`);
        assert.ok(worstErrorVsFloat64Mean(results[0].values, inputs) < 4 * 2 ** -24 * world, `n=${n}`);
        inputs.forEach((x, r) => assert.ok(sameBytes(x, copies[r]), 'inputs are not modified'));
      }
      for (const ring of rings) assert.deepEqual(ring.stats().rejected, {});
      assert.ok(rings[0].stats().bytesSent > 50_001 * 4 * (2 * (world - 1)) / world, 'chunks went over NATS');
    } finally {
      await close();
    }
  });
}

test('back-to-back all-reduces (reusing send buffers) each return their own step\'s mean; inPlace overwrites the input', async () => {
  const { rings, close } = await openRings(nats.url, 3);
  try {
    for (let step = 0; step < 6; step++) {
      const inputs = rings.map((_, r) => seededVector(40_000, 100 * step + r));
      const want = ringOrderMean(inputs);
      const results = await Promise.all(rings.map((ring, r) => ring.allReduce(inputs[r], { step, inPlace: true })));
      results.forEach((res, r) => {
        assert.ok(sameBytes(res.values, want), `step ${step} rank ${r}`);
        assert.equal(res.values, inputs[r], 'the input array itself holds the mean');
      });
    }
  } finally {
    await close();
  }
});

test('all-reduces too big for the kernels\' memory use JavaScript send buffers: the same bytes, mixed with small ones', async () => {
  const limit = Ring.wasmArenaLimit;
  Ring.wasmArenaLimit = 64 * 1024; // vectors over ~8k elements at W = 3 take the JavaScript path
  const { rings, close } = await openRings(nats.url, 3);
  try {
    let step = 0;
    for (const n of [50_001, 1001, 30_000, 7, 50_001]) {
      const inputs = rings.map((_, r) => seededVector(n, 77 * n + r));
      const results = await Promise.all(rings.map((ring, r) => ring.allReduce(inputs[r], { step })));
      step++;
      for (const res of results) assert.ok(sameBytes(res.values, ringOrderMean(inputs)), `n=${n}`);
    }
    for (const ring of rings) assert.deepEqual(ring.stats().rejected, {});
  } finally {
    Ring.wasmArenaLimit = limit;
    await close();
  }
});

test('one rank all-reduces to its own vector without NATS traffic, and flags its own NaN or Inf', async () => {
  const { rings, close } = await openRings(nats.url, 1);
  try {
    const x = seededVector(33, 5);
    const res = await rings[0].allReduce(x, { step: 0 });
    assert.ok(sameBytes(res.values, x));
    assert.equal(res.nonFinite, false);
    for (const bad of [NaN, Infinity, -Infinity]) {
      const y = seededVector(33, 6);
      y[17] = bad;
      assert.equal((await rings[0].allReduce(y, { step: 1 })).nonFinite, true, `${bad} is reported`);
    }
    assert.equal(rings[0].stats().bytesSent, 0);
  } finally {
    await close();
  }
});

test('allGather concatenates every rank\'s part in rank order, several per step', async () => {
  const { rings, close } = await openRings(nats.url, 3);
  try {
    const parts = rings.map((_, r) => seededVector(6000, 40 + r));
    const texts = rings.map((_, r) => seededVector(7, 50 + r));
    const got = await Promise.all(rings.map(async (ring, r) => [await ring.allGather(parts[r], { step: 4 }), await ring.allGather(texts[r], { step: 4 })]));
    const want = [Float32Array.from(parts.flatMap((p) => [...p])), Float32Array.from(texts.flatMap((p) => [...p]))];
    for (const [a, b] of got) {
      assert.ok(sameBytes(a, want[0]));
      assert.ok(sameBytes(b, want[1]));
    }
  } finally {
    await close();
  }
});

test('broadcast copies rank 0\'s vector to every rank', async () => {
  const { rings, close } = await openRings(nats.url, 3);
  try {
    const weights = seededVector(20_000, 9);
    const bufs = rings.map((_, r) => (r === 0 ? weights.slice() : new Float32Array(weights.length)));
    await Promise.all(rings.map((ring, r) => ring.broadcast(bufs[r], { step: 0 })));
    for (const b of bufs) assert.ok(sameBytes(b, weights));
  } finally {
    await close();
  }
});

test('a NaN on one rank makes every rank report a non-finite step', async () => {
  const { rings, close } = await openRings(nats.url, 3);
  try {
    for (const [step, poison] of [[0, NaN], [1, Infinity]] as const) {
      const inputs = rings.map((_, r) => seededVector(30_000, r));
      inputs[2][12_345] = poison;
      const results = await Promise.all(rings.map((ring, r) => ring.allReduce(inputs[r], { step })));
      assert.deepEqual(results.map((r) => r.nonFinite), [true, true, true]);
    }
    const clean = await Promise.all(rings.map((ring, r) => ring.allReduce(seededVector(100, r), { step: 2 })));
    assert.deepEqual(clean.map((r) => r.nonFinite), [false, false, false]);
  } finally {
    await close();
  }
});

test('a sum that overflows float32 is reported as non-finite on every rank', async () => {
  const { rings, close } = await openRings(nats.url, 2);
  try {
    const inputs = [new Float32Array([3e38, 1]), new Float32Array([3e38, 1])];
    const results = await Promise.all(rings.map((ring, r) => ring.allReduce(inputs[r], { step: 0 })));
    assert.deepEqual(results.map((r) => r.nonFinite), [true, true]);
  } finally {
    await close();
  }
});

test('a peer that never sends fails the collective with a typed timeout naming it', async () => {
  const { rings, close } = await openRings(nats.url, 3, { timeoutMs: 300 });
  try {
    const x = seededVector(1000, 1);
    // Rank 2 never joins: rank 0 waits on rank 2 (its predecessor) and times out.
    const outcomes = await Promise.allSettled([rings[0].allReduce(x, { step: 0 }), rings[1].allReduce(x, { step: 0 })]);
    for (const o of outcomes) {
      assert.equal(o.status, 'rejected');
      assert.ok(o.reason instanceof CollectiveTimeoutError, String(o.reason));
      assert.equal(o.reason.code, 'COLLECTIVE_TIMEOUT');
      assert.match(o.reason.message, /no progress for 300 ms/);
    }
    assert.equal((outcomes[0] as PromiseRejectedResult).reason.detail.waitingFor, 2);
  } finally {
    await close();
  }
});

test('a rank whose successor opens its end of the ring late waits for it: no chunk is lost', async () => {
  // As when a generation forms: rank 2 learns of it a heartbeat after ranks 0 and 1 have started its first broadcast.
  const world = 3;
  const conns = await Promise.all(Array.from({ length: world }, (_, r) => openNats({ servers: nats.url, name: `late-${r}` })));
  const open = (rank: number) => openRing(conns[rank], { run: 'late-run', generation: 4, rank, world }, { timeoutMs: 5000 });
  const rings = [open(0), open(1)];
  try {
    const state = seededVector(3000, 7);
    const inputs = Array.from({ length: world }, (_, r) => seededVector(20_000, 70 + r));
    const early = [rings[0].broadcast(state.slice(), { step: 0 }), rings[1].broadcast(new Float32Array(state.length), { step: 0 })];
    await new Promise((r) => setTimeout(r, 400));
    rings.push(open(2));
    const late = rings[2].broadcast(new Float32Array(state.length), { step: 0 });
    for (const got of await Promise.all([...early, late])) assert.ok(sameBytes(got, state), 'every rank holds rank 0\'s state');
    const results = await Promise.all(rings.map((ring, r) => ring.allReduce(inputs[r], { step: 1 })));
    for (const res of results) assert.ok(sameBytes(res.values, ringOrderMean(inputs)));
    for (const ring of rings) assert.deepEqual(ring.stats().rejected, {});
  } finally {
    for (const r of rings) r.close();
    await Promise.all(conns.map(closeNats));
  }
});

test('a successor that never opens its end fails the first collective with a typed timeout naming it', async () => {
  const conns = await Promise.all([0, 1].map((r) => openNats({ servers: nats.url, name: `absent-${r}` })));
  const ring = openRing(conns[0], { run: 'absent-run', generation: 1, rank: 0, world: 2 }, { timeoutMs: 300 });
  try {
    await assert.rejects(ring.allReduce(seededVector(10, 1), { step: 0 }), (e) => e instanceof CollectiveTimeoutError && /rank 1 did not open generation 1's ring within 300 ms/.test(e.message) && e.detail.waitingFor === 1);
    assert.equal(ring.stats().bytesSent, 0, 'nothing was sent into the void');
  } finally {
    ring.close();
    await Promise.all(conns.map(closeNats));
  }
});

test('abort abandons the collective in flight with a typed error', async () => {
  const { rings, close } = await openRings(nats.url, 2);
  try {
    const p = rings[0].allReduce(seededVector(10, 1), { step: 0 });
    rings[0].abort('membership changed');
    await assert.rejects(p, (e) => e instanceof CollectiveAbortedError && /membership changed/.test(e.message));
  } finally {
    await close();
  }
});

test('steps must not go backwards and collectives on one ring run one at a time', async () => {
  const { rings, close } = await openRings(nats.url, 2);
  try {
    const x = seededVector(10, 1);
    await Promise.all(rings.map((ring) => ring.allReduce(x, { step: 5 })));
    await assert.rejects(rings[0].allReduce(x, { step: 4 }), /before the last collective's step 5/);
    const p = rings[0].allReduce(x, { step: 6 });
    await assert.rejects(rings[0].allReduce(x, { step: 6 }), /still in flight/);
    await Promise.all([p, rings[1].allReduce(x, { step: 6 })]);
  } finally {
    await close();
  }
});

for (const [wire, bound] of [['bf16', 2 ** -8], ['f16', 2 ** -11]] as const) {
  test(`${wire} on the wire: every rank still gets the same bytes, close to the mean`, async () => {
    const { rings, close } = await openRings(nats.url, 3, { wire });
    try {
      const n = 20_001;
      const inputs = rings.map((_, r) => seededVector(n, 70 + r).map((v) => v / 4 + 0.5)); // within f16's normal range
      const results = await Promise.all(rings.map((ring, r) => ring.allReduce(inputs[r], { step: 0 })));
      for (const res of results) assert.ok(sameBytes(res.values, results[0].values));
      // Each of the W-1 partial sums and the final mean is rounded once: error ≤ (W+1)·u relative to Σ|x|/W.
      const err = worstErrorVsFloat64Mean(results[0].values, inputs);
      assert.ok(err <= 4 * bound * 1.01, `${wire}: worst relative error ${err}`);
      assert.ok(err > bound / 8, `${wire}: error ${err} is suspiciously small: was the wire format used?`);
      assert.ok(rings[0].stats().bytesSent < n * 4 * (4 / 3) * 0.55, 'half the bytes of float32');
    } finally {
      await close();
    }
  });
}
