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

/** The coordinator got the request but could not save the run state (NATS/JetStream restarting): ask again. */
export class CoordinatorUnavailable extends Error {
  constructor(
    readonly verb: Verb,
    message: string,
  ) {
    super(`coordinator could not acknowledge ${verb}: ${message}`);
  }
}

export class CoordinatorClient {
  constructor(
    private readonly nc: NatsConnection,
    readonly run: string,
    readonly trainer: string,
    private readonly timeoutMs = 5000,
  ) {}

  /**
   * Sends `verb` with `body` (the trainer id added); resolves to the reply, rejects with CoordinatorRefusal if
   * refused, with CoordinatorUnavailable if the coordinator could not save its state (not a refusal: retry).
   */
  async request<T = Record<string, unknown>>(verb: Verb, body: Record<string, unknown> = {}): Promise<T> {
    const msg = await this.nc.request(coordSubject(this.run, verb), JSON.stringify({ trainer: this.trainer, ...body }), { timeout: this.timeoutMs });
    const reply = JSON.parse(new TextDecoder().decode(msg.data)) as { ok: boolean; error?: string; reason?: string };
    if (!reply.ok && reply.reason === 'unavailable') throw new CoordinatorUnavailable(verb, reply.error ?? 'no reason given');
    if (!reply.ok) throw new CoordinatorRefusal(verb, reply.reason, reply.error ?? 'no reason given');
    return reply as T;
  }
}
