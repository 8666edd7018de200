// NATS credentials: real nats-servers started with a user/password, with a token, and in operator (JWT) mode for
// .creds files; credentials from the environment or the URL's userinfo; a refused login names the server and 'authorization' at once, and no secret
// reaches a log line or an error message.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nkeys, type NatsConnection } from 'nats';
import { runEasel } from '../helpers/easel.ts';
import { startNats, type NatsServer } from '../helpers/nats.ts';
import { NatsAuthError, closeNats, natsCredentials, openNats } from '../../src/transport/connection.ts';
import { Coordinator } from '../../src/coordinator/service.ts';
import { CoordinatorConfig } from '../../src/coordinator/config.ts';
import { parseRunConfig } from '../../src/trainer/config.ts';
import { shardInfos, writeDataset } from '../trainer/distributed-harness.ts';
import { tinyRun } from '../trainer/fixtures.ts';

const PASSWORD = 'pa55-w0rd-secret';
const TOKEN = 'tok-3n-secret';

let userServer: NatsServer;
let tokenServer: NatsServer;
before(async () => {
  [userServer, tokenServer] = await Promise.all([
    startNats({ extraConfig: `authorization { user: alice, password: "${PASSWORD}" }` }), // JetStream on: the coordinator's KV
    startNats({ jetstream: false, extraConfig: `authorization { token: "${TOKEN}" }` }),
  ]);
});
after(async () => {
  await Promise.all([userServer.stop(), tokenServer.stop()]);
});

/** Runs `fn` with everything written to stderr (where the logger writes) captured. */
async function capturingStderr<T>(fn: () => Promise<T>): Promise<{ value: T; err: string }> {
  const write = process.stderr.write.bind(process.stderr);
  const level = process.env.EASEL_LOG;
  process.env.EASEL_LOG = 'debug';
  let err = '';
  process.stderr.write = ((chunk: string | Uint8Array) => {
    err += chunk.toString();
    return true;
  }) as typeof process.stderr.write;
  try {
    return { value: await fn(), err };
  } finally {
    process.stderr.write = write;
    if (level === undefined) delete process.env.EASEL_LOG;
    else process.env.EASEL_LOG = level;
  }
}

/** A request/reply round trip over `nc`: the connection is really usable. */
async function roundTrip(nc: NatsConnection): Promise<void> {
  const sub = nc.subscribe('auth.echo', { callback: (_e, m) => m.respond(m.data) });
  const reply = await nc.request('auth.echo', 'hello', { timeout: 2000 });
  assert.equal(new TextDecoder().decode(reply.data), 'hello');
  sub.unsubscribe();
}

test('NATS_USER and NATS_PASSWORD log in, and the password appears in no log line', async () => {
  const { value: nc, err } = await capturingStderr(() => openNats({ servers: userServer.url, name: 'auth-env' }, { NATS_USER: 'alice', NATS_PASSWORD: PASSWORD }));
  try {
    await roundTrip(nc);
  } finally {
    await closeNats(nc);
  }
  assert.match(err, /connected to NATS .*auth=NATS_USER\/NATS_PASSWORD/);
  assert.ok(!err.includes(PASSWORD), err);
});

test("a URL's userinfo logs in; the server is named and logged without it", async () => {
  const url = userServer.url.replace('nats://', `nats://alice:${encodeURIComponent(PASSWORD)}@`);
  const { value: nc, err } = await capturingStderr(() => openNats({ servers: url }, {}));
  try {
    await roundTrip(nc);
    assert.equal(nc.getServer(), `127.0.0.1:${userServer.port}`);
  } finally {
    await closeNats(nc);
  }
  assert.match(err, new RegExp(`connected to NATS server=127\\.0\\.0\\.1:${userServer.port}`));
  assert.ok(!err.includes(PASSWORD), err);
  assert.deepEqual(natsCredentials([url, tokenServer.url], {}).servers, [userServer.url, tokenServer.url]);
});

test("a wrong password fails at once with an error naming the server and 'authorization', not the password", async () => {
  const t0 = performance.now();
  await assert.rejects(
    openNats({ servers: userServer.url, connectTimeoutMs: 20_000 }, { NATS_USER: 'alice', NATS_PASSWORD: 'not-the-password' }),
    (e: Error) =>
      e instanceof NatsAuthError &&
      e.message.startsWith(`NATS at ${userServer.url} refused authorization with the credentials from NATS_USER/NATS_PASSWORD (user 'alice'): `) &&
      !e.message.includes('not-the-password'),
  );
  assert.ok(performance.now() - t0 < 10_000, 'refused without waiting for the connect timeout');
  await assert.rejects(openNats({ servers: userServer.url }, {}), (e: Error) => e instanceof NatsAuthError && /refused authorization with no credentials \(set NATS_CREDS/.test(e.message));
  const url = userServer.url.replace('nats://', 'nats://alice:wrong-in-url@');
  await assert.rejects(openNats({ servers: url }, {}), (e: Error) => e instanceof NatsAuthError && e.message.includes(`NATS at ${userServer.url} refused authorization`) && !e.message.includes('wrong-in-url'));
});

test('NATS_TOKEN (or a token as the URL userinfo) logs in to a token server; a wrong token is refused by name', async () => {
  for (const [servers, env] of [
    [tokenServer.url, { NATS_TOKEN: TOKEN }],
    [tokenServer.url.replace('nats://', `nats://${TOKEN}@`), {}],
  ] as const) {
    const { value: nc, err } = await capturingStderr(() => openNats({ servers }, env));
    try {
      await roundTrip(nc);
    } finally {
      await closeNats(nc);
    }
    assert.ok(!err.includes(TOKEN), err);
  }
  await assert.rejects(
    openNats({ servers: tokenServer.url }, { NATS_TOKEN: 'wrong-token' }),
    (e: Error) => e instanceof NatsAuthError && e.message.startsWith(`NATS at ${tokenServer.url} refused authorization with the credentials from NATS_TOKEN: `) && !e.message.includes('wrong-token'),
  );
});

test('credentials given two ways, half a user/password pair, or an unreadable or malformed .creds file are refused by name', async () => {
  assert.throws(() => natsCredentials('nats://a:b@h:4222', { NATS_TOKEN: 'x' }), /NATS credentials given more than one way \(the userinfo of the URL nats:\/\/h:4222, NATS_TOKEN\): use exactly one/);
  assert.throws(() => natsCredentials('nats://h', { NATS_USER: 'alice' }), /NATS_USER and NATS_PASSWORD go together/);
  assert.throws(() => natsCredentials('nats://h', { NATS_CREDS: '/nonexistent/x.creds' }), /NATS_CREDS=\/nonexistent\/x\.creds: cannot read the credentials file/);
  const dir = await mkdtemp(join(tmpdir(), 'easel-creds-'));
  try {
    const bad = join(dir, 'bad.creds');
    await writeFile(bad, 'not a creds file\n');
    assert.throws(() => natsCredentials('nats://h', { NATS_CREDS: bad }), /bad\.creds is not a NATS \.creds file/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  assert.equal(natsCredentials('nats://h:4222', {}).credentials, undefined);
});

test('a coordinator and an `easel trainer` process train over a NATS that wants a password (heartbeats included)', { timeout: 90_000 }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'easel-auth-run-'));
  const env = { NATS_USER: 'alice', NATS_PASSWORD: PASSWORD };
  const nc = await openNats({ servers: userServer.url, name: 'auth-coordinator' }, env);
  try {
    await writeDataset(join(dir, 'data'), 1, 32);
    const config = parseRunConfig({ ...tinyRun(join(dir, 'data'), join(dir, 'ckpt'), { clip: 3, prior: 0, decoder: 0 }), name: 'authrun', backend: 'cpu' });
    const c = await Coordinator.start({
      nc,
      run: 'authrun',
      config: CoordinatorConfig.parse({ heartbeatTimeoutMs: 20_000, tickMs: 200, httpPort: 0 }),
      runConfig: config,
      budgets: { clip: 3, prior: 0, decoder: 0, upsampler: 0 },
      shards: await shardInfos(join(dir, 'data')),
    });
    try {
      const { code, log } = await runEasel(t, ['trainer', '--nats', userServer.url, '--run', 'authrun', '--id', 'w0', '--resume', 'none', '--heartbeat-ms', '200'], {
        ...env,
        EASEL_BACKEND: 'cpu',
        EASEL_LOG: 'debug',
      });
      assert.equal(code, 0, log);
      assert.equal(c.status().step, 3);
      assert.equal(c.status().phase, 'done');
      const metrics = await c.metrics.registry.getSingleMetricAsString('easel_coordinator_requests_total');
      assert.match(metrics, /verb="heartbeat",outcome="ok"[^\n]* [1-9]/, metrics);
      assert.ok(!log.includes(PASSWORD), 'the password reached the trainer log');
    } finally {
      await c.stop();
    }
  } finally {
    await closeNats(nc);
    await rm(dir, { recursive: true, force: true });
  }
});

// Operator mode, as `nsc` sets it up: an operator signs an account, the account signs a user; the server trusts the
// operator and has the account preloaded. The JWTs are minted here with nats.js's nkeys (ed25519).
type KeyPair = ReturnType<typeof nkeys.createUser>;
const b64url = (b: Uint8Array | string) => Buffer.from(b).toString('base64url');
function mintJwt(issuer: KeyPair, subject: KeyPair, nats: Record<string, unknown>): string {
  const header = b64url(JSON.stringify({ typ: 'JWT', alg: 'ed25519-nkey' }));
  const claims = { jti: b64url(crypto.getRandomValues(new Uint8Array(16))), iat: Math.floor(Date.now() / 1000), iss: issuer.getPublicKey(), sub: subject.getPublicKey(), name: 'easel-test', nats: { version: 2, ...nats } };
  const payload = b64url(JSON.stringify(claims));
  return `${header}.${payload}.${b64url(issuer.sign(new TextEncoder().encode(`${header}.${payload}`)))}`;
}
function credsFile(account: KeyPair): { text: string; seed: string } {
  const user = nkeys.createUser();
  const seed = new TextDecoder().decode(user.getSeed());
  const jwt = mintJwt(account, user, { type: 'user', pub: {}, sub: {}, subs: -1, data: -1, payload: -1 });
  return { seed, text: `-----BEGIN NATS USER JWT-----\n${jwt}\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n${seed}\n------END USER NKEY SEED------\n` };
}

test('NATS_CREDS (.creds file) logs in to a server in operator mode; a user of an unknown account is refused by name', async () => {
  const operator = nkeys.createOperator();
  const account = nkeys.createAccount();
  const limits = { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 };
  const server = await startNats({
    jetstream: false,
    extraConfig: [
      `operator: ${mintJwt(operator, operator, { type: 'operator' })}`,
      'resolver: MEMORY',
      `resolver_preload: { ${account.getPublicKey()}: ${mintJwt(operator, account, { type: 'account', limits })} }`,
    ].join('\n'),
  });
  const dir = await mkdtemp(join(tmpdir(), 'easel-creds-'));
  try {
    const good = credsFile(account);
    await writeFile(join(dir, 'good.creds'), good.text);
    const { value: nc, err } = await capturingStderr(() => openNats({ servers: server.url }, { NATS_CREDS: join(dir, 'good.creds') }));
    try {
      await roundTrip(nc);
    } finally {
      await closeNats(nc);
    }
    assert.match(err, /auth=NATS_CREDS/);
    assert.ok(!err.includes(good.seed), err);

    const stranger = credsFile(nkeys.createAccount());
    await writeFile(join(dir, 'stranger.creds'), stranger.text);
    await assert.rejects(
      openNats({ servers: server.url }, { NATS_CREDS: join(dir, 'stranger.creds') }),
      (e: Error) => e instanceof NatsAuthError && e.message.startsWith(`NATS at ${server.url} refused authorization with the credentials from NATS_CREDS (${join(dir, 'stranger.creds')})`) && !e.message.includes(stranger.seed),
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
    await server.stop();
  }
});
