// Chunks that do not belong to the collective in flight are dropped and counted, never mixed into the result.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type NatsConnection } from 'nats';
import { startNats, type NatsServer } from '../helpers/nats.ts';
import { Dtype, HEADER_BYTES, Kind, Phase, bodyChecksum, encodeHeader, runHash, type ChunkHeader } from '../../src/transport/chunks.ts';
import { openRings, ringOrderMean, sameBytes, seededVector } from './ring-fixtures.ts';

let nats: NatsServer;
let spy: NatsConnection;
before(async () => {
  nats = await startNats({ jetstream: false });
  spy = await connect({ servers: nats.url });
});
after(async () => {
  await spy.close();
  await nats.stop();
});

// W = 2, n = 10: rank 1 receives segment 1 (elements 5…9) from rank 0 at hop 0 of reduce-scatter.
const N = 10;
function forge(over: Partial<ChunkHeader>, body: Float32Array | Uint8Array = new Float32Array(5).fill(1e6), corrupt = false): Uint8Array {
  const bytes = body instanceof Float32Array ? new Uint8Array(body.buffer, body.byteOffset, body.byteLength) : body;
  const msg = new Uint8Array(HEADER_BYTES + bytes.byteLength);
  msg.set(bytes, HEADER_BYTES);
  const h: ChunkHeader = {
    kind: Kind.AllReduce, phase: Phase.ReduceScatter, dtype: Dtype.F32, run: runHash('test-run'), generation: 1, step: 1, seq: 0, flags: 0,
    from: 0, hop: 0, segment: 1, chunk: 0, chunks: 1, offset: 5, length: 5, total: N, checksum: bodyChecksum(bytes), ...over,
  };
  encodeHeader(h, msg);
  if (corrupt) msg[HEADER_BYTES] ^= 0xff;
  return msg;
}

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(cond(), what);
}

test('stale, foreign and malformed chunks are rejected, counted by reason, and do not corrupt the result', async () => {
  const { rings, close } = await openRings(nats.url, 2);
  try {
    const x0 = [seededVector(N, 1), seededVector(N, 2)];
    await Promise.all(rings.map((ring, r) => ring.allReduce(x0[r], { step: 0 })));
    const to1 = (step: number) => `easel.test-run.g1.s${step}.ar0.1`;

    // Rejected on arrival: they belong to a finished step, an old or newer generation, another run, or nothing.
    spy.publish(to1(0), forge({ step: 0 }));
    spy.publish(to1(1), forge({ generation: 0 }));
    spy.publish(to1(1), forge({ generation: 2 }));
    spy.publish(to1(1), forge({ run: runHash('other-run') }));
    spy.publish(to1(1), new TextEncoder().encode('hello, not a chunk'));
    spy.publish(to1(1), new TextEncoder().encode('a message long enough to hold a header, but not an easel chunk at all'));
    await spy.flush();
    await until(() => Object.keys(rings[1].stats().rejected).length === 6, 'immediate rejections counted');

    // For step 1, which rank 1 has not started: kept, then checked when it starts.
    const x1 = [seededVector(N, 3), seededVector(N, 4)];
    const bad = [
      forge({}, undefined, true), // body does not match its checksum
      forge({ length: 4 }), // header says 4 elements, body has 5
      forge({ from: 1 }), // not rank 1's predecessor
      forge({ dtype: Dtype.BF16, length: 10 }), // a bf16 chunk in a float32 all-reduce
      forge({ offset: 4 }), // not where chunk 0 of segment 1 lies
      forge({ segment: 0, offset: 0 }), // segment 0 does not reach rank 1 at hop 0
      forge({ kind: Kind.AllGather }),
      forge({}, x1[0].subarray(5)), // exactly what rank 0 will send: accepted, and rank 0's own copy is the duplicate
    ];
    for (const m of bad) spy.publish(to1(1), m);
    await spy.flush();
    await until(() => rings[1].stats().rejected['stale-step'] === 1, 'delivered');
    await new Promise((r) => setTimeout(r, 50));
    const results = await Promise.all(rings.map((ring, r) => ring.allReduce(x1[r], { step: 1 })));
    assert.ok(sameBytes(results[0].values, ringOrderMean(x1)));
    assert.ok(sameBytes(results[1].values, results[0].values));
    assert.deepEqual(rings[1].stats().rejected, {
      'stale-step': 1,
      'stale-generation': 1,
      'future-generation': 1,
      'foreign-run': 1,
      short: 1,
      magic: 1,
      checksum: 1,
      size: 1,
      'wrong-sender': 1,
      'wrong-dtype': 1,
      'wrong-layout': 1,
      'wrong-sequence': 1,
      'wrong-kind': 1,
      duplicate: 1,
    });
    assert.deepEqual(rings[0].stats().rejected, {});
  } finally {
    await close();
  }
});

test('a ring of a new generation ignores the old generation\'s chunks', async () => {
  const old = await openRings(nats.url, 2, {}, 'gen-run', 3);
  const next = await openRings(nats.url, 2, {}, 'gen-run', 4);
  try {
    // Only rank 0 of the old generation still sends (its peer is gone): rank 1 of generation 4 must not take it.
    const stale = old.rings[0].allReduce(seededVector(N, 9), { step: 7 }).catch((e) => e);
    const x = [seededVector(N, 5), seededVector(N, 6)];
    const results = await Promise.all(next.rings.map((ring, r) => ring.allReduce(x[r], { step: 7 })));
    assert.ok(sameBytes(results[1].values, ringOrderMean(x)));
    await until(() => (next.rings[1].stats().rejected['stale-generation'] ?? 0) >= 1, 'old chunk seen and rejected');
    old.rings[0].abort();
    await stale;
  } finally {
    await old.close();
    await next.close();
  }
});
