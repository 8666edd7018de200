// `easel trainer --nats <url> --run <id> [--config <run.yaml>]`: one data-parallel trainer of a run that
// `easel coordinator` owns; it trains with the coordinator's run config (a --config file must equal it). Ctrl-C
// (SIGINT) or SIGTERM stops every rank after the same step; rank 0 writes a checkpoint, and `easel trainer` started
// again continues from it (--resume latest is the default).
import { abortOnSignals, parseFlags, UsageError } from './args.ts';

const HELP = `usage: easel trainer --nats <url> --run <id> [--config <run.yaml>] [--id <trainer id>] [--resume latest|none|<url>]
                     [--heartbeat-ms <ms>] [--collective-timeout-ms <ms>] [--trace <file>]

  --nats     NATS server URL(s), comma-separated
  --run      the run id the coordinator was started with
  --config   optional: the run file; it must equal the one the coordinator was started with (default: the
             trainer asks the coordinator for it, waiting up to 60 s for one to answer)
  --id       this trainer's id (default: <host>-<pid>)
  --resume   'latest' (default) continues from checkpoint.url if it holds one; 'none' starts fresh; or a checkpoint URL
  --heartbeat-ms            how often to heartbeat the coordinator (default 1000)
  --collective-timeout-ms   abandon an all-reduce that makes no progress this long (default 15000)
  --trace    append one JSON line per applied step (rank, step, samples, loss, weights checksum) to this file`;

function positiveInt(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${flag}: expected a positive integer, got '${value}'`);
  return n;
}

/** The coordinator's run config; a --config file, if given, must equal it. */
async function runConfig(nats: string[], run: string, file: string | undefined) {
  const { loadRunConfig } = await import('../trainer/config.ts');
  const { coordinatedRunConfig } = await import('../trainer/coordinated-config.ts');
  const { openNats, closeNats } = await import('../transport/connection.ts');
  const local = file ? { config: await loadRunConfig(file), name: `--config ${file}` } : undefined;
  const nc = await openNats({ servers: nats, name: `trainer-config-${process.pid}` });
  try {
    return await coordinatedRunConfig(nc, run, local);
  } finally {
    await closeNats(nc);
  }
}

export async function run(argv: string[]): Promise<number> {
  const parsed = parseFlags(
    argv,
    {
      nats: { type: 'string' },
      run: { type: 'string' },
      config: { type: 'string' },
      id: { type: 'string' },
      resume: { type: 'string' },
      'heartbeat-ms': { type: 'string' },
      'collective-timeout-ms': { type: 'string' },
      trace: { type: 'string' },
    },
    HELP,
  );
  if (!parsed) return 0;
  const { values } = parsed;
  for (const f of ['nats', 'run'] as const) if (!values[f]) throw new UsageError(`--${f} is required\n\n${HELP}`);
  const { checkRunId } = await import('../coordinator/subjects.ts');
  try {
    checkRunId(values.run!);
  } catch (err) {
    throw new UsageError(`--run: ${(err as Error).message}`);
  }
  const nats = values.nats!.split(',');
  const { config, tokenizer } = await runConfig(nats, values.run!, values.config);
  const { trainDistributed } = await import('../trainer/distributed.ts');
  const stop = abortOnSignals('easel trainer');
  try {
    const r = await trainDistributed({
      nats,
      run: values.run!,
      config,
      tokenizer,
      id: values.id,
      resume: values.resume,
      heartbeatMs: positiveInt('heartbeat-ms', values['heartbeat-ms']),
      collectiveTimeoutMs: positiveInt('collective-timeout-ms', values['collective-timeout-ms']),
      traceFile: values.trace,
      signal: stop.signal,
    });
    console.log(`trainer ${r.ended} at step ${r.globalStep}: ${r.samples} samples from this trainer, ${r.generations} generation(s); checkpoint ${r.lastCheckpoint ?? '(none written here)'}`);
    return 0;
  } finally {
    stop.release();
  }
}
