// Shared by the distributed trainer tests: a real nats-server, the real coordinator (in this process, so the test
// can read its status, or as an `easel coordinator` child process that a test can kill -9 and start again), the
// tiny synthetic dataset, and trainers as `easel trainer` child processes.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { openStore } from '../../src/data/store/index.ts';
import { listShards, readShard, statsKeyFor } from '../../src/data/webdataset/index.ts';
import { Coordinator, type CoordinatorStatus, type ShardInfo } from '../../src/coordinator/service.ts';
import { parseCoordinatorConfig } from '../../src/coordinator/config.ts';
import { parseRunConfig } from '../../src/trainer/config.ts';
import { stagePlan } from '../../src/coordinator/stages.ts';
import { openNats, closeNats } from '../../src/transport/connection.ts';
import { startNats, type NatsServer } from '../helpers/nats.ts';
import { SynthConfig, writeSynthDataset } from '../../src/data/synth/index.ts';
import { IMAGE_SIZE, tinyRun, type TinySteps } from './fixtures.ts';
import type { NatsConnection } from 'nats';
import { decodeHeader, HEADER_BYTES, type Dtype } from '../../src/transport/chunks.ts';

export interface Harness {
  nats: NatsServer;
  nc: NatsConnection;
  /** The in-process coordinator (throws when it runs as a process: use status()). */
  coordinator: Coordinator;
  /** Set when the coordinator runs as an `easel coordinator` child process. */
  coordinatorProcess?: CoordinatorProcess;
  /** The coordinator's /status, in either mode. */
  status(): Promise<CoordinatorStatus>;
  configPath: string;
  dir: string;
  run: string;
  /** `easel trainer --id <id>`; `resume` defaults to 'none' (a fresh run), `config` to the harness's run file. */
  spawnTrainer(id: string, opts?: { resume?: string; config?: string }): ChildProcess & { exited: Promise<number | null>; log: () => string };
  trace(id: string): Promise<Array<Record<string, any>>>;
  /**
   * Kills the trainers and stops the coordinator and NATS. Every call after the first returns the first one's
   * promise, so a test registers it with `t.after` (which runs even when the test times out) and may still call
   * it in its own `finally`; a trainer or coordinator started after it is refused.
   */
  stop(): Promise<void>;
}

/** `easel coordinator` as a child process: kill() is a kill -9; start() runs a new one for the same run. */
export interface CoordinatorProcess {
  /** http://host:port of the running one. */
  http: string;
  /** Everything every coordinator process wrote so far. */
  log(): string;
  kill(): Promise<void>;
  start(): Promise<void>;
  /** GET <http><path> as text. */
  get(path: string): Promise<string>;
}

/** Once `stopped()` (the harness was stopped), start() is refused: nothing would kill that coordinator. */
function spawnCoordinator(configPath: string, natsUrl: string, stopped: () => boolean): CoordinatorProcess {
  let log = '';
  let child: ChildProcess | undefined;
  let http = '';
  const start = async () => {
    if (stopped()) throw new Error('the harness is stopped: no coordinator is started');
    const c = spawn(process.execPath, ['bin/easel.js', 'coordinator', '--config', configPath, '--nats', natsUrl, '--http-port', '0', '--http-host', '127.0.0.1'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, EASEL_LOG: 'info' },
    });
    child = c;
    c.stderr!.on('data', (d) => (log += d));
    http = await new Promise<string>((resolve, reject) => {
      let out = '';
      c.stdout!.on('data', (d) => {
        log += d;
        out += d;
        const m = /"http":"([^"]+)"/.exec(out);
        if (m) resolve(m[1]);
      });
      c.once('exit', (code) => reject(new Error(`easel coordinator exited (code ${code}) before serving:\n${log}`)));
    });
  };
  return {
    get http() {
      return http;
    },
    log: () => log,
    start,
    async kill() {
      const c = child;
      child = undefined;
      if (!c || c.exitCode !== null || c.signalCode !== null) return;
      const gone = new Promise((r) => c.once('exit', r));
      c.kill('SIGKILL');
      await gone;
    },
    async get(path) {
      const res = await fetch(http + path);
      if (!res.ok) throw new Error(`GET ${path}: HTTP ${res.status}`);
      return res.text();
    },
  };
}

export async function shardInfos(dataUrl: string): Promise<ShardInfo[]> {
  const store = await openStore(dataUrl);
  try {
    const out: ShardInfo[] = [];
    for (const s of await listShards(store)) {
      let n = 0;
      for await (const _ of readShard(store, s.key)) n++;
      out.push({ key: s.key, samples: n });
    }
    return out;
  } finally {
    await store.close();
  }
}

/** `shards` × `perShard` synthetic samples (16×16 PNG) under `dir`, each tar with a filter-style stats file ({kept}). */
export async function writeDataset(dir: string, shards: number, perShard = 16): Promise<void> {
  const store = await openStore(dir);
  try {
    await writeSynthDataset(store, SynthConfig.parse({ shards, perShard, size: IMAGE_SIZE, seed: 3, badFraction: 0, evalPerPair: 0, format: 'png' }));
    for (const s of await listShards(store)) await store.put(statsKeyFor(s.key), Buffer.from(JSON.stringify({ kept: perShard, dropped: {} })));
  } finally {
    await store.close();
  }
}

export async function startHarness(
  dir: string,
  opts: {
    steps: TinySteps;
    shards?: number;
    perShard?: number;
    epochs?: number;
    heartbeatTimeoutMs?: number;
    minTrainers?: number;
    backend?: 'cpu' | 'wasm';
    batchSize?: number;
    coordinatorAsProcess?: boolean;
    /** Checkpoint cadence in steps (default: the fixtures' 2; 0 = only at the end of a stage). */
    checkpointEverySteps?: number;
    /** coordinator.wire: the gradient all-reduce's element type on the wire (default f32). */
    wire?: 'f32' | 'bf16' | 'f16';
    /** tokenizer.merges: BPE merges each trainer learns from the data (default 0: bytes). */
    tokenizerMerges?: number;
  },
): Promise<Harness> {
  const data = join(dir, 'data');
  await writeDataset(data, opts.shards ?? 2, opts.perShard);
  const run = `t${process.pid}`;
  const tiny = tinyRun(data, join(dir, 'ckpt'), opts.steps);
  const backend = opts.backend ?? 'cpu';
  const runFile = {
    ...tiny,
    name: run,
    backend,
    data: { ...tiny.data, batchSize: opts.batchSize ?? tiny.data.batchSize },
    checkpoint: { ...tiny.checkpoint, everySteps: opts.checkpointEverySteps ?? tiny.checkpoint.everySteps },
    ...(opts.tokenizerMerges ? { tokenizer: { merges: opts.tokenizerMerges } } : {}),
  };
  const coordinatorSection = { heartbeatTimeoutMs: opts.heartbeatTimeoutMs ?? 4000, leaseMs: 60_000, minTrainers: opts.minTrainers ?? 1, epochs: opts.epochs ?? 1, tickMs: 200, ...(opts.wire ? { wire: opts.wire } : {}) };
  const configPath = join(dir, 'run.yaml');
  await writeFile(configPath, stringify(opts.coordinatorAsProcess || opts.wire ? { ...runFile, coordinator: coordinatorSection } : runFile));
  const nats = await startNats();
  const nc = await openNats({ servers: nats.url, name: 'test' });
  let coordinator: Coordinator | undefined;
  let coordinatorProcess: CoordinatorProcess | undefined;
  let stopping: Promise<void> | undefined;
  if (opts.coordinatorAsProcess) {
    coordinatorProcess = spawnCoordinator(configPath, nats.url, () => stopping !== undefined);
    await coordinatorProcess.start();
  } else {
    const parsed = parseRunConfig(runFile);
    const { budgets, batchSizes } = stagePlan(parsed);
    coordinator = await Coordinator.start({ nc, run, config: parseCoordinatorConfig(coordinatorSection), budgets, batchSizes, shards: await shardInfos(data) });
  }
  const children: ChildProcess[] = [];
  return {
    nats,
    nc,
    get coordinator(): Coordinator {
      if (!coordinator) throw new Error('the coordinator runs as a process: use status() or coordinatorProcess');
      return coordinator;
    },
    coordinatorProcess,
    async status() {
      return coordinator ? coordinator.status() : (JSON.parse(await coordinatorProcess!.get('/status')) as CoordinatorStatus);
    },
    configPath,
    dir,
    run,
    spawnTrainer(id, { resume = 'none', config = configPath } = {}) {
      if (stopping) throw new Error(`the harness is stopped: trainer ${id} is not started`);
      let log = '';
      const args = ['bin/easel.js', 'trainer', '--nats', nats.url, '--run', run, '--config', config, '--id', id, '--resume', resume, '--heartbeat-ms', '300', '--collective-timeout-ms', '6000', '--trace', join(dir, `${id}.trace`)];
      const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, EASEL_LOG: 'info', EASEL_BACKEND: backend } });
      child.stdout!.on('data', (d) => (log += d));
      child.stderr!.on('data', (d) => (log += d));
      children.push(child);
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      return Object.assign(child, { exited, log: () => log });
    },
    async trace(id) {
      const text = await readFile(join(dir, `${id}.trace`), 'utf8').catch(() => '');
      return text.split('\n').filter(Boolean).map((l) => JSON.parse(l));
    },
    stop() {
      stopping ??= (async () => {
        for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
        await coordinator?.stop();
        await coordinatorProcess?.kill();
        await closeNats(nc);
        await nats.stop();
      })();
      return stopping;
    },
  };
}

/** What the trainers' rings put on the wire, counted by a subscriber of their chunk subjects (acks are not chunks). */
export interface RingTraffic {
  /** Bytes of the chunks of `op` (ar = all-reduce, ag = allGather, bc = broadcast) sent for steps `< beforeStep`. */
  bytes(op: 'ar' | 'ag' | 'bc', beforeStep?: number): number;
  /** Every all-reduce chunk's header and body size. */
  allReduceChunks: Array<{ dtype: Dtype; elements: number; bodyBytes: number }>;
  stop(): Promise<void>;
}

/** Starts counting the chunks of `h`'s rings; call before the trainers start. */
export function watchRing(h: Harness): RingTraffic {
  const seen: Array<{ op: string; step: number; bytes: number }> = [];
  const allReduceChunks: RingTraffic['allReduceChunks'] = [];
  // easel.<run>.g<generation>.s<step>.<op><seq>.<toRank>
  const sub = h.nc.subscribe(`easel.${h.run}.*.*.*.*`, {
    callback: (err, msg) => {
      if (err) return;
      const [, , , step, op] = msg.subject.split('.');
      seen.push({ op: op.slice(0, 2), step: Number(step.slice(1)), bytes: msg.data.byteLength });
      if (op.startsWith('ar')) {
        const hd = decodeHeader(msg.data);
        allReduceChunks.push({ dtype: hd.dtype, elements: hd.length, bodyBytes: msg.data.byteLength - HEADER_BYTES });
      }
    },
  });
  return {
    bytes: (op, beforeStep = Infinity) => seen.filter((x) => x.op === op && x.step < beforeStep).reduce((n, x) => n + x.bytes, 0),
    allReduceChunks,
    async stop() {
      await h.nc.flush();
      sub.unsubscribe();
    },
  };
}

/** The value of a metric without labels beyond `run` (or the first series of it), from Prometheus text. */
export function metricValue(text: string, name: string): number {
  return Number(new RegExp(`^${name}\\{[^}]*\\} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
}

/**
 * The run read its epoch (`shards` holding `samples`) exactly once although something failed on the way: every
 * shard done, samples_seen = expected, and every one of `ids` (trainers that took part in every applied step)
 * applied the same steps, whose samples add up to the epoch, with the same weights; the coordinator's step is the
 * last one applied. Returns the final status and the traces; `context` goes into every failure message.
 */
export async function assertEpochExactlyOnce(h: Harness, ids: string[], { shards, samples }: { shards: number; samples: number }, context: () => string) {
  const s = await h.status();
  const traces = await Promise.all(ids.map((id) => h.trace(id)));
  const why = () => `${JSON.stringify({ status: s, traces: Object.fromEntries(ids.map((id, i) => [id, traces[i]])) })}\n${context()}`;
  assert.deepEqual(s.shards, { done: shards, leased: 0, pending: 0 }, why());
  assert.equal(s.samples_seen, samples, why());
  assert.equal(s.expected_samples, samples);
  ids.forEach((id, i) => assert.equal(traces[i].reduce((n, r) => n + r.samples, 0), samples, `${id}'s steps applied other than ${samples} samples:\n${why()}`));
  for (const t of traces.slice(1)) {
    assert.deepEqual(t.map((r) => r.globalStep), traces[0].map((r) => r.globalStep), 'every rank applied the same steps');
    assert.deepEqual(t.map((r) => r.weights), traces[0].map((r) => r.weights), 'every rank holds the same weights after every step');
  }
  assert.equal(s.step, traces[0].at(-1)?.globalStep, `the coordinator's step is not the last one applied:\n${why()}`);
  return { status: s, traces, why };
}
