// One NATS connection per process, configured by a zod schema: reconnects forever with a jittered wait (a
// restarted nats-server is a blip, not a crash), logs every disconnect/reconnect, drains on close.
import { connect, type NatsConnection } from 'nats';
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

/** The first connection failed: names the server(s) and says why. */
export class NatsUnreachableError extends Error {
  constructor(
    readonly servers: string[],
    cause: unknown,
  ) {
    super(`cannot reach NATS at ${servers.join(', ')}: ${(cause as Error)?.message ?? String(cause)}`, { cause });
  }
}

/** Connects (the first attempt must succeed within connectTimeoutMs), then stays connected through restarts. */
export async function openNats(input: Partial<z.input<typeof NatsOptions>> = {}): Promise<NatsConnection> {
  const opts = parseNatsOptions(input);
  const servers = Array.isArray(opts.servers) ? opts.servers : [opts.servers];
  let nc: NatsConnection;
  try {
    nc = await connect({
      servers,
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
    throw new NatsUnreachableError(servers, err);
  }
  log.info('connected to NATS', { server: nc.getServer(), name: opts.name, maxPayload: nc.info?.max_payload });
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
    await nc.close();
  }
}

/** The largest message the connected server accepts, in bytes. */
export function maxPayload(nc: NatsConnection): number {
  return nc.info?.max_payload ?? 1024 * 1024;
}
