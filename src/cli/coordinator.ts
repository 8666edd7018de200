// `easel coordinator --config run.yaml --nats <url>`: owns one run until it is stopped (SIGINT/SIGTERM). Its
// state lives in NATS JetStream KV, so a coordinator started again with the same run file resumes the run.
import { UsageError, onSupervisorGone, parseFlags } from './args.ts';
import { loadRunConfig, resumeCompatibility, showDifference, type RunConfig } from '../trainer/config.ts';
import { parseCoordinatorConfig } from '../coordinator/config.ts';
import { discoverShards } from '../coordinator/dataset.ts';
import { Coordinator, startHttpServer } from '../coordinator/service.ts';
import { StateStore } from '../coordinator/store.ts';
import { stagePlan } from '../coordinator/stages.ts';
import { openStore } from '../data/store/index.ts';
import { Tokenizer, type TokenizerJson } from '../model/tokenizer.ts';
import { learnRunTokenizer } from '../trainer/vocab.ts';
import { closeNats, openNats } from '../transport/connection.ts';
import { logger } from '../util/log.ts';

const log = logger('coordinator');

const HELP = `usage: easel coordinator --config run.yaml [--nats <url>] [--http-port N] [--http-host H]

Owns one training run: trainers register, lease shards and report steps through NATS; state is kept in
JetStream KV (a restarted coordinator resumes). Serves /metrics, /healthz, /readyz and /status over HTTP.
The run file's \`coordinator\` section sets heartbeat/lease timeouts, min/max trainers, epochs and the HTTP port
(see docs/coordinator.md); the run id is the run file's \`name\`.

  --config      run file (YAML)
  --nats        NATS server URL (default nats://127.0.0.1:4222)
  --http-port   overrides coordinator.httpPort (0: any free port)
  --http-host   overrides coordinator.httpHost
`;

/**
 * A run started before keeps the run file it was started with in its JetStream state: a restart with another model
 * architecture is refused (the run's checkpoints and trainers hold the old one), other changes are logged; then
 * the new file is stored.
 */
async function adoptRunConfig(state: StateStore, config: RunConfig, file: string): Promise<void> {
  const saved = await state.runConfig();
  if (saved !== undefined) {
    const r = resumeCompatibility(saved, config);
    const show = showDifference('the run', file);
    if (r.incompatible.length) {
      throw new UsageError(`run ${config.name} was started with another model architecture than ${file} has:\n${r.incompatible.map(show).join('\n')}\n(keep the run's model settings, or give the run a new name)`);
    }
    if (r.changed.length) log.warn(`run ${config.name} continues with ${r.changed.length} changed setting(s); restart its trainers so they use them: ${r.changed.map(show).join('; ')}`);
  }
  await state.putRunConfig(config);
}

/**
 * A run with `tokenizer.merges` learns them once, here, and keeps them in its JetStream state; trainers get them
 * with the run file instead of each reading the data to learn the same merges. A restarted coordinator serves the
 * stored ones (a different merge count is refused above, with the rest of the architecture).
 */
async function adoptTokenizer(state: StateStore, config: RunConfig): Promise<TokenizerJson | undefined> {
  if (config.tokenizer.merges === 0) return undefined;
  const saved = await state.tokenizer();
  if (saved !== undefined) return Tokenizer.fromJson(saved, `the JetStream state of run ${config.name}`).toJson();
  const learnt = (await learnRunTokenizer(config)).toJson();
  await state.putTokenizer(learnt);
  return learnt;
}

export async function run(argv: string[]): Promise<number> {
  const parsed = parseFlags(argv, { config: { type: 'string' }, nats: { type: 'string' }, 'http-port': { type: 'string' }, 'http-host': { type: 'string' } }, HELP);
  if (!parsed) return 0;
  const v = parsed.values;
  if (!v.config) throw new UsageError(`--config is required\n\n${HELP}`);
  const runConfig = await loadRunConfig(v.config);
  const config = parseCoordinatorConfig({
    ...runConfig.coordinator,
    ...(v['http-port'] !== undefined ? { httpPort: Number(v['http-port']) } : {}),
    ...(v['http-host'] !== undefined ? { httpHost: v['http-host'] } : {}),
  });
  const store = await openStore(runConfig.data.train);
  const dataset = await discoverShards(store).finally(() => store.close());
  const nc = await openNats({ servers: v.nats ?? 'nats://127.0.0.1:4222', name: `coordinator-${runConfig.name}` });
  let tokenizer: TokenizerJson | undefined;
  try {
    const state = await StateStore.open(nc, runConfig.name);
    await adoptRunConfig(state, runConfig, v.config);
    tokenizer = await adoptTokenizer(state, runConfig);
  } catch (err) {
    await closeNats(nc);
    throw err;
  }
  const { budgets, batchSizes } = stagePlan(runConfig);
  let superseded: ((by: { id: string; term: number }) => void) | undefined;
  const c = await Coordinator.start({ nc, run: runConfig.name, config, runConfig, tokenizer, budgets, batchSizes, shards: dataset.shards, filterDropped: dataset.dropped, onSuperseded: (by) => superseded?.(by) });
  const http = await startHttpServer(c, { port: config.httpPort, host: config.httpHost });
  // One line on stdout, for launchers and scripts: where to scrape and ask.
  console.log(JSON.stringify({ run: runConfig.name, http: http.url, shards: dataset.shards.length }));
  log.info('serving', { http: http.url, run: runConfig.name });
  let unwatch = () => {};
  const code = await new Promise<number>((resolve) => {
    process.once('SIGINT', () => resolve(0));
    process.once('SIGTERM', () => resolve(0));
    unwatch = onSupervisorGone(() => resolve(0));
    superseded = (by) => {
      console.error(`easel coordinator: another coordinator (${by.id}, term ${by.term}) took over run ${runConfig.name}; this one stopped`);
      resolve(3);
    };
  });
  unwatch();
  log.info('stopping');
  await c.stop();
  await http.close();
  await closeNats(nc);
  return code;
}
