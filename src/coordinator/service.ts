// One training run's brain: answers trainers' requests over NATS (register, heartbeat, lease, progress, complete,
// step, checkpoint), keeps membership, the shard lease table and the stage machine, writes every change to
// JetStream KV before it replies, and serves /metrics, /healthz, /readyz and /status over HTTP.
//
// Requests are handled one at a time (one subscription, awaited in order; the periodic tick joins the same
// queue), so the lease table, membership and stages never see interleaved updates.
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { Msg, NatsConnection, Subscription } from 'nats';
import { z } from 'zod';
import { logger } from '../util/log.ts';
import { formatZodError } from '../cli/args.ts';
import type { CoordinatorConfig } from './config.ts';
import { LeaseTable, type ShardRecord, type TableSnapshot } from './leases.ts';
import { Membership, type Generation } from './membership.ts';
import { createMetrics, type CoordinatorMetrics } from './metrics.ts';
import { expectedSamples } from './expected.ts';
import { completeStep, initialStages, STAGE_ORDER, type StageBudgets, type StageState } from './stages.ts';
import { StateStore, type CheckpointRecord, type LeaderRecord, type RunRecord } from './store.ts';
import { VERBS, coordWildcard, generationSubject, type Verb } from './subjects.ts';

const log = logger('coordinator');

export interface ShardInfo {
  /** Object key of the shard's tar in the training store. */
  key: string;
  /** Samples in it (after filtering). */
  samples: number;
}

export interface CoordinatorOptions {
  nc: NatsConnection;
  run: string;
  config: CoordinatorConfig;
  /** Step budget of each stage (the run file's stages.<stage>.steps). */
  budgets: StageBudgets;
  /**
   * Samples each trainer reads per step, by stage (the run file's stageBatchSize). With them `expected_samples` is
   * what the budgets and epochs call for (expected.ts); without them (tests driving requests by hand), the epochs'.
   */
  batchSizes?: StageBudgets;
  /** The dataset, in lease order. A restarted coordinator must be given the same list. */
  shards: ShardInfo[];
  /** Samples the filter dropped, by reason (exported as a metric). */
  filterDropped?: Record<string, number>;
  /** The validated run file, answered to the `config` verb (trainers started without --config fetch it). */
  runConfig?: unknown;
  /** The run's learnt BPE merges (a TokenizerJson), answered with the run file: trainers use them instead of each learning its own. */
  tokenizer?: unknown;
  /** Epoch-ms clock (tests drive time by hand). */
  clock?: () => number;
  /** Start the periodic tick (default true; tests call tick() themselves). */
  ticking?: boolean;
  /**
   * Another coordinator claimed the run (a second one was started): this one has stopped answering. `easel
   * coordinator` exits on it.
   */
  onSuperseded?: (by: LeaderRecord) => void;
}

/** The JSON served at /status (and answered to the `status` verb). */
export interface CoordinatorStatus {
  run: string;
  phase: 'waiting' | 'training' | 'done';
  stage: string;
  stage_step: number;
  step: number;
  epoch: number;
  epochs: number;
  loss: number | null;
  generation: number;
  members: string[];
  registered: number;
  shards: { done: number; leased: number; pending: number };
  samples_seen: number;
  expected_samples: number;
  checkpoint: (CheckpointRecord & { age_seconds: number }) | null;
}

export type Reply = { ok: true; [k: string]: unknown } | { ok: false; error: string; reason?: string };

const trainer = z.string().min(1).max(200).describe('trainer id');
const count = z.number().int().min(0);
const REQUESTS = {
  register: z.object({ trainer }),
  heartbeat: z.object({ trainer }),
  leave: z.object({ trainer }),
  lease: z.object({
    trainer,
    epoch: count.optional().describe('the epoch the trainer reads; absent: whichever is open (no plan-ordered turnover)'),
  }),
  progress: z.object({ trainer, shard: count, offset: count }),
  complete: z.object({ trainer, shard: count, samples: count }),
  step: z.object({
    trainer,
    generation: count,
    step: z.number().int().positive().describe('the run step this report completes (1 = the first)'),
    loss: z.number().optional(),
    gradNorm: z.number().optional(),
    skipped: z.boolean().default(false).describe('every rank skipped the step: its all-reduced gradient was not finite (the loss is then absent)'),
    samples: count.default(0).describe('samples this trainer consumed in the step'),
    globalSamples: count.optional().describe('samples every rank together consumed in the step (absent: samples × world size)'),
    seconds: z.number().min(0).optional(),
    allreduceBytes: z.number().min(0).default(0).describe("bytes this trainer's ring sent for the step's gradient all-reduce and CLIP gathers (and for empty or abandoned steps since its last report)"),
    allreduceSeconds: z.number().min(0).default(0),
    dataWaitSeconds: z.number().min(0).default(0),
    validation: z
      .object({ stage: z.enum(STAGE_ORDER), loss: z.number() })
      .optional()
      .describe("rank 0's held-out loss after the step, when one was due (validation.every); named by its stage, since the step may have ended it"),
  }),
  checkpoint: z.object({ trainer, step: count, key: z.string().min(1), seconds: z.number().min(0).optional() }),
  cursor: z.object({ trainer }),
  rewind: z.object({
    trainer,
    generation: count,
    step: count.describe('the checkpoint\'s global step: the run continues after it'),
    table: z.object({ epoch: count, offsets: z.string() }).describe('the lease table snapshot the checkpoint carries'),
  }),
  status: z.object({}).loose(),
  config: z.object({}).loose(),
} satisfies Record<Verb, z.ZodType>;

export class Coordinator {
  readonly metrics: CoordinatorMetrics;
  private table!: LeaseTable;
  private membership!: Membership;
  private stages!: StageState;
  private epoch = 0;
  private loss: number | undefined;
  private checkpoint: CheckpointRecord | undefined;
  private sub: Subscription | undefined;
  private timer: NodeJS.Timeout | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private lastWritten = { run: '', members: '' };
  private loop: Promise<void> | undefined;
  private readonly perEpoch: number;
  private readonly clock: () => number;
  private started = false;
  /** This coordinator's claim on the run (see StateStore.claimLeader); checked on every tick. */
  private leader: LeaderRecord | undefined;
  private superseded: LeaderRecord | undefined;

  private constructor(
    private readonly opts: CoordinatorOptions,
    private readonly store: StateStore,
  ) {
    this.clock = opts.clock ?? Date.now;
    this.metrics = createMetrics(opts.run, () => (this.checkpoint ? (this.clock() - this.checkpoint.at) / 1000 : undefined));
    this.perEpoch = opts.shards.reduce((n, s) => n + s.samples, 0);
    for (const [reason, n] of Object.entries(opts.filterDropped ?? {})) this.metrics.filterDropped.set({ reason }, n);
  }

  /** Loads the run's state from JetStream KV (or starts it), then answers requests. */
  static async start(opts: CoordinatorOptions): Promise<Coordinator> {
    const store = await StateStore.open(opts.nc, opts.run);
    const c = new Coordinator(opts, store);
    // Claimed before the state is read: a coordinator still running for this run sees the claim at its next tick
    // and stops answering, so two never hand out leases from two tables for long.
    const { claim, previous } = await store.claimLeader(randomUUID(), c.clock());
    c.leader = claim;
    c.metrics.leaderTerm.set(claim.term);
    if (previous) log.info('took over the run from the previous coordinator', { run: opts.run, term: claim.term, previous: previous.id, previous_claimed: new Date(previous.at).toISOString() });
    await c.restore();
    c.sub = opts.nc.subscribe(coordWildcard(opts.run));
    c.loop = c.serve(c.sub);
    void c.watchNats();
    // The server must know the subscription before anyone is told we are up, or an early request finds no
    // responder (a 503) — a race a loaded machine makes likely.
    await opts.nc.flush();
    if (opts.ticking ?? true) {
      let last = performance.now();
      c.timer = setInterval(() => {
        // A late timer means this process stalled (GC, CPU starvation, or in tests a trainer computing in the same
        // process); the heartbeats it could not read meanwhile are not the trainers' silence. Timers run before
        // pending I/O, so this comes before the stale look at who is alive.
        const stall = performance.now() - last - opts.config.tickMs;
        last = performance.now();
        if (stall > opts.config.tickMs) c.membership.excuseStall(stall, c.clock());
        void c.tick().catch((err) => log.error('tick failed', { error: String(err) }));
      }, opts.config.tickMs);
      c.timer.unref();
    }
    c.started = true;
    log.info('coordinator up', { run: opts.run, ...c.status().shards, step: c.stages.step, generation: c.membership.generation.number });
    return c;
  }

  /** Stops answering (state stays in KV for the next coordinator). */
  async stop(): Promise<void> {
    this.started = false;
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.sub?.unsubscribe();
    await this.loop;
    await this.queue.catch(() => {});
  }

  /** Ready = state loaded, subscribed, NATS connected. */
  ready(): boolean {
    return this.started && !this.opts.nc.isClosed();
  }

  status(): CoordinatorStatus {
    const s = this.table.stats();
    const gen = this.membership.generation;
    const phase = this.stages.phase === 'done' ? 'done' : this.membership.ready() ? 'training' : 'waiting';
    const ck = this.checkpoint;
    return {
      run: this.opts.run,
      phase,
      stage: this.stages.stage,
      stage_step: this.stages.stageStep,
      step: this.stages.step,
      epoch: this.epoch,
      epochs: this.opts.config.epochs,
      loss: this.loss ?? null,
      generation: gen.number,
      members: [...gen.ring],
      registered: this.membership.size,
      shards: { done: s.done, leased: s.leased, pending: s.pending },
      samples_seen: this.epoch * this.perEpoch + s.samplesSeen,
      expected_samples: this.expectedSamples(),
      checkpoint: ck ? { ...ck, age_seconds: (this.clock() - ck.at) / 1000 } : null,
    };
  }

  /**
   * What the configuration calls for (`expected_samples`): the samples the trainers apply if the run ends
   * normally — the stages' step budgets or the epochs, whichever ends it first, read as the plan of the current
   * world size deals the shards (expected.ts; before the first generation, minTrainers). A run whose world size
   * changes mid-epoch reads other batches, so it may end elsewhere; without batch sizes, the epochs alone.
   */
  private expectedSamples(): number {
    const batchSizes = this.opts.batchSizes;
    if (!batchSizes) return this.opts.config.epochs * this.perEpoch;
    const world = this.table.world ?? this.opts.config.minTrainers;
    if (this.expected?.world !== world) {
      const shards = this.opts.shards.map((s) => s.samples);
      this.expected = { world, samples: expectedSamples({ shards, epochs: this.opts.config.epochs, budgets: this.opts.budgets, batchSizes, world }) };
    }
    return this.expected.samples;
  }

  /** expectedSamples() of a world size (computed once per world size: status() answers every heartbeat). */
  private expected: { world: number; samples: number } | undefined;

  /** Handles one request (what a NATS request to the verb's subject does), in the request queue. */
  request(verb: Verb, body: unknown): Promise<Reply> {
    return this.serial(() => this.handle(verb, body));
  }

  /** Checks heartbeats and lease expiries; forms a new generation if the fleet changed. */
  tick(): Promise<void> {
    // One tick waits in the queue at most: ticks piled up behind a slow request (a state write timing out while
    // NATS restarts) would otherwise all run at once, with stale ideas of who is alive.
    this.nextTick ??= this.serial(async () => {
      this.nextTick = undefined;
      if (this.natsDown || this.superseded) return; // no heartbeat can reach us: silence is not death
      if (await this.checkLeader()) return;
      this.tickNow();
      await this.persist();
    });
    return this.nextTick;
  }

  private nextTick: Promise<void> | undefined;

  /** True (and this coordinator stops answering) when another one claimed the run since this one started. */
  private async checkLeader(): Promise<boolean> {
    const now = await this.store.leader().catch(() => undefined); // KV unreachable: checked again next tick
    if (!now || !this.leader || now.id === this.leader.id) return false;
    this.superseded = now;
    this.metrics.superseded.set(1);
    log.error('another coordinator took over this run: this one stops answering', { run: this.opts.run, term: this.leader.term, new_term: now.term, new_leader: now.id });
    // Not awaited: stop() waits for the request queue this tick is part of.
    void this.stop().then(() => this.opts.onSuperseded?.(now));
    return true;
  }

  private natsDown = false;
  private stopped = false;

  /** Counts NATS outages; after one, every trainer gets a full heartbeat timeout from the reconnect. */
  private async watchNats(): Promise<void> {
    for await (const s of this.opts.nc.status()) {
      if (this.stopped) break; // a stopped coordinator must not write over its successor's state
      if (s.type === 'disconnect') {
        this.natsDown = true;
        this.metrics.natsDisconnects.inc();
        log.warn('lost NATS: heartbeat timeouts pause until it is back', { run: this.opts.run });
      } else if (s.type === 'reconnect') {
        this.natsDown = false;
        this.metrics.natsReconnects.inc();
        this.membership.refreshHeartbeats(this.clock()); // now, not after the requests queued during the outage
        void this.serial(async () => {
          const now = this.clock();
          // Chunks of a collective in flight were lost with the old connections: rather than let every rank wait for
          // its collective timeout, a new generation makes them abandon the step and re-sync at once.
          const g = this.membership.reform(now);
          if (g) this.announce(g);
          log.info('NATS is back: every trainer gets a full heartbeat timeout', { run: this.opts.run, step: this.stages.step, generation: this.membership.generation.number });
          await this.persist();
        }).catch((err) => log.warn('could not save the run state after reconnecting (retried with the next request)', { error: String(err) }));
      }
    }
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.queue.then(fn);
    this.queue = p.catch(() => {});
    return p;
  }

  private async serve(sub: Subscription): Promise<void> {
    for await (const msg of sub) {
      const verb = msg.subject.slice(msg.subject.lastIndexOf('.') + 1) as Verb;
      let body: unknown;
      try {
        body = msg.data.length ? JSON.parse(new TextDecoder().decode(msg.data)) : {};
      } catch {
        msg.respond(JSON.stringify({ ok: false, error: 'request body is not JSON', reason: 'bad-request' }));
        continue;
      }
      // Heartbeats skip the queue: a trainer is alive when its heartbeat arrives, not when the queue, stalled behind
      // a state write that waits for JetStream (a restarting server, a loaded machine), reaches it. They save nothing
      // themselves; the lease expiries they extend go out with the next write. So this loop never waits for a
      // request: each joins the queue in arrival order and is answered when its turn is done, while the heartbeats
      // behind it in the subscription are read at once.
      if (verb === 'heartbeat') {
        respond(msg, this.answer(verb, body));
        continue;
      }
      void this.request(verb, body)
        .catch((err: unknown): Reply => {
          log.error('request failed', { verb, error: String(err) });
          return { ok: false, error: `coordinator error: ${(err as Error).message}` };
        })
        .then((reply) => respond(msg, reply));
    }
  }

  private async handle(verb: Verb, raw: unknown): Promise<Reply> {
    const t0 = performance.now();
    const parsed = this.parse(verb, raw);
    if (!parsed.ok) return parsed.reply;
    if (this.superseded) return { ok: false, error: `coordinator superseded by ${this.superseded.id} (term ${this.superseded.term})`, reason: 'unavailable' };
    let reply = this.apply(verb, parsed.data as never);
    try {
      await this.persist();
    } catch (err) {
      // Not acknowledged, so the trainer asks again (every verb is safe to repeat); the state is written then.
      log.warn('request not acknowledged: the run state could not be saved', { verb, error: (err as Error).message });
      reply = { ok: false, error: (err as Error).message, reason: 'unavailable' };
    }
    this.metrics.requests.inc({ verb, outcome: reply.ok ? 'ok' : (reply.reason ?? 'error') });
    this.metrics.requestSeconds.observe({ verb }, (performance.now() - t0) / 1000);
    return reply;
  }

  /** Answers at once, without writing state (heartbeats). */
  private answer(verb: Verb, raw: unknown): Reply {
    const t0 = performance.now();
    const parsed = this.parse(verb, raw);
    if (!parsed.ok) return parsed.reply;
    const reply = this.apply(verb, parsed.data as never);
    this.metrics.requests.inc({ verb, outcome: reply.ok ? 'ok' : (reply.reason ?? 'error') });
    this.metrics.requestSeconds.observe({ verb }, (performance.now() - t0) / 1000);
    return reply;
  }

  private parse(verb: Verb, raw: unknown): { ok: true; data: unknown } | { ok: false; reply: Reply } {
    if (!(VERBS as readonly string[]).includes(verb)) return { ok: false, reply: { ok: false, error: `unknown verb '${verb}'`, reason: 'bad-request' } };
    const parsed = REQUESTS[verb].safeParse(raw);
    if (parsed.success) return { ok: true, data: parsed.data };
    this.metrics.requests.inc({ verb, outcome: 'bad-request' });
    return { ok: false, reply: { ok: false, error: `bad ${verb} request:\n${formatZodError(parsed.error)}`, reason: 'bad-request' } };
  }

  private apply(verb: Verb, req: Record<string, never>): Reply {
    const now = this.clock();
    const m = this.metrics;
    switch (verb) {
      case 'register': {
        const r = this.membership.register(req.trainer, now);
        if (!r.accepted) return { ok: false, error: r.reason, reason: 'full' };
        this.tickNow();
        return { ok: true, ...this.whereIs(req.trainer) };
      }
      case 'heartbeat': {
        const hb = this.membership.heartbeat(req.trainer, now);
        if (!hb.known) return { ok: false, error: `trainer ${req.trainer} is not registered (declared dead?): register again`, reason: 'unknown-trainer' };
        this.table.renew(req.trainer, now);
        return { ok: true, ...this.whereIs(req.trainer) };
      }
      case 'leave': {
        this.membership.leave(req.trainer);
        const back = this.table.release(req.trainer);
        if (back.length) m.leasesReclaimed.inc({ cause: 'left' }, back.length);
        this.tickNow();
        return { ok: true };
      }
      case 'lease': {
        if (this.membership.heartbeat(req.trainer, now).known === false) return { ok: false, error: `trainer ${req.trainer} is not registered`, reason: 'unknown-trainer' };
        const expired = this.table.expire(now);
        if (expired.length) m.leasesReclaimed.inc({ cause: 'expired' }, expired.length);
        this.nextEpochIfDone();
        // A trainer reads one shard at a time: if it asks while holding one, the reply that gave it was lost (a
        // restart), so that shard goes back to pending at its reported offset instead of staying leased for good.
        const stranded = this.table.release(req.trainer);
        if (stranded.length) m.leasesReclaimed.inc({ cause: 'asked-again' }, stranded.length);
        return this.leaseFor(req.trainer, now, req.epoch as number | undefined);
      }
      case 'cursor':
        return { ok: true, table: this.table.snapshot() };
      case 'rewind':
        return this.rewind(req as unknown as z.output<typeof REQUESTS.rewind>);
      case 'progress':
      case 'complete': {
        const out =
          verb === 'progress' ? this.table.progress(req.shard, req.trainer, req.offset) : this.table.complete(req.shard, req.trainer, req.samples);
        if (!out.ok) {
          m.refusals.inc({ reason: out.reason });
          return { ok: false, error: out.message, reason: out.reason };
        }
        if (verb === 'complete') this.nextEpochIfDone();
        return { ok: true };
      }
      case 'step':
        return this.applyStep(req as unknown as z.output<typeof REQUESTS.step>);
      case 'checkpoint': {
        this.checkpoint = { step: req.step, key: req.key, at: now, seconds: req.seconds };
        m.checkpointStep.set(req.step);
        if (req.seconds !== undefined) m.checkpointSeconds.observe(req.seconds);
        return { ok: true };
      }
      case 'status':
        return { ok: true, status: this.status() };
      case 'config':
        if (this.opts.runConfig === undefined) return { ok: false, error: 'this coordinator was started without a run file', reason: 'no-config' };
        return { ok: true, config: this.opts.runConfig, ...(this.opts.tokenizer === undefined ? {} : { tokenizer: this.opts.tokenizer }) };
    }
  }

  /**
   * Picks the shard for a lease request. A trainer that names the epoch it reads gets a shard of that epoch only
   * (its rank's residue under the plan), so an epoch turns over when the trainers decide it together — after a
   * step in which none of them had a shard left — and never because one request happened to come after a peer's
   * last `complete` (docs/coordinator.md, Determinism).
   */
  private leaseFor(trainer: string, now: number, epoch: number | undefined): Reply {
    const m = this.metrics;
    const lastEpoch = this.epoch + 1 >= this.opts.config.epochs;
    const grant = (rank: number | undefined): Reply | undefined => {
      const l = this.table.lease(trainer, now, rank);
      if (!l) return undefined;
      m.leasesGranted.inc();
      return { ok: true, lease: { ...l, key: this.opts.shards[l.shard]!.key, epoch: this.epoch }, epoch: this.epoch, done: false };
    };
    const none = (extra: Record<string, unknown> = {}): Reply => ({ ok: true, lease: null, epoch: this.epoch, done: this.table.finished() && lastEpoch, ...extra });
    const rank = this.membership.rankOf(trainer);
    if (epoch === undefined || epoch === this.epoch) return grant(rank) ?? none();
    // The trainer's epoch is over (finished here, a peer's last report came first): nothing more of it to read.
    if (epoch < this.epoch) return none();
    if (epoch >= this.opts.config.epochs || (this.table.finished() && lastEpoch)) return none({ done: true });
    // The trainers moved on, but this epoch is not finished: a shard came back (a lease expired after its rank had
    // nothing left) — read it now, whichever residue — or a `complete` is still in flight: ask again shortly.
    return grant(undefined) ?? none({ retry: true });
  }

  /**
   * A run resumed from a checkpoint: its rank 0 rewinds the data to where the checkpoint was taken (the table
   * snapshot it carries), discarding progress recorded after it, and the step counter to the checkpoint's step.
   * Then the samples applied are exactly those before the checkpoint, whatever happened after it.
   */
  private rewind(req: z.output<typeof REQUESTS.rewind>): Reply {
    const gen = this.membership.generation;
    if (req.generation !== gen.number || gen.ring[0] !== req.trainer) {
      return { ok: false, error: `rewind from ${req.trainer} in generation ${req.generation}: only rank 0 of the current generation (${gen.number}) may rewind the run`, reason: 'stale-generation' };
    }
    if (req.table.epoch >= this.opts.config.epochs) return { ok: false, error: `the checkpoint is in epoch ${req.table.epoch}, but the run has ${this.opts.config.epochs}`, reason: 'bad-cursor' };
    let table: LeaseTable;
    try {
      table = LeaseTable.fromSnapshot(
        this.opts.shards.map((s) => s.samples),
        req.table as TableSnapshot,
        { leaseMs: this.opts.config.leaseMs },
      );
    } catch (err) {
      return { ok: false, error: (err as Error).message, reason: 'bad-cursor' };
    }
    let stages = initialStages(this.opts.budgets);
    for (let i = 0; i < req.step && stages.phase === 'training'; i++) stages = completeStep(stages, this.opts.budgets);
    const from = { step: this.stages.step, epoch: this.epoch, samplesSeen: this.status().samples_seen };
    if (gen.ring.length > 0) table.setPlan(gen.ring.length);
    this.rewound = { dropEpochs: [...new Set([this.epoch, req.table.epoch])] };
    this.table = table;
    this.epoch = req.table.epoch;
    this.stages = stages;
    this.unsaved.clear();
    this.metaDirty = true;
    this.metrics.step.set(stages.step);
    log.info('rewound the run to a checkpoint', { from, to: { step: stages.step, epoch: this.epoch, samplesSeen: this.status().samples_seen } });
    return { ok: true, step: stages.step, epoch: this.epoch };
  }

  /** Set by a rewind: the next persist replaces the KV shard records of these epochs with the new table's. */
  private rewound: { dropEpochs: number[] } | undefined;

  private applyStep(req: z.output<typeof REQUESTS.step>): Reply {
    const m = this.metrics;
    const gen = this.membership.generation;
    if (req.generation !== gen.number || !gen.ring.includes(req.trainer)) {
      return { ok: false, error: `step report from generation ${req.generation}, but generation ${gen.number} (without ${req.trainer}?) is current`, reason: 'stale-generation' };
    }
    m.allreduceBytes.inc(req.allreduceBytes);
    m.allreduceSeconds.inc(req.allreduceSeconds);
    m.dataWaitSeconds.inc(req.dataWaitSeconds);
    if (req.seconds !== undefined) m.stepSeconds.observe({ stage: this.stages.stage }, req.seconds);
    // Whichever report of the step arrives first advances the run; rank 0's, which carries this, may come later.
    if (req.validation) m.validationLoss.set({ stage: req.validation.stage }, req.validation.loss);
    if (req.step > this.stages.step && this.stages.phase === 'training') {
      // The first report of a step advances the run; the others only add their counters. A report past the next
      // step means the reports between were lost (a generation change refused them as stale, or NATS or the
      // coordinator was down): every rank of the generation applied those steps, so the run advances through them.
      let stage = this.stages.stage;
      while (this.stages.step < req.step && this.stages.phase === 'training') {
        stage = this.stages.stage;
        m.stepsTotal.inc({ stage });
        this.stages = completeStep(this.stages, this.opts.budgets);
      }
      m.step.set(this.stages.step);
      if (this.stages.step < req.step) return { ok: false, error: `step ${req.step} reported, but the run ends at step ${this.stages.step}`, reason: 'bad-step' };
      if (req.loss !== undefined) {
        this.loss = req.loss;
        m.loss.set({ stage }, req.loss);
      }
      if (req.gradNorm !== undefined) m.gradNorm.set({ stage }, req.gradNorm);
      if (req.skipped) m.stepsSkipped.inc({ stage });
      // The step's samples over the whole fleet (the ranks' batches may differ: a rank out of shards has none) per
      // second of the reporter's step; every rank's step ends with the same all-reduce, so any reporter's time will do.
      if (req.seconds) m.samplesPerSecond.set({ stage }, (req.globalSamples ?? req.samples * gen.ring.length) / req.seconds);
      this.tickNow(true); // a step boundary: trainers waiting to join enter now
    }
    return { ok: true, phase: this.stages.phase, stage: this.stages.stage, stageStep: this.stages.stageStep, step: this.stages.step };
  }

  private whereIs(id: string) {
    const gen = this.membership.generation;
    const rank = this.membership.rankOf(id);
    return {
      generation: gen.number,
      rank: rank ?? null,
      worldSize: gen.ring.length,
      ring: gen.ring,
      waiting: rank === undefined,
      phase: this.status().phase,
      stage: this.stages.stage,
      step: this.stages.step,
      epoch: this.epoch,
      checkpoint: this.checkpoint ?? null,
    };
  }

  /** Joiners are admitted only between steps (admitJoiners) or while no generation runs. */
  private tickNow(admitJoiners = !this.membership.ready()): void {
    // Cut off from NATS, no heartbeat can arrive: silence proves nothing, and neither do lease expiries. A request
    // queued before the outage (answered after a KV write timed out) must not declare the fleet dead either.
    if (this.natsDown) return;
    const now = this.clock();
    const m = this.metrics;
    const r = this.membership.tick(now, { admitJoiners });
    for (const id of r.dead) {
      const back = this.table.release(id);
      m.trainerDeaths.inc();
      if (back.length) m.leasesReclaimed.inc({ cause: 'dead' }, back.length);
      log.warn('trainer declared dead', { trainer: id, shardsReleased: back.length });
    }
    const expired = this.table.expire(now);
    if (expired.length) m.leasesReclaimed.inc({ cause: 'expired' }, expired.length);
    if (r.formed) this.announce(r.formed);
  }

  private announce(g: Generation): void {
    if (g.ring.length > 0) this.table.setPlan(g.ring.length);
    if (g.number > 1) this.metrics.generationChanges.inc();
    log.info('generation formed', { generation: g.number, worldSize: g.ring.length });
    this.opts.nc.publish(generationSubject(this.opts.run), JSON.stringify(g));
  }

  private nextEpochIfDone(): void {
    if (!this.table.finished() || this.epoch + 1 >= this.opts.config.epochs) return;
    const old = this.epoch;
    this.epoch++;
    this.unsaved.clear(); // the old epoch's records are about to be dropped anyway
    const world = this.table.world;
    this.table = new LeaseTable(this.opts.shards.map((s) => s.samples), { epoch: this.epoch, leaseMs: this.opts.config.leaseMs });
    if (world) this.table.setPlan(world);
    this.metaDirty = true;
    void this.store.dropEpoch(old).catch((err) => log.warn('could not delete the shard records of a finished epoch', { epoch: old, error: String(err) }));
  }

  private metaDirty = false;
  private metaDirtyEpoch: number | undefined;
  private unsaved = new Map<number, ShardRecord>();

  private async restore(): Promise<void> {
    const now = this.clock();
    const { config, shards } = this.opts;
    const st = await this.store.load();
    const samples = shards.map((s) => s.samples);
    const mopts = { heartbeatTimeoutMs: config.heartbeatTimeoutMs, minTrainers: config.minTrainers, maxTrainers: config.maxTrainers };
    this.membership = st.members ? Membership.fromJSON(st.members, mopts, now) : new Membership(mopts);
    if (st.meta) {
      if (st.meta.count !== shards.length) {
        throw new Error(`run ${this.opts.run}: its state in NATS has ${st.meta.count} shards, but the dataset now has ${shards.length}; a run cannot change its dataset`);
      }
      this.epoch = st.meta.epoch;
    } else this.metaDirty = true;
    this.table = new LeaseTable(samples, { epoch: this.epoch, leaseMs: config.leaseMs });
    this.table.restore(st.shards);
    if (this.membership.generation.ring.length > 0) this.table.setPlan(this.membership.generation.ring.length);
    this.stages = st.run ? { phase: st.run.phase, stage: st.run.stage, stageStep: st.run.stageStep, step: st.run.step } : initialStages(this.opts.budgets);
    this.loss = st.run?.loss;
    this.checkpoint = st.run?.checkpoint;
    this.metrics.step.set(this.stages.step);
    if (this.checkpoint) this.metrics.checkpointStep.set(this.checkpoint.step);
    if (st.run) this.metrics.resumedStep.set(this.stages.step);
    if (st.run) log.info('resumed run from JetStream KV', { run: this.opts.run, step: this.stages.step, epoch: this.epoch, shardRecords: st.shards.length });
    await this.persist();
  }

  private async persist(): Promise<void> {
    if (this.rewound) {
      // Records written after the checkpoint (this epoch's or a later one's) must not outlive the rewind: purge them,
      // then write every shard that is not in its initial state.
      for (const e of this.rewound.dropEpochs) await this.store.dropEpoch(e);
      this.rewound = undefined;
      for (let i = 0; i < this.table.shardCount; i++) {
        const r = this.table.record(i);
        if (r.state !== 'pending' || r.offset > 0) this.unsaved.set(i, r);
      }
      this.table.takeChanges();
    }
    const writes: Promise<unknown>[] = [];
    if (this.metaDirty) {
      this.metaDirtyEpoch = this.epoch;
      writes.push(this.store.putMeta({ epoch: this.epoch, count: this.table.shardCount, expectedSamples: this.table.expectedSamples }));
      this.metaDirty = false;
    }
    // Records stay in `unsaved` until a write of them succeeds, so a failed write (NATS down) is retried by the next.
    for (const r of this.table.takeChanges()) this.unsaved.set(r.shard, r);
    const changes = [...this.unsaved.values()];
    if (changes.length) {
      writes.push(
        this.store.putShards(this.epoch, changes).then(() => {
          for (const r of changes) if (this.unsaved.get(r.shard) === r) this.unsaved.delete(r.shard);
        }),
      );
    }
    const run: RunRecord = { ...this.stages, epoch: this.epoch, loss: this.loss, checkpoint: this.checkpoint };
    const runJson = JSON.stringify(run);
    if (runJson !== this.lastWritten.run) {
      writes.push(this.store.putRun(run));
      this.lastWritten.run = runJson;
    }
    // Heartbeat times change on every request; membership is rewritten only when who is in it changes.
    const ms = this.membership.toJSON();
    const membersJson = JSON.stringify({ ...ms, members: ms.members.map((x) => x.id) });
    if (membersJson !== this.lastWritten.members) {
      writes.push(this.store.putMembers(ms));
      this.lastWritten.members = membersJson;
    }
    this.updateGauges();
    try {
      await Promise.all(writes);
    } catch (err) {
      this.metrics.stateWriteFailures.inc();
      this.lastWritten = { run: '', members: '' };
      if (this.metaDirtyEpoch !== undefined) this.metaDirty = true;
      throw new Error(`could not save the run's state to JetStream KV (will retry with the next request): ${(err as Error).message}`, { cause: err });
    }
    this.metaDirtyEpoch = undefined;
  }

  private updateGauges(): void {
    const m = this.metrics;
    const s = this.table.stats();
    for (const state of ['pending', 'leased', 'done'] as const) m.shards.set({ state }, s[state]);
    m.samplesSeen.set(this.epoch * this.perEpoch + s.samplesSeen);
    m.expectedSamples.set(this.expectedSamples());
    m.epoch.set(this.epoch);
    m.members.set(this.membership.generation.ring.length);
    m.registered.set(this.membership.size);
    m.generation.set(this.membership.generation.number);
  }
}

/** Answers a request; a connection closed meanwhile (the coordinator stopping) loses only the answer. */
function respond(msg: Msg, reply: Reply): void {
  try {
    msg.respond(JSON.stringify(reply));
  } catch (err) {
    log.warn('could not answer a request', { subject: msg.subject, error: String(err) });
  }
}

export interface HttpServer {
  /** http://host:port */
  url: string;
  port: number;
  close(): Promise<void>;
}

/** Serves /metrics, /healthz, /readyz and /status for a coordinator on `port` (0: any free port). */
export async function startHttpServer(c: Coordinator, opts: { port: number; host?: string }): Promise<HttpServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const send = (code: number, type: string, body: string) => {
      res.writeHead(code, { 'content-type': type });
      res.end(body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'text/plain', 'method not allowed\n');
    switch (path) {
      case '/metrics':
        c.metrics.registry
          .metrics()
          .then((text) => send(200, c.metrics.registry.contentType, text))
          .catch((err: unknown) => send(500, 'text/plain', `${String(err)}\n`));
        return;
      case '/healthz':
        return send(200, 'text/plain', 'ok\n');
      case '/readyz':
        return c.ready() ? send(200, 'text/plain', 'ready\n') : send(503, 'text/plain', 'not ready\n');
      case '/status':
        return send(200, 'application/json', JSON.stringify(c.status(), null, 2) + '\n');
      default:
        return send(404, 'text/plain', 'not found: try /metrics, /healthz, /readyz or /status\n');
    }
  });
  const host = opts.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, host, () => resolve());
  });
  const port = (server.address() as { port: number }).port;
  const shown = host === '0.0.0.0' ? '127.0.0.1' : host;
  return {
    url: `http://${shown}:${port}`,
    port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
