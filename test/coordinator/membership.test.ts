import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Membership } from '../../src/coordinator/membership.ts';

const opts = { heartbeatTimeoutMs: 100, minTrainers: 2, maxTrainers: 3 };

test('a generation forms once minTrainers registered, ranks in registration order', () => {
  const m = new Membership(opts);
  m.register('a', 0);
  assert.equal(m.tick(0).formed, undefined, 'one trainer is below minTrainers');
  m.register('b', 1);
  const g = m.tick(1).formed!;
  assert.deepEqual(g, { number: 1, ring: ['a', 'b'], formedAt: 1 });
  assert.deepEqual(m.heartbeat('b', 2), { known: true, generation: 1, rank: 1, worldSize: 2 });
  assert.ok(m.ready());
});

test('a trainer joining later waits and enters at the next generation', () => {
  const m = new Membership(opts);
  m.register('a', 0);
  m.register('b', 0);
  m.tick(0);
  assert.deepEqual(m.register('c', 10), { accepted: true, generation: 1, waiting: true });
  assert.equal(m.heartbeat('c', 10).known && m.rankOf('c'), undefined);
  const g = m.tick(20).formed!;
  assert.deepEqual(g.ring, ['a', 'b', 'c']);
  assert.equal(g.number, 2);
  assert.equal(m.changes, 1);
  assert.equal(m.register('d', 20).accepted, false, 'maxTrainers=3');
});

test('missing heartbeats start a new generation of the survivors', () => {
  const m = new Membership(opts);
  for (const id of ['a', 'b', 'c']) m.register(id, 0);
  m.tick(0);
  m.heartbeat('a', 90);
  m.heartbeat('c', 90);
  const r = m.tick(150);
  assert.deepEqual(r.dead, ['b']);
  assert.deepEqual(r.formed?.ring, ['a', 'c']);
  assert.deepEqual(m.heartbeat('b', 151), { known: false });
  assert.equal(m.heartbeat('c', 151).known && m.rankOf('c'), 1);
});

test('below minTrainers the run waits, and resumes with a new generation', () => {
  const m = new Membership(opts);
  m.register('a', 0);
  m.register('b', 0);
  m.tick(0);
  m.heartbeat('a', 150);
  m.tick(150);
  assert.equal(m.ready(), false);
  assert.deepEqual(m.generation.ring, []);
  m.register('c', 160);
  const g = m.tick(160).formed!;
  assert.deepEqual(g, { number: 2, ring: ['a', 'c'], formedAt: 160 });
});

test('membership survives a JSON round trip', () => {
  const m = new Membership(opts);
  m.register('a', 0);
  m.register('b', 0);
  m.tick(0);
  const copy = Membership.fromJSON(JSON.parse(JSON.stringify(m.toJSON())), opts, 1000);
  assert.deepEqual(copy.generation, m.generation);
  assert.equal(copy.tick(1050).formed, undefined, 'restored heartbeats restart at the restore time');
  assert.deepEqual(copy.tick(1101).dead, ['a', 'b']);
});

test('mid-step, a joiner alone forms no generation; a death or a step boundary lets it in', () => {
  const m = new Membership(opts);
  m.register('a', 0);
  m.register('b', 0);
  m.tick(0);
  m.register('c', 5);
  assert.equal(m.tick(10, { admitJoiners: false }).formed, undefined);
  assert.deepEqual(m.tick(20, { admitJoiners: true }).formed?.ring, ['a', 'b', 'c']);
});
