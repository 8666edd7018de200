// Connecting to NATS: options checked by name, an unreachable server named, reconnection through a server restart
// (mid-run for the ring), ranks in separate processes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import type { NatsConnection } from 'nats';
import { startNats } from '../helpers/nats.ts';
import { killAfter } from '../helpers/watchdog.ts';
import { NatsUnreachableError, closeNats, defaultNatsOptions, openNats, parseNatsOptions } from '../../src/transport/connection.ts';
import { CollectiveTimeoutError } from '../../src/transport/allreduce.ts';
import { openRings, ringOrderMean, sameBytes, seededVector } from './ring-fixtures.ts';

async function closedPort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = createServer().listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

test('an unreachable server fails the first connection with an error naming its URL', async () => {
  const url = `nats://127.0.0.1:${await closedPort()}`;
  await assert.rejects(openNats({ servers: url, connectTimeoutMs: 1000 }), (e) => e instanceof NatsUnreachableError && e.message.startsWith(`cannot reach NATS at ${url}: `));
});

test('bad connection options are refused naming the field', () => {
  assert.throws(() => parseNatsOptions({ reconnectWaitMs: -1 }), /nats\.reconnectWaitMs/);
  assert.throws(() => parseNatsOptions({ servers: [] }), /nats\.servers/);
  assert.throws(() => parseNatsOptions({ nmae: 'x' }), /nmae/);
  assert.equal(defaultNatsOptions().servers, 'nats://127.0.0.1:4222');
});

async function reconnected(nc: NatsConnection): Promise<void> {
  for await (const s of nc.status()) if (s.type === 'reconnect') return;
}

test('after a nats-server restart mid-run the ranks reconnect and the next all-reduce succeeds', async () => {
  const nats = await startNats({ jetstream: false });
  const { rings, conns, close } = await openRings(nats.url, 3, { timeoutMs: 4000 });
  try {
    const x = (step: number) => rings.map((_, r) => seededVector(300_001, 10 * step + r));
    const first = x(0);
    await Promise.all(rings.map((ring, r) => ring.allReduce(first[r], { step: 0 })));

    // The server dies while step 1 is in flight: each rank either finishes with the right bytes or times out (typed).
    const inputs = x(1);
    const back = conns.map(reconnected);
    const inFlight = rings.map((ring, r) => ring.allReduce(inputs[r], { step: 1 }));
    await nats.restart({ downMs: 200 });
    await Promise.all(back);
    const outcomes = await Promise.allSettled(inFlight);
    const want = ringOrderMean(inputs);
    for (const o of outcomes) {
      if (o.status === 'fulfilled') assert.ok(sameBytes(o.value.values, want));
      else assert.ok(o.reason instanceof CollectiveTimeoutError, String(o.reason));
    }

    await Promise.all(conns.map((nc) => nc.flush()));
    const next = x(2);
    const results = await Promise.all(rings.map((ring, r) => ring.allReduce(next[r], { step: 2 })));
    for (const res of results) assert.ok(sameBytes(res.values, ringOrderMean(next)));
  } finally {
    await close();
    await nats.stop();
  }
});

test('closeNats drains: what was published before close is delivered', async () => {
  const nats = await startNats({ jetstream: false });
  try {
    const a = await openNats({ servers: nats.url });
    const b = await openNats({ servers: nats.url });
    let got = 0;
    b.subscribe('drain.test', { callback: () => got++ });
    await b.flush();
    for (let i = 0; i < 1000; i++) a.publish('drain.test', new Uint8Array(100));
    await closeNats(a);
    await b.flush();
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(got, 1000);
    assert.ok(a.isClosed());
    await closeNats(a); // closing twice is fine
    await closeNats(b);
  } finally {
    await nats.stop();
  }
});

test('closeNats while the server is down closes the connection instead of leaving it reconnecting forever', async () => {
  const nats = await startNats({ jetstream: false });
  let nc: NatsConnection | undefined;
  try {
    nc = await openNats({ servers: nats.url });
    nc.subscribe('gone.test', { callback: () => {} });
    await nats.stop();
    await new Promise((r) => setTimeout(r, 300)); // the client notices and starts reconnecting
    await closeNats(nc);
    // A connection left reconnecting would keep its process alive for good (a stopped trainer never exited).
    assert.ok(nc.isClosed());
  } finally {
    if (nc && !nc.isClosed()) await nc.close();
    await nats.stop();
  }
});

test('ranks in separate processes all-reduce to the same bytes', async (t) => {
  const nats = await startNats({ jetstream: false, maxPayload: 64 * 1024 });
  try {
    const world = 2;
    const n = 40_003;
    const procs = Array.from({ length: world }, (_, r) =>
      spawn(process.execPath, ['--import', 'tsx', 'test/transport/ring-worker.ts', nats.url, String(r), String(world), String(n), '100'], {
        stdio: ['pipe', 'pipe', 'inherit'],
      }),
    );
    killAfter(t, ...procs);
    const outputs = procs.map(
      (p) =>
        new Promise<string[]>((resolve, reject) => {
          let out = '';
          p.stdout!.on('data', (d) => {
            out += d;
            if (out === 'ready\n') p.emit('ready');
          });
          p.on('exit', (code) => (code === 0 ? resolve(out.trim().split('\n')) : reject(new Error(`worker exited ${code}`))));
        }),
    );
    await Promise.all(procs.map((p) => new Promise((r) => p.once('ready', r))));
    for (const p of procs) p.stdin!.end();
    const lines = await Promise.all(outputs);
    const want = ringOrderMean(Array.from({ length: world }, (_, r) => seededVector(n, 100 + r)));
    for (const [ready, hex] of lines) {
      assert.equal(ready, 'ready');
      assert.equal(hex, Buffer.from(want.buffer).toString('hex'));
    }
  } finally {
    await nats.stop();
  }
});
