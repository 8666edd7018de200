// Shared CLI plumbing: parse flags with node's parseArgs, then validate them with the component's zod
// schema so a bad flag gets the same message, naming the field, as a bad key in a run file.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { z } from 'zod';

/** A mistake in how a command was called: printed without a stack trace, exit code 2. */
export class UsageError extends Error {}

/** Parses argv; `--help` prints `help` and returns undefined. */
export function parseFlags<O extends NonNullable<ParseArgsConfig['options']>>(
  argv: string[],
  options: O,
  help: string,
  allowPositionals = false,
) {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals, strict: true });
  } catch (err) {
    throw new UsageError(`${(err as Error).message}\n\n${help}`);
  }
  if ((parsed.values as Record<string, unknown>).help) {
    console.log(help);
    return undefined;
  }
  return parsed;
}

/** Formats a zod error as one line per problem, each naming the field path (e.g. `stages.clip.steps`). */
export function formatZodError(err: z.ZodError, prefix = ''): string {
  return err.issues
    .map((i) => {
      const path = [prefix, ...i.path.map(String)].filter(Boolean).join('.');
      return `${path || '(root)'}: ${i.message}`;
    })
    .join('\n');
}

/** Validates `value` with `schema`; throws a UsageError naming every bad field. */
export function validate<S extends z.ZodType>(schema: S, value: unknown, what: string, prefix = ''): z.output<S> {
  const r = schema.safeParse(value);
  if (!r.success) throw new UsageError(`invalid ${what}:\n${formatZodError(r.error, prefix)}`);
  return r.data;
}

/** parseArgs option specs for flags that take a value, e.g. numeric flags later mapped onto config fields. */
export function stringFlags(names: readonly string[]): Record<string, { type: 'string' }> {
  return Object.fromEntries(names.map((f) => [f, { type: 'string' as const }]));
}

/**
 * Copies numeric flags onto config fields (`{'per-shard': 'perShard'}`), as numbers, leaving validation (and the
 * error naming the field) to the component's zod schema.
 */
export function numericFields(flags: Record<string, string | undefined>, mapping: Record<string, string>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [flag, field] of Object.entries(mapping)) if (flags[flag] !== undefined) out[field] = Number(flags[flag]);
  return out;
}

/**
 * Turns the first SIGINT/SIGTERM into an abort (the loop finishes its step and checkpoints) and a second into an
 * immediate exit. Returns the signal and a function that removes the handlers.
 */
export function abortOnSignals(what: string): { signal: AbortSignal; release(): void } {
  const abort = new AbortController();
  const onSignal = (sig: string) => {
    if (abort.signal.aborted) process.exit(130);
    console.error(`${what}: ${sig}: stopping after the current step (again to quit at once)`);
    abort.abort();
  };
  const sigint = () => onSignal('SIGINT');
  const sigterm = () => onSignal('SIGTERM');
  process.on('SIGINT', sigint);
  process.on('SIGTERM', sigterm);
  const unwatch = onSupervisorGone(() => onSignal('its supervisor (easel run) is gone'));
  return {
    signal: abort.signal,
    release: () => {
      process.off('SIGINT', sigint);
      process.off('SIGTERM', sigterm);
      unwatch();
    },
  };
}

/**
 * For a process started by `easel run` (EASEL_SUPERVISED=1, stdin a pipe from it): calls `gone` once that pipe
 * closes, which happens however `easel run` ends, kill -9 included. Its children run in process groups of their own
 * (so Ctrl-C reaches only `easel run`), and nothing else would stop them. Returns a function that stops watching
 * (and lets stdin go, so it does not keep the process alive). Elsewhere it does nothing.
 */
export function onSupervisorGone(gone: () => void): () => void {
  if (process.env.EASEL_SUPERVISED !== '1') return () => {};
  const stdin = process.stdin;
  stdin.once('end', gone);
  stdin.resume(); // 'end' comes only to a flowing stream
  return () => {
    stdin.off('end', gone);
    stdin.pause();
    stdin.destroy();
  };
}
