// `easel coordinator --config run.yaml --nats <url>`: owns one run until it is stopped (SIGINT/SIGTERM). Its
// state lives in NATS JetStream KV, so a coordinator started again with the same run file resumes the run.
import { UsageError, parseFlags } from './args.ts';
import { loadRunConfig } from '../trainer/config.ts';
import { parseCoordinatorConfig } from '../coordinator/config.ts';
import { discoverShards } from '../coordinator/dataset.ts';
import { Coordinator, startHttpServer } from '../coordinator/service.ts';
import { openStore } from '../data/store/index.ts';
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
  const budgets = { clip: runConfig.stages.clip.steps, prior: runConfig.stages.prior.steps, decoder: runConfig.stages.decoder.steps };
  const c = await Coordinator.start({ nc, run: runConfig.name, config, runConfig, budgets, shards: dataset.shards, filterDropped: dataset.dropped });
  const http = await startHttpServer(c, { port: config.httpPort, host: config.httpHost });
  // One line on stdout, for launchers and scripts: where to scrape and ask.
  console.log(JSON.stringify({ run: runConfig.name, http: http.url, shards: dataset.shards.length }));
  log.info('serving', { http: http.url, run: runConfig.name });
  await new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  log.info('stopping');
  await c.stop();
  await http.close();
  await closeNats(nc);
  return 0;
}
