// The test harness itself: a real nats-server that starts, restarts on the same port and stops cleanly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { connect, StringCodec } from 'nats';
import { startNats } from '../helpers/nats.ts';

test('startNats runs a real server with JetStream and the requested max_payload', async () => {
  const nats = await startNats({ maxPayload: 4 * 1024 * 1024 });
  try {
    const nc = await connect({ servers: nats.url });
    assert.equal(nc.info?.max_payload, 4 * 1024 * 1024);
    assert.equal(nc.info?.jetstream, true);
    const sub = nc.subscribe('hello', { max: 1 });
    nc.publish('hello', StringCodec().encode('world'));
    for await (const m of sub) assert.equal(StringCodec().decode(m.data), 'world');
    await nc.close();
  } finally {
    await nats.stop();
  }
  assert.equal(existsSync(nats.dir), false);
});

test('restart keeps the port and the JetStream store', async () => {
  const nats = await startNats();
  try {
    let nc = await connect({ servers: nats.url });
    const kv = await nc.jetstream().views.kv('harness');
    await kv.put('k', StringCodec().encode('v1'));
    await nc.close();
    const before = nats.pid();
    await nats.restart();
    assert.notEqual(nats.pid(), before);
    nc = await connect({ servers: nats.url });
    const kv2 = await nc.jetstream().views.kv('harness');
    assert.equal(StringCodec().decode((await kv2.get('k'))!.value), 'v1');
    await nc.close();
  } finally {
    await nats.stop();
  }
});

test('stop kills the server process', async () => {
  const nats = await startNats({ jetstream: false });
  const pid = nats.pid();
  await nats.stop();
  assert.throws(() => process.kill(pid, 0));
});
