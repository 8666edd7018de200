// The run config a trainer of a coordinated run trains with: the coordinator's (it read and validated the run
// file), fetched with the `config` verb, so `easel trainer --nats <url> --run <id>` needs no file of its own. A
// trainer given --config as well must hold the very same config (compared by canonical hash); otherwise it would
// train a different model in the same ring, so it stops, naming the first field that differs. With the run file
// come the run's BPE merges, when it has any: the coordinator learnt them once, so trainers need not read the data
// to learn the same ones.
import type { NatsConnection } from 'nats';
import { UsageError } from '../cli/args.ts';
import { CoordinatorClient, CoordinatorRefusal } from '../coordinator/client.ts';
import { Tokenizer } from '../model/tokenizer.ts';
import { logger } from '../util/log.ts';
import { configDifferences, configHash, parseRunConfig, showDifference, type RunConfig } from './config.ts';

const log = logger('trainer');

export interface FetchRunConfigOptions {
  /** Keep asking this long while no coordinator answers (it may be starting or restarting). */
  patienceMs?: number;
  /** Per-request timeout. */
  timeoutMs?: number;
}

/** What a coordinator hands a trainer: the run config, and the run's tokenizer if the coordinator learnt one. */
export interface CoordinatedRun {
  config: RunConfig;
  tokenizer?: Tokenizer;
}

/** Asks the run's coordinator for its run config (retrying while none answers) and validates it. */
export async function fetchRunConfig(nc: NatsConnection, run: string, opts: FetchRunConfigOptions = {}): Promise<CoordinatedRun> {
  const patienceMs = opts.patienceMs ?? 60_000;
  const client = new CoordinatorClient(nc, run, 'config-fetch', opts.timeoutMs ?? 5000);
  const deadline = Date.now() + patienceMs;
  let told = false;
  for (;;) {
    try {
      const reply = await client.request<{ config: unknown; tokenizer?: unknown }>('config');
      const config = parseRunConfig(reply.config, `run config of the coordinator of run '${run}'`);
      if (reply.tokenizer === undefined) return { config };
      try {
        return { config, tokenizer: Tokenizer.fromJson(reply.tokenizer, `the coordinator of run '${run}'`) };
      } catch (err) {
        // An answer, just not one this trainer can use: asking again would not change it.
        throw new UsageError((err as Error).message);
      }
    } catch (err) {
      if (err instanceof CoordinatorRefusal || err instanceof UsageError || nc.isClosed()) throw err;
      if (Date.now() > deadline) {
        throw new Error(`no coordinator of run '${run}' answered within ${Math.round(patienceMs / 1000)} s (is \`easel coordinator\` running with name: ${run}?): ${(err as Error).message}`, { cause: err });
      }
      if (!told) log.info('waiting for the coordinator to answer', { run });
      told = true;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

/** Throws a UsageError naming the first differing field unless `local` (from `localName`) equals the coordinator's. */
export function checkSameRunConfig(coordinator: RunConfig, local: RunConfig, localName: string): void {
  if (configHash(coordinator) === configHash(local)) return;
  const diffs = configDifferences(local, coordinator);
  const first = diffs[0];
  const what = first ? showDifference(localName, 'the coordinator')(first) : `hash ${configHash(local)} ≠ ${configHash(coordinator)}`;
  const more = diffs.length > 1 ? ` (and ${diffs.length - 1} more field${diffs.length > 2 ? 's' : ''}: ${diffs.slice(1, 6).map((d) => d.path).join(', ')}${diffs.length > 6 ? ', …' : ''})` : '';
  throw new UsageError(`${localName} differs from the run config the coordinator was started with: ${what}${more}. Give the trainer the coordinator's run file, or leave out --config to use the coordinator's.`);
}

/** The config to train with: the coordinator's, checked against `local` when the trainer was given one. */
export async function coordinatedRunConfig(nc: NatsConnection, run: string, local?: { config: RunConfig; name: string }, opts?: FetchRunConfigOptions): Promise<CoordinatedRun> {
  let remote: CoordinatedRun;
  try {
    remote = await fetchRunConfig(nc, run, opts);
  } catch (err) {
    // A coordinator embedded without a run file (a library user, a test) has none to give: the trainer's own decides.
    if (!(local && err instanceof CoordinatorRefusal && err.reason === 'no-config')) throw err;
    log.warn('the coordinator holds no run config to compare with; training with the local run file', { run, file: local.name });
    return { config: local.config };
  }
  if (local) checkSameRunConfig(remote.config, local.config, local.name);
  log.info('run config', { run, hash: configHash(remote.config), from: local ? `${local.name} (same as the coordinator's)` : 'the coordinator', bpeMerges: remote.tokenizer?.merges.length ?? 0 });
  return remote;
}
