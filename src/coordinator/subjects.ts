// Every NATS subject and KV name the coordinator uses, scoped by run id, so two runs on one NATS never mix.
// Trainers send JSON requests to `easel.run.<run>.coord.<verb>` and get a JSON reply (see docs/coordinator.md).

export const VERBS = ['register', 'heartbeat', 'leave', 'lease', 'progress', 'complete', 'step', 'checkpoint', 'cursor', 'rewind', 'status', 'config'] as const;
export type Verb = (typeof VERBS)[number];

const RUN_ID = /^[a-z0-9][a-z0-9-]*$/;

/** Throws unless `run` is a valid run id (a NATS subject token and a KV bucket name at once). */
export function checkRunId(run: string): string {
  if (!RUN_ID.test(run)) throw new Error(`run id '${run}' must be lowercase letters, digits and dashes`);
  return run;
}

/** Request subject of one coordinator verb. */
export function coordSubject(run: string, verb: Verb): string {
  return `easel.run.${checkRunId(run)}.coord.${verb}`;
}

/** Wildcard the coordinator subscribes to: all of its verbs. */
export function coordWildcard(run: string): string {
  return `easel.run.${checkRunId(run)}.coord.*`;
}

/** Published by the coordinator whenever a new generation forms (JSON: Generation). */
export function generationSubject(run: string): string {
  return `easel.run.${checkRunId(run)}.generation`;
}

/** JetStream KV bucket holding one run's coordinator state. */
export function stateBucket(run: string): string {
  return `easel-run-${checkRunId(run)}`;
}
