// A data-parallel trainer of a run owned by a coordinator (`easel trainer`). It registers, heartbeats, and waits
// for a generation to give it a rank; then, per step, it reads a batch from the shard it leased, computes the
// gradient with the single-process step (step.ts), all-reduces it over NATS with the transport's ring, applies the
// identical update on every rank, and reports the samples it consumed. Rank 0 writes checkpoints.
//
// One all-reduced vector per step carries, after the gradient, five numbers summed over the ranks and two per rank
// (the shard and offset it read, so peers can report each other's progress):
//   [ n·grad…, n, n·loss, stop, dataDone, epochDone, (shard, offset) per rank ]
// where n is the samples this rank contributed (0 when it has no shard), so the update is the sample-weighted mean
// gradient even when ranks have unequal or empty batches; `stop` makes every rank stop after the same step (Ctrl-C
// on any); `epochDone` = W means no rank has a shard of the epoch left, so all of them move to the next epoch
// together; and `dataDone` = W means the run's epochs are read and the run ends.
// With `coordinator.wire` bf16 or f16 the gradient travels in 16 bits, which would round those numbers: each rank
// then all-gathers its seven (float32, exact) before the all-reduce, which carries the gradient alone.
//
// A generation change (heartbeat reply, or a collective that times out) abandons the step in flight: nothing of it
// is applied or reported; the next generation starts with rank 0 broadcasting its state (weights, EMA, Adam state,
// step counters), and every rank re-reads its shard from the last offset it reported.
//
// CLIP's contrastive loss uses the global batch as negatives, as in one process: before the all-reduce, each rank
// all-gathers every rank's embeddings of the step (padded to the batch size, with a row count: ranks may hold fewer
// rows or none), then differentiates the global-batch loss through its own rows only (clipGlobalLoss in models.ts,
// the gradient scaling in losses.ts). The gather and the all-reduce of a step share its step number and are told
// apart by their order (the ring's sequence number); a gather that times out abandons the step like the reduce.
//
// Reproducible: with the same world size, a run resumed from a checkpoint applies the same batches in the same
// order as the uninterrupted run, so its weights match bit for bit on a deterministic backend. Three things make
// it so (docs/coordinator.md, Determinism): the coordinator assigns shards by rank (shard i to rank i mod W), not
// by whose request comes first; an epoch turns over when the all-reduce says every rank is out of shards, never
// because of the order in which requests arrive; and rank 0's checkpoints carry the lease table's offsets at the
// checkpointed step, which rank 0 of the resumed run hands back to the coordinator (`rewind`) before any step.
// A generation change during an epoch keeps exactly-once but not reproducibility (a survivor finishes its shard
// even if the new plan gives that shard's residue to another rank).
import { appendFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { hostname } from 'node:os';
import * as tf from '@tensorflow/tfjs-core';
import type { NatsConnection } from 'nats';
import { shardBatches, type Batch, type Loader } from '../data/loader.ts';
import { openStore, type ObjectStore } from '../data/store/index.ts';
import { initBackend } from '../model/backend.ts';
import { CoordinatorClient, CoordinatorRefusal } from '../coordinator/client.ts';
import { coordSubject, type Verb } from '../coordinator/subjects.ts';
import { CollectiveAbortedError, CollectiveTimeoutError, openRing, type Ring } from '../transport/allreduce.ts';
import { closeNats, natsCredentials, openNats } from '../transport/connection.ts';
import { logger } from '../util/log.ts';
import { deriveSeed } from '../util/rng.ts';
import { checkResumable, isFleetCursor, optimizerTensors, readCheckpoint, restoreOptimizer, snapshotCheckpoint, writeSnapshot, type CheckpointData, type FleetCursor } from './checkpoint.ts';
import { STAGES, stageBatchSize, type RunConfig, type StageName } from './config.ts';
import type { Tokenizer } from '../model/tokenizer.ts';
import { checkpointTokenizer, learnRunTokenizer, sameTokenizer, tokenizerFingerprint, tokenizerManifest } from './vocab.ts';
import { SampleLog } from './samples.ts';
import { Validation } from './validation.ts';
import { buildModels, clipGlobalLoss, disposeModels, disposeStageBatch, SEED, stageLoss, stageParams, toStageBatch, type Models } from './models.ts';
import type { SafeTensor } from './safetensors.ts';
import { learningRateAt } from './schedule.ts';
import { trainStep } from './step.ts';
import { disposeRunEma, restoreRunWeights, runEma, runWeights, type RunEma } from './train.ts';

const log = logger('trainer');

export interface DistributedOptions {
  /** NATS server URL(s). */
  nats: string | string[];
  /** Run id: the coordinator's `--run`. */
  run: string;
  config: RunConfig;
  /** The run's BPE merges as the coordinator hands them out (default: learnt here, as every rank would). */
  tokenizer?: Tokenizer;
  /** This trainer's id (default: host-pid). */
  id?: string;
  /** 'latest' (default: continue from checkpoint.url if one exists), 'none', or a checkpoint URL. */
  resume?: string;
  heartbeatMs?: number;
  /** A collective with no progress for this long is abandoned (a peer died). */
  collectiveTimeoutMs?: number;
  /** Aborting stops every rank after the same step; rank 0 writes a checkpoint. */
  signal?: AbortSignal;
  /** Appends one JSON line per applied step: {rank, generation, step, stage, samples, own, loss, t, weights} (tests, bench). */
  traceFile?: string;
  onStep?: (r: DistributedStepReport) => void;
}

export interface DistributedStepReport {
  rank: number;
  world: number;
  generation: number;
  stage: StageName;
  stageStep: number;
  globalStep: number;
  /** Sample-weighted mean loss over all ranks. */
  loss: number;
  /** Samples every rank together contributed to this step. */
  samples: number;
  skipped: boolean;
  /** Rank 0 only: the stage's held-out loss after this step, when a validation was due (validation.every). */
  validationLoss?: number;
}

export interface DistributedResult {
  globalStep: number;
  /** Why the loop ended. */
  ended: 'finished' | 'data-exhausted' | 'stopped' | 'run-done';
  /** Samples this trainer contributed to applied steps. */
  samples: number;
  generations: number;
  lastCheckpoint: string | undefined;
}

/** Thrown out of the reduce when every rank's batch was empty: nothing to apply. */
class EmptyStep extends Error {
  constructor(
    readonly allDone: boolean,
    /** Every rank is out of shards of the epoch: all move to the next one. */
    readonly epochDone: boolean,
  ) {
    super('no rank had samples for this step');
  }
}

/** Where the coordinator says this trainer stands (register/heartbeat reply). */
interface WhereIs {
  generation: number;
  rank: number | null;
  worldSize: number;
  /** Trainer ids in rank order. */
  ring: string[];
  phase: 'waiting' | 'training' | 'done';
  /** The coordinator's open epoch. */
  epoch?: number;
}

interface LeaseReply {
  lease: { shard: number; key: string; epoch: number; fromSample: number; samples: number } | null;
  /** The run's epochs are all read. */
  done: boolean;
  /** The epoch asked for is not finished yet (a peer's last report is in flight): ask again. */
  retry?: boolean;
}


type Reply = { ok: true } & Record<string, unknown>;

/** The coordinator's client, retrying while no coordinator answers (it may be restarting); refusals are thrown. */
class Coordinator {
  private readonly client: CoordinatorClient;

  constructor(
    private readonly nc: NatsConnection,
    run: string,
    trainer: string,
    private readonly patienceMs = 60_000,
  ) {
    this.client = new CoordinatorClient(nc, run, trainer);
  }

  /** `patienceMs` overrides the client's for this call (0: one attempt). */
  async call<T = Reply>(verb: Verb, body: Record<string, unknown> = {}, patienceMs = this.patienceMs): Promise<T & Reply> {
    const deadline = Date.now() + patienceMs;
    for (;;) {
      try {
        return await this.client.request<T & Reply>(verb, body);
      } catch (err) {
        if (err instanceof CoordinatorRefusal || Date.now() > deadline || this.nc.isClosed()) throw err;
        log.debug('coordinator not answering, retrying', { verb, error: (err as Error).message });
        await sleep(250);
      }
    }
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// Heartbeats come from a worker thread with its own NATS connection: a training step blocks the main thread for
// as long as the math takes (seconds on a loaded CPU), and a trainer must not be declared dead for computing.
const HEARTBEAT_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { connect, credsAuthenticator } = require(workerData.natsPath);
let stopped = false;
let go;
const started = new Promise((r) => (go = r));
parentPort.on('message', (m) => {
  if (m === 'stop') stopped = true;
  go();
});
(async () => {
  const { creds, source, ...auth } = workerData.credentials ?? {};
  if (creds) auth.authenticator = credsAuthenticator(new TextEncoder().encode(creds));
  const nc = await connect({ ...auth, servers: workerData.servers, name: workerData.name + '-heartbeat', maxReconnectAttempts: -1, reconnectTimeWait: 250 });
  parentPort.postMessage('connected');
  await started;
  while (!stopped) {
    try {
      const msg = await nc.request(workerData.subject, JSON.stringify({ trainer: workerData.trainer }), { timeout: 5000 });
      parentPort.postMessage(new TextDecoder().decode(msg.data));
    } catch (err) {
      parentPort.postMessage(JSON.stringify({ ok: false, error: String(err), reason: 'no-reply' }));
    }
    await new Promise((r) => setTimeout(r, workerData.intervalMs));
  }
  await nc.drain();
})().catch((err) => parentPort.postMessage(JSON.stringify({ ok: false, error: String(err), reason: 'worker-failed' })));
`;

/**
 * Starts the heartbeat thread, connected but silent until start(): starting a thread, loading NATS in it and
 * connecting can take seconds on a loaded machine, which must come before registering, not after (all of it would
 * be silence to the coordinator). `onReply` gets every reply (parsed JSON); start() resolves once the first one was
 * handled.
 */
function startHeartbeats(
  opts: { servers: string | string[]; run: string; trainer: string; intervalMs: number },
  onReply: (r: { ok: boolean; reason?: string; error?: string } & Partial<WhereIs>) => void,
): { connected: Promise<void>; start: () => Promise<void>; stop: () => Promise<void> } {
  const natsPath = createRequire(import.meta.url).resolve('nats');
  // The same servers and credentials (NATS_CREDS, NATS_USER/NATS_PASSWORD, NATS_TOKEN or URL userinfo) as openNats.
  const { servers, credentials } = natsCredentials(opts.servers);
  const worker = new Worker(HEARTBEAT_WORKER, { eval: true, workerData: { ...opts, servers, credentials, natsPath, name: `trainer-${opts.trainer}`, subject: coordSubject(opts.run, 'heartbeat') } });
  // Either settles on a failure too: the failure is logged, and the trainer goes on as it would without beats.
  let up: () => void = () => {};
  let first: () => void = () => {};
  const connected = new Promise<void>((resolve) => (up = resolve));
  const beating = new Promise<void>((resolve) => (first = resolve));
  worker.on('message', (text: string) => {
    up();
    if (text === 'connected') return;
    onReply(JSON.parse(text));
    first();
  });
  worker.on('error', (err) => {
    log.error('heartbeat thread failed', { error: String(err) });
    up();
    first();
  });
  const start = async () => {
    worker.postMessage('start');
    await beating;
  };
  const stop = async () => {
    worker.postMessage('stop');
    await sleep(50);
    await worker.terminate();
  };
  return { connected, start, stop };
}

/** The batches of the shards this trainer leases, one shard at a time; rewinds to the last reported offset. */
class ShardFeed {
  private lease: LeaseReply['lease'] = null;
  /** Offset of the lease's shard the coordinator has recorded (samples before it were applied). */
  private reported = 0;
  private batchSize = 0;
  private loader: Loader | undefined;
  /** Set when the coordinator had no shard left for us and said the epochs are done. */
  exhausted = false;
  /** The epoch this trainer reads; every rank of a generation reads the same one (rank 0's, from the sync). */
  epoch = 0;
  /** The coordinator had no shard of `epoch` left for this rank: it steps with empty batches until the epoch turns. */
  epochDone = false;
  /** Samples this trainer contributed to applied steps. */
  samples = 0;

  constructor(
    private readonly coord: Coordinator,
    private readonly store: ObjectStore,
    private readonly config: RunConfig,
  ) {}

  /** The next batch of `batchSize`, or undefined when this rank has no shard of the epoch left. */
  async next(batchSize: number): Promise<{ batch: Batch; shard: number; key: string } | undefined> {
    if (batchSize !== this.batchSize) await this.rewind();
    this.batchSize = batchSize;
    for (;;) {
      if (!this.lease && (this.epochDone || !(await this.acquire()))) return undefined;
      const lease = this.lease!;
      if (!this.loader) {
        this.loader = shardBatches({
          store: this.store,
          shard: lease.key,
          epoch: lease.epoch,
          startSample: this.reported,
          batchSize,
          imageSize: this.config.data.imageSize,
          seed: deriveSeed(this.config.seed, SEED.data),
          prefetch: this.config.data.prefetch,
        });
      }
      const r = await this.loader.next();
      if (!r.done) return { batch: r.value, shard: lease.shard, key: lease.key };
      // The shard ended without a batch reaching its last sample (its tail was unreadable): close the lease.
      await this.finishShard(lease.samples);
    }
  }

  /** After an applied step: records the batch's samples with the coordinator (completing the shard at its end). */
  async applied(batch: Batch, shard: number): Promise<void> {
    const lease = this.lease;
    if (!lease || lease.shard !== shard) return;
    this.samples += batch.cursor.sample - this.reported;
    if (batch.cursor.sample >= lease.samples) return this.finishShard(lease.samples);
    try {
      await this.coord.call('progress', { shard, offset: batch.cursor.sample });
      this.reported = batch.cursor.sample;
    } catch (err) {
      await this.lost(err);
    }
  }

  /** Drops read-ahead batches: the next batch starts at the last reported offset (after an abandoned step). */
  async rewind(): Promise<void> {
    await this.loader?.return?.();
    this.loader = undefined;
  }

  /** Forgets the lease (the coordinator took it back: we left or were declared dead). */
  async drop(): Promise<void> {
    await this.rewind();
    this.lease = null;
  }

  /** Every rank was out of shards in the same step: read the next epoch. */
  nextEpoch(): void {
    this.epoch++;
    this.epochDone = false;
  }

  /** A new generation starts reading `epoch` (rank 0's): ask again for a shard, the plan may give this rank one. */
  enter(epoch: number): void {
    this.epoch = epoch;
    this.epochDone = false;
    this.exhausted = false;
  }

  /** Gives the lease back implicitly (the coordinator releases it when we leave). */
  async close(): Promise<void> {
    await this.rewind();
  }

  private async acquire(): Promise<boolean> {
    let r = await this.coord.call<LeaseReply>('lease', { epoch: this.epoch });
    // Every rank decided the epoch is over, but the coordinator has not seen a peer's last `complete` yet.
    while (!r.lease && r.retry) {
      await sleep(50);
      r = await this.coord.call<LeaseReply>('lease', { epoch: this.epoch });
    }
    if (!r.lease) {
      this.exhausted = r.done;
      this.epochDone = true;
      return false;
    }
    this.exhausted = false;
    this.lease = r.lease;
    this.reported = r.lease.fromSample;
    log.info('leased shard', { shard: r.lease.shard, key: r.lease.key, epoch: r.lease.epoch, from: r.lease.fromSample });
    return true;
  }

  private async finishShard(end: number): Promise<void> {
    const lease = this.lease!;
    await this.rewind();
    this.lease = null;
    try {
      await this.coord.call('complete', { shard: lease.shard, samples: end - lease.fromSample });
    } catch (err) {
      await this.lost(err);
    }
  }

  /** The coordinator no longer counts this lease as ours (it expired): drop it and lease anew. */
  private async lost(err: unknown): Promise<void> {
    if (!(err instanceof CoordinatorRefusal)) throw err;
    log.warn('lease lost; its samples since the last report will be read again by the next lessee', { error: err.message });
    await this.rewind();
    this.lease = null;
  }
}

/** Where a run stands: the state rank 0 broadcasts at the start of every generation. */
interface Progress {
  stage: number;
  stageStep: number;
  globalStep: number;
  skipped: Record<string, number>;
  loss: Record<string, number>;
}

/** FNV-1a over the bytes of every trainable weight and EMA weight (divergence checks in tests and logs). */
export function weightsChecksum(models: Models, ema: RunEma): string {
  let h = 0x811c9dc5;
  for (const [, t] of runWeights(models, ema)) {
    const a = t.dataSync() as Float32Array;
    const bytes = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i], 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}

export async function trainDistributed(opts: DistributedOptions): Promise<DistributedResult> {
  const { config } = opts;
  await initBackend(config.backend === 'auto' ? undefined : config.backend);
  const id = opts.id ?? `${hostname()}-${process.pid}`;
  // The coordinator's merges, else learnt here from the same first captions as every other rank (resume() checks).
  // Before connecting, so a failure leaves no NATS connection open behind it.
  const tokenizer = opts.tokenizer ?? (await learnRunTokenizer(config));
  const validation = await Validation.open(config);
  const nc = await openNats({ servers: opts.nats, name: `trainer-${id}` });
  const models = buildModels(config, tokenizer);
  const ema = runEma(models);
  const dataStore = await openStore(config.data.train);
  try {
    return await new DistributedTrainer(opts, id, nc, models, ema, dataStore, validation).run();
  } finally {
    disposeModels(models);
    disposeRunEma(ema);
    await dataStore.close();
    await closeNats(nc);
  }
}

class DistributedTrainer {
  private readonly coord: Coordinator;
  private readonly sampleLog: SampleLog | undefined;
  private readonly feed: ShardFeed;
  private progress: Progress = { stage: 0, stageStep: 0, globalStep: 0, skipped: {}, loss: {} };
  private where: WhereIs = { generation: 0, rank: null, worldSize: 0, ring: [], phase: 'waiting' };
  private ring: Ring | undefined;
  private optimizer: { stage: number; opt: tf.Optimizer } | undefined;
  private resumedOptimizer: { stage: number; stageStep: number; saved: Map<string, SafeTensor> } | undefined;
  private generations = 0;
  private lastCheckpoint: string | undefined;
  private lastSaved = performance.now();
  private savedStep = -1;
  /** The Adam state came from rank 0's broadcast: restore it even at stage step 0. */
  private forceRestore = false;
  /** The generation whose step was abandoned: not entered again. */
  private abandoned = -1;
  /** The registration in flight after the coordinator forgot this trainer (one at a time). */
  private reregistering: Promise<void> | undefined;
  /** Trainer ids of the current generation, in rank order. */
  private ringIds: string[] = [];
  /** The data cursor of the checkpoint this trainer resumed from, handed to the coordinator if it becomes rank 0. */
  private rewindTo: { step: number; cursor: FleetCursor['fleet'] } | undefined;

  constructor(
    private readonly opts: DistributedOptions,
    private readonly id: string,
    private readonly nc: NatsConnection,
    private readonly models: Models,
    private readonly ema: RunEma,
    dataStore: ObjectStore,
    /** Rank 0 validates (every rank reads the held-out pairs: any of them may become rank 0). */
    private readonly validation: Validation | undefined,
  ) {
    this.coord = new Coordinator(nc, opts.run, id);
    this.sampleLog = SampleLog.open(opts.config);
    this.feed = new ShardFeed(this.coord, dataStore, opts.config);
  }

  async run(): Promise<DistributedResult> {
    const beats = startHeartbeats({ servers: this.opts.nats, run: this.opts.run, trainer: this.id, intervalMs: this.opts.heartbeatMs ?? 1000 }, (r) => this.onHeartbeat(r));
    let ended: DistributedResult['ended'] | undefined;
    let waitingSince = performance.now();
    let registered = false;
    try {
      await this.resume();
      await beats.connected;
      // A trainer restarted under the same id (a resumed run) holds no lease in memory: give back whatever the
      // coordinator still has leased to that id, so those shards are read again from their reported offsets.
      await this.coord.call('leave').catch(() => undefined);
      this.where = await this.coord.call<WhereIs>('register');
      registered = true;
      log.info('registered', { trainer: this.id, run: this.opts.run, generation: this.where.generation, waiting: this.where.rank === null });
      await beats.start();
      while (!ended) {
        if (this.opts.signal?.aborted) ended = 'stopped';
        else if (this.where.phase === 'done') ended = 'run-done';
        else if (this.where.rank === null || this.where.generation === 0 || this.where.generation === this.abandoned) {
          // After an abandoned step the ranks meet again only in a new generation; if none forms (every peer is
          // alive, one was just slow), leaving and registering again makes one.
          const stuck = this.where.rank !== null && this.where.generation === this.abandoned;
          if (stuck && performance.now() - waitingSince > 3 * (this.opts.heartbeatMs ?? 1000) + 2000) {
            log.warn('no new generation after an abandoned step: leaving and registering again', { generation: this.abandoned });
            await this.feed.drop(); // leaving returns our lease to pending
            await this.coord.call('leave');
            this.where = await this.coord.call<WhereIs>('register');
            this.abandoned = -1;
          }
          await sleep(100);
        } else {
          ended = await this.generation();
          waitingSince = performance.now();
        }
      }
    } finally {
      await this.writing; // a checkpoint still being written (its failure was logged)
      await beats.stop();
      this.ring?.close();
      await this.feed.close();
      this.optimizer?.opt.dispose();
      // One attempt, not a minute of retries: a trainer asked to stop must not hang on a coordinator or NATS server
      // that is gone, and one that cannot say goodbye is declared dead after the heartbeat timeout anyway.
      if (registered) await this.coord.call('leave', {}, 0).catch((err) => log.warn('could not leave the run (the coordinator will declare this trainer dead)', { error: String(err) }));
    }
    log.info('trainer done', { ended, global_step: this.progress.globalStep, samples: this.feed.samples, resyncs: this.resyncs });
    return { globalStep: this.progress.globalStep, ended, samples: this.feed.samples, generations: this.generations, lastCheckpoint: this.lastCheckpoint };
  }

  private onHeartbeat(r: { ok: boolean; reason?: string; error?: string } & Partial<WhereIs>): void {
    if (r.ok) {
      this.where = r as WhereIs;
      if (this.ring && (r.generation !== this.ring.generation || r.rank !== this.ring.rank)) this.ring.abort(`generation ${r.generation} formed`);
    } else if (r.reason === 'unknown-trainer') {
      if (this.reregistering) return;
      this.ring?.abort('re-registering');
      this.registerAgain('heartbeat').catch((err) => log.warn('registering again failed', { error: String(err) }));
    } else log.warn('heartbeat failed', { error: r.error });
  }

  /**
   * Declared dead while alive (silent for longer than the heartbeat timeout, e.g. a stalled process): the
   * coordinator took our leases back and formed a generation without us. Drop the lease and register again, to
   * enter the next generation; a heartbeat and a lease request that both learn it share one registration.
   */
  private registerAgain(via: string): Promise<void> {
    this.reregistering ??= (async () => {
      log.warn('the coordinator forgot this trainer (declared dead?): registering again', { via, step: this.progress.globalStep });
      await this.feed.drop(); // a dead trainer's leases went back to pending
      this.where = await this.coord.call<WhereIs>('register');
    })().finally(() => (this.reregistering = undefined));
    return this.reregistering;
  }

  /** Trains within one generation; returns how the run ended, or undefined when the generation changed. */
  private async generation(): Promise<DistributedResult['ended'] | undefined> {
    const { generation, rank, worldSize, ring: ids } = this.where;
    this.ringIds = [...ids];
    const ring = openRing(this.nc, { run: this.opts.run, generation, rank: rank!, world: worldSize }, { timeoutMs: this.opts.collectiveTimeoutMs ?? 15_000, wire: this.opts.config.coordinator.wire });
    this.ring = ring;
    this.generations++;
    log.info('generation', { generation, rank, world: worldSize });
    try {
      if (rank === 0) await this.catchUp();
      const rewound = rank === 0 ? await this.rewindRun(generation) : false;
      await this.sync(ring, rewound);
      this.rewindTo = undefined; // rank 0's state (and data position) is the run's now
      await this.feed.rewind();
      // A new generation (a joiner or a departure) is met at a step boundary.
      while (this.where.generation === ring.generation && this.where.rank === ring.rank) {
        const ended = await this.step(ring);
        if (ended) return ended;
      }
      return undefined;
    } catch (err) {
      if (err instanceof CollectiveAbortedError || err instanceof CollectiveTimeoutError) {
        log.warn('step abandoned: membership changed', { generation, step: this.progress.globalStep, error: err.message });
        this.abandoned = generation;
        return undefined;
      }
      if (err instanceof CoordinatorRefusal && err.reason === 'unknown-trainer') {
        // A lease request learnt it before a heartbeat did: register again rather than fail.
        await this.registerAgain('lease');
        this.abandoned = generation;
        return undefined;
      }
      throw err;
    } finally {
      ring.close();
      this.ring = undefined;
    }
  }

  /** One step of the current stage. Returns how the run ended, if it did. */
  private async step(ring: Ring): Promise<DistributedResult['ended'] | undefined> {
    const { config } = this.opts;
    const p = this.progress;
    while (p.stage < STAGES.length && p.stageStep >= config.stages[STAGES[p.stage]].steps) {
      p.stage++;
      p.stageStep = 0;
    }
    if (p.stage >= STAGES.length) {
      await this.save(true, true);
      return 'finished';
    }
    const stage = STAGES[p.stage];
    const sc = config.stages[stage];
    const params = stageParams(this.models, stage);
    const optimizer = await this.stageOptimizer(p.stage, params);
    const batchSize = stageBatchSize(config, stage);
    const t0 = performance.now();
    const next = await this.feed.next(batchSize);
    const dataWait = (performance.now() - t0) / 1000;
    const n = next?.batch.captions.length ?? 0;
    const seed = deriveSeed(config.seed, SEED.step, p.stage, p.stageStep, ring.rank);
    const stopping = this.opts.signal?.aborted === true;
    let globalLoss = NaN;
    let globalSamples = 0;
    let stop = false;
    let arSeconds = 0;
    // What the other ranks consumed in this step; reported for them too, so a peer killed between the all-reduce
    // and its own report does not get its samples read twice.
    const peers: { trainer: string; shard: number; offset: number }[] = [];
    const W = ring.world;
    // A 16-bit wire compresses the gradient all-reduce only: the ring's allGather (CLIP's embeddings, the step's
    // numbers below) and broadcast (the weight sync) are always float32, so every rank's global-batch loss and state
    // stay exact; the embeddings are batch × embedDim floats per rank, small beside the gradient.
    const exact = config.coordinator.wire === 'f32';
    /** The all-reduced numbers of the step, summed over ranks; `at(q)` is rank q's (shard + 1, offset). */
    const settle = (total: number, stops: number, dataDone: number, epochDone: number, at: (q: number) => [number, number]): void => {
      stop = stops > 0;
      if (total === 0) throw new EmptyStep(dataDone === W, epochDone === W);
      globalSamples = total;
      for (let q = 0; q < W; q++) {
        const [shard1, offset] = at(q);
        if (q !== ring.rank && shard1 > 0) peers.push({ trainer: this.ringIds[q], shard: shard1 - 1, offset });
      }
    };
    const reduce = async (flat: Float32Array): Promise<Float32Array> => {
      const L = flat.length;
      // This rank's numbers of the step: n, n·loss, stop, dataDone, epochDone, then its shard + 1 and offset.
      const own = [n, localLoss * n, stopping ? 1 : 0, n === 0 && this.feed.exhausted ? 1 : 0, n === 0 && this.feed.epochDone ? 1 : 0, next ? next.shard + 1 : 0, next ? next.batch.cursor.sample : 0];
      // The gradient, weighted by this rank's samples; with f32 the numbers follow it in the same vector (see the header).
      const v = new Float32Array(exact ? L + 5 + 2 * W : L);
      for (let i = 0; i < L; i++) v[i] = flat[i] * n;
      if (exact) {
        v.set(own.slice(0, 5), L);
        v.set(own.slice(5), L + 5 + 2 * ring.rank);
        const r = await ring.allReduce(v, { step: p.globalStep });
        arSeconds = r.seconds;
        // The ring returns means over ranks; multiply back to sums (rounded: these are small integers).
        const m = r.values;
        const sum = (i: number) => Math.round(m[i] * W);
        settle(sum(L), m[L + 2], sum(L + 3), sum(L + 4), (q) => [sum(L + 5 + 2 * q), sum(L + 6 + 2 * q)]);
        globalLoss = m[L + 1] / m[L];
        if (r.nonFinite) return new Float32Array(L).fill(NaN);
        const out = new Float32Array(L);
        for (let i = 0; i < L; i++) out[i] = m[i] / m[L];
        return out;
      }
      // A 16-bit wire would round the numbers with the gradient (a sample count, a shard offset), so they are
      // all-gathered exactly first; a step in which no rank has samples then sends no gradient at all.
      const t = performance.now();
      const all = await ring.allGather(Float32Array.from(own), { step: p.globalStep });
      const sum = (k: number) => Array.from({ length: W }, (_, q) => all[own.length * q + k]).reduce((a, b) => a + b, 0);
      settle(sum(0), sum(2), sum(3), sum(4), (q) => [all[own.length * q + 5], all[own.length * q + 6]]);
      globalLoss = sum(1) / sum(0);
      const r = await ring.allReduce(v, { step: p.globalStep, inPlace: true });
      arSeconds = (performance.now() - t) / 1000;
      if (r.nonFinite || !Number.isFinite(globalLoss)) return v.fill(NaN);
      // The mean of n·grad over ranks, divided by the mean n (as the f32 path divides by the ring's mean of n).
      const meanN = Math.fround(globalSamples / W);
      for (let i = 0; i < L; i++) v[i] /= meanN;
      return v;
    };
    let localLoss = 0;
    const device = next ? toStageBatch(this.models, stage, next.batch, config.data.imageSize) : undefined;
    let r;
    const sentBefore = ring.stats().bytesSent;
    try {
      // CLIP: every rank all-gathers the step's embeddings (with or without a batch), so its loss is the global batch's.
      const own =
        stage === 'clip'
          ? (await clipGlobalLoss(this.models.clip, device, batchSize, ring.rank, (e) => ring.allGather(e, { step: p.globalStep }))).loss
          : device && (() => stageLoss(this.models, stage, device, seed));
      const loss = own
        ? () => {
            const l = own();
            localLoss = l.dataSync()[0];
            return l;
          }
        : // No batch on this rank: a zero loss that still touches the params, so the gradient is all zeros.
          () => tf.mul(tf.sum(params.values().next().value!), 0) as tf.Scalar;
      const schedule = { lr: sc.optimizer.lr, warmupSteps: sc.schedule.warmupSteps, totalSteps: sc.steps, minRatio: sc.schedule.minLrRatio };
      r = await trainStep({ params, loss, optimizer, reduce, learningRate: learningRateAt(schedule, p.stageStep), weightDecay: sc.optimizer.weightDecay, clipGradNorm: sc.optimizer.clipGradNorm });
    } catch (err) {
      if (!(err instanceof EmptyStep)) throw err;
      if (err.allDone) {
        await this.save(true, true);
        return 'data-exhausted';
      }
      if (err.epochDone) this.feed.nextEpoch();
      else await sleep(200); // leases held by a dead trainer come back when they expire
      return undefined;
    } finally {
      if (device) disposeStageBatch(device);
      // What the ring sent for this step's gradient exchange and CLIP gathers, also when the step is empty or
      // abandoned: it goes out with the next step report.
      this.bytesUnreported += ring.stats().bytesSent - sentBefore;
    }
    if (r.skipped) {
      p.skipped[stage] = (p.skipped[stage] ?? 0) + 1;
      log.warn('non-finite gradient on some rank: step skipped by all', { stage, step: p.stageStep });
    } else if (stage !== 'clip') {
      this.ema[stage]!.update(params, 'emaDecay' in sc ? sc.emaDecay : 0, p.stageStep);
    }
    p.stageStep++;
    p.globalStep++;
    p.loss[stage] = globalLoss;
    // Own progress, and the peers' (absolute offsets make them idempotent; a refusal — the peer already reported more,
    // or completed the shard — is expected). The peers' are not waited for (each peer reports itself too), except
    // before a checkpoint's data cursor is taken (see save).
    for (const q of peers) {
      const report: Promise<unknown> = this.coord
        .call('progress', q)
        .catch(() => undefined)
        .finally(() => this.peerReports.delete(report));
      this.peerReports.add(report);
    }
    if (next) await this.feed.applied(next.batch, next.shard);
    const seconds = (performance.now() - t0) / 1000;
    // The peers wait for rank 0 at the next step's all-reduce while it validates: a validation costs the fleet its time.
    const validationLoss = ring.rank === 0 ? this.validation?.after(this.models, stage, p.stageStep) : undefined;
    const report: DistributedStepReport = { rank: ring.rank, world: ring.world, generation: ring.generation, stage, stageStep: p.stageStep, globalStep: p.globalStep, loss: globalLoss, samples: globalSamples, skipped: r.skipped, validationLoss };
    await this.checkDivergence(ring, p.globalStep - 1);
    this.opts.onStep?.(report);
    if (this.opts.traceFile) await appendFile(this.opts.traceFile, JSON.stringify({ ...report, own: n, t: Date.now(), weights: weightsChecksum(this.models, this.ema) }) + '\n');
    if (p.stageStep % config.logEvery === 0 || p.stageStep === sc.steps) {
      log.info(stage, { rank: ring.rank, step: `${p.stageStep}/${sc.steps}`, loss: +globalLoss.toFixed(5), 'samples/s': +(globalSamples / seconds).toFixed(2) });
    }
    const bytes = this.bytesUnreported;
    this.bytesUnreported = 0;
    // Not awaited: the report only feeds the coordinator's stage machine and metrics; the trainers keep their own.
    void this.coord
      .call('step', { generation: ring.generation, step: p.globalStep, loss: Number.isFinite(globalLoss) ? globalLoss : undefined, gradNorm: Number.isFinite(r.gradNorm) ? r.gradNorm : undefined, skipped: r.skipped, samples: n, globalSamples, seconds, allreduceSeconds: arSeconds, allreduceBytes: bytes, dataWaitSeconds: dataWait, validation: validationLoss !== undefined ? { stage, loss: validationLoss } : undefined })
      .catch((err) => log.warn('step report refused', { error: String(err) }));
    const stageDone = p.stageStep === sc.steps;
    const ck = config.checkpoint;
    const due = (ck.everySteps > 0 && p.globalStep % ck.everySteps === 0) || (ck.everyMinutes > 0 && performance.now() - this.lastSaved >= ck.everyMinutes * 60_000);
    if (stageDone || due || stop) await this.save(!stageDone, stop);
    if (ring.rank === 0 && this.sampleLog?.due(stage, p.stageStep)) await this.drawSamples(stage, p.stageStep, p.globalStep);
    return stop ? 'stopped' : undefined;
  }

  /**
   * Every `coordinator.checksumEvery` steps the ranks all-gather a checksum of their weights. Ranks that apply the
   * same reduced gradient stay bit-identical, so a mismatch means something went wrong (a bad host, a backend that
   * is not deterministic, a bug): it is logged with every rank's checksum and all ranks take rank 0's state, as at
   * the start of a generation. `step` numbers the collectives (the step's own, continuing its sequence).
   */
  private async checkDivergence(ring: Ring, step: number): Promise<void> {
    const every = this.opts.config.coordinator.checksumEvery;
    if (!every || ring.world === 1 || this.progress.globalStep % every !== 0) return;
    const h = parseInt(weightsChecksum(this.models, this.ema), 16);
    // Two 16-bit halves: exact in float32.
    const all = await ring.allGather(new Float32Array([h >>> 16, h & 0xffff]), { step });
    const sums = Array.from({ length: ring.world }, (_, q) => ((all[2 * q] * 0x10000 + all[2 * q + 1]) >>> 0).toString(16).padStart(8, '0'));
    if (sums.every((x) => x === sums[0])) return;
    this.resyncs++;
    log.error('weights differ across ranks: every rank takes rank 0\'s state', { step: this.progress.globalStep, checksums: sums.join(' ') });
    await this.sync(ring, false, step);
  }

  /** Times the ranks' weights were found to differ and re-synced from rank 0. */
  private resyncs = 0;

  /** Bytes the ring sent for steps' gradient exchanges (CLIP's gathers included) not yet in a step report. */
  private bytesUnreported = 0;

  /** The Adam optimiser of a stage, created when the stage starts (or restored from a resumed checkpoint). */
  private async stageOptimizer(stage: number, params: Map<string, tf.Variable>): Promise<tf.Optimizer> {
    if (this.optimizer?.stage === stage) return this.optimizer.opt;
    this.optimizer?.opt.dispose();
    const o = this.opts.config.stages[STAGES[stage]].optimizer;
    const opt = tf.train.adam(o.lr, o.beta1, o.beta2, o.epsilon);
    const r = this.resumedOptimizer;
    if (r && r.stage === stage && r.stageStep === this.progress.stageStep && (r.stageStep > 0 || this.forceRestore)) await restoreOptimizer(opt, params, r.saved);
    this.resumedOptimizer = undefined;
    this.forceRestore = false;
    this.optimizer = { stage, opt };
    return opt;
  }

  /** Rank 0's state on every rank: counters, all weights and EMA, and the current stage's Adam state. */
  private async sync(ring: Ring, rewound: boolean, step = 0): Promise<void> {
    const p = this.progress;
    // [stage, stageStep, globalStep, has β-products, has moments, optimizer floats (hi, lo), epoch, rewound,
    //  skipped per stage…, tokenizer fingerprint]
    const header = new Float32Array(10 + STAGES.length);
    const fingerprint = tokenizerFingerprint(this.models.tokenizer);
    let body: Float32Array;
    if (ring.rank === 0) {
      // A stage in progress has its optimiser (maybe restored from a checkpoint just now) before it is sent.
      const live = p.stage < STAGES.length && p.stageStep > 0 ? await this.stageOptimizer(p.stage, stageParams(this.models, STAGES[p.stage])) : undefined;
      const saved = live ? await optimizerTensors(live, stageParams(this.models, STAGES[p.stage])) : [];
      const opt = saved.map(([, t]) => Float32Array.from(t.data as ArrayLike<number>));
      body = concat([...runWeights(this.models, this.ema).map(([, t]) => t.dataSync() as Float32Array), ...opt]);
      const optLen = opt.reduce((n, a) => n + a.length, 0);
      // The epoch every rank reads from now on: the checkpoint's after a rewind, else this rank's (the coordinator's
      // if that is later: an epoch the coordinator closed has nothing left to read).
      const epoch = rewound ? this.feed.epoch : Math.max(this.feed.epoch, this.where.epoch ?? 0);
      this.feed.enter(epoch);
      header.set([p.stage, p.stageStep, p.globalStep, saved.some(([n]) => n === 'adam.acc_beta1') ? 1 : 0, saved.some(([n]) => n.endsWith('/m')) ? 1 : 0, Math.floor(optLen / 2 ** 20), optLen % 2 ** 20, epoch, rewound ? 1 : 0]);
      STAGES.forEach((s, i) => (header[9 + i] = p.skipped[s] ?? 0));
      header[9 + STAGES.length] = fingerprint;
      await ring.broadcast(header, { step });
      await ring.broadcast(body, { step });
      return;
    }
    await ring.broadcast(header, { step });
    // Same-sized token tables with other merges would train on differently encoded captions without a sign.
    if (header[9 + STAGES.length] !== fingerprint) {
      throw new Error(
        `rank 0 encodes captions with other tokenizer merges (fingerprint ${header[9 + STAGES.length]}, this trainer's ${fingerprint}): every trainer must learn them from the same data.train and tokenizer settings, or get them from the run's coordinator`,
      );
    }
    const [stage, stageStep, globalStep, hasBeta, hasMoments, optHi, optLo, epoch, rewound0] = header;
    // After a rewind the coordinator's table no longer has the lease this rank held: read from a new one.
    if (rewound0) await this.feed.drop();
    this.feed.enter(epoch);
    const weights = runWeights(this.models, this.ema);
    const weightsLen = weights.reduce((n, [, t]) => n + t.size, 0);
    body = new Float32Array(weightsLen + optHi * 2 ** 20 + optLo);
    await ring.broadcast(body, { step });
    let off = 0;
    for (const [, t] of weights) {
      const v = t as tf.Variable;
      const slice = body.subarray(off, off + v.size);
      tf.tidy(() => v.assign(tf.tensor(slice, v.shape, 'float32')));
      off += v.size;
    }
    this.progress = { stage, stageStep, globalStep, skipped: Object.fromEntries(STAGES.map((s, i) => [s, header[9 + i]]).filter(([, n]) => n)), loss: { ...p.loss } };
    this.optimizer?.opt.dispose();
    this.optimizer = undefined;
    this.resumedOptimizer = undefined;
    if (off === body.length || stage >= STAGES.length) return;
    // Adam's state in optimizerTensors' order: iterations, the β products, then every param's m, then every v.
    const params = stageParams(this.models, STAGES[stage]);
    const names = ['adam.iterations', ...(hasBeta ? ['adam.acc_beta1', 'adam.acc_beta2'] : []), ...(hasMoments ? ['m', 'v'].flatMap((s) => [...params.keys()].map((k) => `${k}/${s}`)) : [])];
    const saved = new Map<string, SafeTensor>();
    for (const name of names) {
      const v = params.get(name.slice(0, name.lastIndexOf('/')));
      const size = v ? v.size : 1;
      const data = body.slice(off, off + size);
      saved.set(name, name === 'adam.iterations' ? { dtype: 'I32', shape: [], data: Int32Array.from(data) } : { dtype: 'F32', shape: v ? v.shape : [], data });
      off += size;
    }
    if (off !== body.length) throw new Error(`rank 0 sent ${body.length} floats of state, this rank parsed ${off}: do the ranks run the same config?`);
    this.resumedOptimizer = { stage, stageStep, saved };
    this.forceRestore = true;
  }

  /**
   * Rank 0 is behind the run (it joined after every earlier trainer left): it loads the run's latest checkpoint, so
   * the run continues from there rather than from this trainer's fresh weights.
   */
  private async catchUp(): Promise<void> {
    const w = this.where as WhereIs & { step?: number; checkpoint?: { step: number; key: string } | null };
    if (!w.checkpoint || w.checkpoint.step <= this.progress.globalStep) return;
    log.warn('this trainer is behind the run: continuing from its latest checkpoint', { checkpoint: w.checkpoint.key, step: w.checkpoint.step, run_step: w.step });
    await this.resume(w.checkpoint.key);
  }

  /** Loads the checkpoint to resume from, if any (rank 0's state then reaches the others at the first sync). */
  private async resume(from?: string): Promise<void> {
    const { config } = this.opts;
    const resume = from ?? this.opts.resume ?? 'latest';
    if (resume === 'none') return;
    let ckpt: CheckpointData;
    try {
      ckpt = await readCheckpoint(resume === 'latest' ? config.checkpoint.url : resume);
    } catch (err) {
      if (resume === 'latest' && /no checkpoint at/.test((err as Error).message)) return;
      throw err;
    }
    checkResumable(ckpt, config);
    const m = ckpt.manifest;
    if (!sameTokenizer(checkpointTokenizer(m, ckpt.url), this.models.tokenizer)) {
      throw new Error(`cannot resume from ${ckpt.url}: its tokenizer merges differ from this trainer's (from the coordinator, or learnt from data.train = ${config.data.train} per tokenizer.merges: did the training captions change?)`);
    }
    restoreRunWeights(this.models, this.ema, ckpt);
    const stage = STAGES.indexOf(m.stage as StageName);
    if (stage < 0) throw new Error(`${ckpt.url}: unknown stage '${m.stage}' in manifest`);
    this.progress = { stage, stageStep: m.stage_step, globalStep: m.global_step, skipped: { ...m.skipped_steps }, loss: { ...m.loss } };
    this.optimizer?.opt.dispose();
    this.optimizer = undefined;
    if (ckpt.optimizer) this.resumedOptimizer = { stage, stageStep: m.stage_step, saved: ckpt.optimizer };
    this.savedStep = m.global_step;
    this.rewindTo = isFleetCursor(m.data_cursor) ? { step: m.global_step, cursor: m.data_cursor.fleet } : undefined;
    if (!this.rewindTo) log.warn('the checkpoint has no data cursor of a distributed run: the data continues where the coordinator stands', { from: ckpt.url });
    log.info('resuming', { from: ckpt.url, stage: m.stage, step: m.stage_step, global_step: m.global_step });
  }

  /**
   * Rank 0 that resumed from a checkpoint (and took no step since) puts the coordinator's data back where the
   * checkpoint was taken, before any rank leases a shard (the others wait in the sync). Returns whether it did.
   */
  private async rewindRun(generation: number): Promise<boolean> {
    const to = this.rewindTo;
    if (!to || to.step !== this.progress.globalStep) return false;
    try {
      await this.coord.call('rewind', { generation, step: to.step, table: to.cursor.table });
    } catch (err) {
      if (!(err instanceof CoordinatorRefusal)) throw err;
      log.warn('the coordinator refused to rewind the data to the checkpoint: the data continues where it stands', { error: err.message });
      return false;
    }
    await this.feed.drop();
    this.feed.enter(to.cursor.epoch);
    log.info('data rewound to the checkpoint', { step: to.step, epoch: to.cursor.epoch });
    return true;
  }

  /** The coordinator's lease table now, with the epoch the ranks read: the data position of this checkpoint. */
  private async dataCursor(): Promise<FleetCursor | null> {
    try {
      const r = await this.coord.call<{ table: { epoch: number; offsets: string } }>('cursor');
      return { fleet: { epoch: this.feed.epoch, table: r.table } };
    } catch (err) {
      log.warn('no data cursor for this checkpoint (a resume continues the data where the coordinator stands)', { error: String(err) });
      return null;
    }
  }

  /**
   * Rank 0 checkpoints the last applied step (with the stage's Adam state unless the stage is done). The weights are
   * copied out now and written in the background while the next steps run — the other ranks would otherwise wait
   * for the write in the next all-reduce. One write at a time: the next checkpoint waits for the previous write.
   * `final` (the run ends here) waits for the write.
   */
  private async save(withOptimizer: boolean, final = false): Promise<void> {
    const p = this.progress;
    if (this.ring?.rank !== 0 && !(this.ring === undefined && this.where.rank === 0)) return;
    if (p.globalStep === this.savedStep) return this.flushCheckpoint(final);
    const { config } = this.opts;
    const stageIdx = Math.min(p.stage, STAGES.length - 1);
    const stage = STAGES[stageIdx];
    const t0 = performance.now();
    // At most one write in flight: checkpoints due faster than the store takes them wait here instead of piling up
    // snapshots in memory.
    await this.writing;
    const opt = withOptimizer && this.optimizer?.stage === stageIdx ? { optimizer: this.optimizer.opt, params: stageParams(this.models, stage) } : undefined;
    const snapshot = await snapshotCheckpoint({
      manifest: {
        run: config.name,
        stage,
        stage_step: p.stage >= STAGES.length ? config.stages[stage].steps : p.stageStep,
        global_step: p.globalStep,
        // Every rank's progress of this step was reported (own and peers', awaited here) and no rank can finish the
        // next step without rank 0: the table now is the table at this step.
        data_cursor: await Promise.all(this.peerReports).then(() => this.dataCursor()),
        rng: { seed: config.seed, derivation: 'deriveSeed(seed, purpose, …): model init (1, stage), data order (2), step (3, stage, step, rank)' },
        skipped_steps: p.skipped,
        loss: p.loss,
        config,
        ...tokenizerManifest(this.models.tokenizer),
      },
      weights: runWeights(this.models, this.ema),
      optimizer: opt,
    });
    this.savedStep = p.globalStep;
    this.lastSaved = performance.now();
    this.writing = (async () => {
      const store = await openStore(config.checkpoint.url);
      try {
        this.lastCheckpoint = await writeSnapshot(store, snapshot, config.checkpoint.keep);
      } finally {
        await store.close();
      }
      const seconds = (performance.now() - t0) / 1000;
      log.info('checkpoint written', { url: this.lastCheckpoint, step: snapshot.manifest.global_step, seconds: +seconds.toFixed(3) });
      // Announced once it is complete: the coordinator's `checkpoint` is always one a trainer can resume from.
      await this.coord.call('checkpoint', { step: snapshot.manifest.global_step, key: this.lastCheckpoint, seconds }).catch((err) => log.warn('could not tell the coordinator about the checkpoint', { error: String(err) }));
    })().catch((err: unknown) => {
      this.writeError ??= err;
      log.error('checkpoint write failed', { step: snapshot.manifest.global_step, error: String(err) });
    });
    return this.flushCheckpoint(final);
  }

  /** Rank 0: the sample grid due after this step, if any, beside the checkpoints (the peers wait at the next all-reduce). */
  private async drawSamples(stage: StageName, stageStep: number, globalStep: number): Promise<void> {
    const store = await openStore(this.opts.config.checkpoint.url);
    try {
      await this.sampleLog!.after(this.models, this.ema, stage, stageStep, globalStep, store);
    } finally {
      await store.close();
    }
  }

  /** Progress reports for peers not yet answered; awaited before the data cursor of a checkpoint is taken. */
  private readonly peerReports = new Set<Promise<unknown>>();

  /** Checkpoint writes in flight (one at a time). */
  private writing: Promise<void> = Promise.resolve();
  private writeError: unknown;

  /** With `wait`, waits for the checkpoint writes in flight and throws the first that failed. */
  private async flushCheckpoint(wait: boolean): Promise<void> {
    if (!wait) return;
    await this.writing;
    if (this.writeError) throw this.writeError;
  }
}

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}
