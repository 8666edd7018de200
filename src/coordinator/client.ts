// What a trainer uses to talk to its run's coordinator: one JSON request per verb, a typed error on refusal.
import type { NatsConnection } from 'nats';
import { coordSubject, type Verb } from './subjects.ts';

/** The coordinator refused a request; `reason` names why (e.g. wrong-owner, stale-generation, unknown-trainer). */
export class CoordinatorRefusal extends Error {
  constructor(
    readonly verb: Verb,
    readonly reason: string | undefined,
    message: string,
  ) {
    super(`coordinator refused ${verb}: ${message}`);
  }
}

export class CoordinatorClient {
  constructor(
    private readonly nc: NatsConnection,
    readonly run: string,
    readonly trainer: string,
    private readonly timeoutMs = 5000,
  ) {}

  /** Sends `verb` with `body` (the trainer id added); resolves to the reply, rejects with CoordinatorRefusal if refused. */
  async request<T = Record<string, unknown>>(verb: Verb, body: Record<string, unknown> = {}): Promise<T> {
    const msg = await this.nc.request(coordSubject(this.run, verb), JSON.stringify({ trainer: this.trainer, ...body }), { timeout: this.timeoutMs });
    const reply = JSON.parse(new TextDecoder().decode(msg.data)) as { ok: boolean; error?: string; reason?: string };
    if (!reply.ok) throw new CoordinatorRefusal(verb, reply.reason, reply.error ?? 'no reason given');
    return reply as T;
  }
}
