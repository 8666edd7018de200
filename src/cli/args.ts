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
