// One NATS connection per process, configured by a zod schema: reconnects forever with a jittered wait (a
// restarted nats-server is a blip, not a crash), logs every disconnect/reconnect, drains on close.
//
// Credentials come from the environment (NATS_CREDS, NATS_USER + NATS_PASSWORD, NATS_TOKEN) or from the server
// URL's userinfo (nats://user:password@host, nats://token@host); exactly one way at a time. They are never logged:
// messages name the server without userinfo and say which way the credentials came, never their values.
import { readFileSync } from 'node:fs';
import { connect, credsAuthenticator, type ConnectionOptions, type NatsConnection } from 'nats';
import { z } from 'zod';
import { validate } from '../cli/args.ts';
import { logger } from '../util/log.ts';

const log = logger('transport');

export const NatsOptions = z.strictObject({
  servers: z
    .union([z.string().min(1), z.array(z.string().min(1)).min(1)])
    .default('nats://127.0.0.1:4222')
    .describe('NATS server URL(s), e.g. nats://nats:4222 (several: tried in order, then on reconnect)'),
  name: z.string().min(1).default('easel').describe('connection name shown by the server (e.g. trainer-3)'),
  connectTimeoutMs: z.number().int().positive().default(5000).describe('give up on the first connection after this long'),
  reconnectWaitMs: z.number().int().min(0).default(250).describe('wait between reconnect attempts (reconnects never give up)'),
  reconnectJitterMs: z.number().int().min(0).default(250).describe('random extra wait per reconnect attempt, so a fleet does not reconnect in lock-step'),
  pingIntervalMs: z.number().int().positive().default(10_000).describe('how often the client pings the server to detect a dead connection'),
  maxPingOut: z.number().int().positive().default(3).describe('unanswered pings before the connection is considered lost'),
});
export type NatsOptions = z.output<typeof NatsOptions>;

/** Defaults for every field. */
export function defaultNatsOptions(): NatsOptions {
  return NatsOptions.parse({});
}

/** Validates user input (CLI flags, a run file's `nats` section); errors name the field. */
export function parseNatsOptions(input: unknown): NatsOptions {
  return validate(NatsOptions, input ?? {}, 'NATS options', 'nats');
}

/** NATS credentials in plain (serialisable) form: what one of the supported ways gave. */
export interface NatsCredentials {
  user?: string;
  pass?: string;
  token?: string;
  /** Contents of a .creds file (user JWT + nkey seed). */
  creds?: string;
  /** Which way they came, for messages: e.g. `NATS_USER/NATS_PASSWORD` (never the values). */
  source: string;
}

/** Server URLs without userinfo (safe to log) and the credentials the environment or the URLs carry, if any. */
export function natsCredentials(servers: string | string[], env: NodeJS.ProcessEnv = process.env): { servers: string[]; credentials: NatsCredentials | undefined } {
  const found: NatsCredentials[] = [];
  const plain = (Array.isArray(servers) ? servers : [servers]).map((server) => {
    const { url, credentials } = splitUserinfo(server);
    if (credentials && !found.some((f) => f.source === credentials.source && f.user === credentials.user && f.pass === credentials.pass && f.token === credentials.token)) {
      found.push(credentials);
    }
    return url;
  });
  if (env.NATS_CREDS) {
    let creds: string;
    try {
      creds = readFileSync(env.NATS_CREDS, 'utf8');
    } catch (err) {
      throw new Error(`NATS_CREDS=${env.NATS_CREDS}: cannot read the credentials file: ${(err as Error).message}`, { cause: err });
    }
    if (!/-----BEGIN NATS USER JWT-----/.test(creds) || !/-----BEGIN USER NKEY SEED-----/.test(creds)) {
      throw new Error(`NATS_CREDS=${env.NATS_CREDS} is not a NATS .creds file (expected a USER JWT and a USER NKEY SEED block)`);
    }
    found.push({ creds, source: `NATS_CREDS (${env.NATS_CREDS})` });
  }
  if (env.NATS_USER !== undefined || env.NATS_PASSWORD !== undefined) {
    if (!env.NATS_USER || env.NATS_PASSWORD === undefined) throw new Error('NATS_USER and NATS_PASSWORD go together: set both or neither');
    found.push({ user: env.NATS_USER, pass: env.NATS_PASSWORD, source: 'NATS_USER/NATS_PASSWORD' });
  }
  if (env.NATS_TOKEN) found.push({ token: env.NATS_TOKEN, source: 'NATS_TOKEN' });
  if (found.length > 1) throw new Error(`NATS credentials given more than one way (${found.map((f) => f.source).join(', ')}): use exactly one`);
  return { servers: plain, credentials: found[0] };
}

/** nats://user:pass@host → (nats://host, user/pass); nats://token@host → (nats://host, token). */
function splitUserinfo(server: string): { url: string; credentials?: NatsCredentials } {
  const m = /^([a-z][a-z0-9+.-]*:\/\/)([^@/]*)@(.*)$/i.exec(server);
  if (!m) return { url: server };
  const [, scheme, userinfo, rest] = m;
  const url = scheme + rest;
  const colon = userinfo.indexOf(':');
  if (colon < 0) return { url, credentials: { token: decodeURIComponent(userinfo), source: `the token in the URL ${url}` } };
  return { url, credentials: { user: decodeURIComponent(userinfo.slice(0, colon)), pass: decodeURIComponent(userinfo.slice(colon + 1)), source: `the userinfo of the URL ${url}` } };
}

/** The nats.js connect options that present `credentials`. */
export function authOptions(credentials: NatsCredentials | undefined): Pick<ConnectionOptions, 'user' | 'pass' | 'token' | 'authenticator'> {
  if (!credentials) return {};
  if (credentials.creds) return { authenticator: credsAuthenticator(new TextEncoder().encode(credentials.creds)) };
  if (credentials.token !== undefined) return { token: credentials.token };
  return { user: credentials.user, pass: credentials.pass };
}

/** The server refused the credentials (or their absence): names the server and how they were given. */
export class NatsAuthError extends Error {
  constructor(
    readonly servers: string[],
    credentials: NatsCredentials | undefined,
    cause: unknown,
  ) {
    const how = credentials ? `the credentials from ${credentials.source}${credentials.user ? ` (user '${credentials.user}')` : ''}` : 'no credentials (set NATS_CREDS, NATS_USER/NATS_PASSWORD or NATS_TOKEN)';
    super(`NATS at ${servers.join(', ')} refused authorization with ${how}: ${(cause as Error)?.message ?? String(cause)}`, { cause });
  }
}

/** The first connection failed: names the server(s) and says why. */
export class NatsUnreachableError extends Error {
  constructor(
    readonly servers: string[],
    cause: unknown,
  ) {
    super(`cannot reach NATS at ${servers.join(', ')}: ${(cause as Error)?.message ?? String(cause)}`, { cause });
  }
}

/**
 * Connects (the first attempt must succeed within connectTimeoutMs), then stays connected through restarts.
 * Credentials come from `env` (NATS_CREDS, NATS_USER/NATS_PASSWORD, NATS_TOKEN) or the URLs' userinfo.
 */
export async function openNats(input: Partial<z.input<typeof NatsOptions>> = {}, env: NodeJS.ProcessEnv = process.env): Promise<NatsConnection> {
  const opts = parseNatsOptions(input);
  const { servers, credentials } = natsCredentials(opts.servers, env);
  let nc: NatsConnection;
  try {
    nc = await connect({
      servers,
      ...authOptions(credentials),
      name: opts.name,
      timeout: opts.connectTimeoutMs,
      reconnect: true,
      maxReconnectAttempts: -1,
      reconnectTimeWait: opts.reconnectWaitMs,
      reconnectJitter: opts.reconnectJitterMs,
      pingInterval: opts.pingIntervalMs,
      maxPingOut: opts.maxPingOut,
      waitOnFirstConnect: false,
    });
  } catch (err) {
    const code = String((err as { code?: unknown }).code ?? '');
    if (code === 'AUTHORIZATION_VIOLATION' || code === 'AUTHENTICATION_EXPIRED' || code === 'BAD_CREDS' || /authori[sz]ation/i.test((err as Error).message)) {
      throw new NatsAuthError(servers, credentials, err);
    }
    throw new NatsUnreachableError(servers, err);
  }
  log.info('connected to NATS', { server: nc.getServer(), name: opts.name, maxPayload: nc.info?.max_payload, auth: credentials?.source ?? 'none' });
  (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect') log.warn('disconnected from NATS, reconnecting', { server: String(s.data) });
      else if (s.type === 'reconnect') log.info('reconnected to NATS', { server: String(s.data) });
      else if (s.type === 'error') log.warn('NATS async error', { error: String(s.data) });
      else if (s.type === 'ldm') log.warn('NATS server entering lame duck mode', { server: String(s.data) });
    }
  })().catch(() => {});
  return nc;
}

/** Drains (flushes what was published, lets subscriptions finish) and closes; a closed connection is fine. */
export async function closeNats(nc: NatsConnection): Promise<void> {
  if (nc.isClosed()) return;
  try {
    await nc.drain();
  } catch (err) {
    log.debug('drain failed, closing', { error: (err as Error).message });
  }
  // While the server is unreachable, nats.js's drain() resolves without closing: the connection would go on
  // reconnecting forever and keep the process alive (a trainer stopped while NATS was down never exited).
  if (!nc.isClosed()) await nc.close();
}

/** The largest message the connected server accepts, in bytes. */
export function maxPayload(nc: NatsConnection): number {
  return nc.info?.max_payload ?? 1024 * 1024;
}
