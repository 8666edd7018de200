// The shard lease table of one epoch: which trainer reads which shard, and how far each shard has been read.
//
// Every shard is pending, leased (to one trainer, until an expiry) or done. A lease hands out the shard together
// with the sample to start from; trainers report progress (samples whose gradients were applied) and finally
// complete the shard. When a lease expires or its trainer dies, the shard goes back to pending at its last
// reported offset, so the next lessee continues where the dead one stopped: every sample of the epoch is counted
// exactly once (samplesSeen), no matter how many trainers fail.
//
// Two ways to pick the next shard. Without a plan, pending shards form a FIFO and go to whoever asks first. With a
// plan of world size W (setPlan, once a generation of W trainers forms), shard i belongs to rank i mod W and a rank
// gets the lowest pending shard of its own residue: which rank reads which samples no longer depends on whose
// request arrives first, which is what makes a distributed run reproducible (docs/coordinator.md, Determinism).
// Either way, exactly-once does not depend on the plan: it is the offsets that count.
//
// Sized for LAION-5B (~585k shards) and 1,024 trainers: per-shard state lives in typed arrays, pending shards in
// a ring-buffer queue (or one min-heap per residue under a plan), leases by trainer in a Map of Sets, expiries in a
// binary min-heap with lazy deletion.

export const SHARD_STATES = ['pending', 'leased', 'done'] as const;
export type ShardState = (typeof SHARD_STATES)[number];
const PENDING = 0;
const LEASED = 1;
const DONE = 2;

export interface Lease {
  shard: number;
  trainer: string;
  /** First sample of the shard this lessee must read (samples before it were consumed by earlier lessees). */
  fromSample: number;
  /** Samples in the shard. */
  samples: number;
  /** Epoch-ms after which the lease lapses unless renewed. */
  expiresAt: number;
}

/** Why a progress/complete report was refused; the coordinator counts them by reason. */
export const REFUSALS = ['unknown-shard', 'not-leased', 'wrong-owner', 'already-done', 'bad-offset'] as const;
export type Refusal = (typeof REFUSALS)[number];
export type Outcome = { ok: true } | { ok: false; reason: Refusal; message: string };

export interface LeaseCounts {
  pending: number;
  leased: number;
  done: number;
}

/** Plain-JSON state of a table: enough to rebuild it exactly. */
export interface LeaseTableState {
  epoch: number;
  leaseMs: number;
  samples: number[];
  /** Per shard: 0 pending, 1 leased, 2 done. Base64 of a Uint8Array. */
  states: string;
  /** Per shard: samples already consumed. Base64 of a Uint32Array. */
  offsets: string;
  /** Pending shards in queue order. */
  pending: number[];
  leases: { shard: number; trainer: string; expiresAt: number; from: number }[];
}

/**
 * Where an epoch stands, in a form a checkpoint can carry: every shard's consumed-sample offset (a shard is done
 * when its offset reaches its sample count). Leases are not part of it: a shard being read is pending at the
 * offset its lessee reported.
 */
export interface TableSnapshot {
  epoch: number;
  /** Per shard: samples consumed. Base64 of a little-endian Uint32Array. */
  offsets: string;
}

/** What changed for one shard; the persistence layer stores these (see store.ts). */
export interface ShardRecord {
  shard: number;
  state: ShardState;
  offset: number;
  trainer?: string;
  expiresAt?: number;
  /** Where the current lease started (complete() counts the lessee's samples from there). */
  from?: number;
}

/** A FIFO of shard indices, each present at most once, so capacity = shard count suffices. */
class ShardQueue {
  private buf: Int32Array;
  private head = 0;
  size = 0;
  constructor(capacity: number) {
    this.buf = new Int32Array(Math.max(1, capacity));
  }
  push(shard: number): void {
    this.buf[(this.head + this.size) % this.buf.length] = shard;
    this.size++;
  }
  shift(): number | undefined {
    if (this.size === 0) return undefined;
    const s = this.buf[this.head]!;
    this.head = (this.head + 1) % this.buf.length;
    this.size--;
    return s;
  }
  toArray(): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.size; i++) out.push(this.buf[(this.head + i) % this.buf.length]!);
    return out;
  }
}

/** The shards changed since the last take(): a flag per shard and a list, no hashing (this runs on every request). */
class DirtySet {
  private readonly flag: Uint8Array;
  private list: number[] = [];
  constructor(n: number) {
    this.flag = new Uint8Array(n);
  }
  add(shard: number): void {
    if (this.flag[shard]) return;
    this.flag[shard] = 1;
    this.list.push(shard);
  }
  take(): number[] {
    const out = this.list;
    this.list = [];
    for (const s of out) this.flag[s] = 0;
    return out;
  }
  clear(): void {
    this.take();
  }
}

/**
 * Binary min-heap of (key, shard) pairs. Expiries use key = expiresAt; a plan's residues use key = shard (lowest
 * index first). Entries go stale (a renewed lease, a shard leased since) and are skipped by their users.
 */
class MinHeap {
  /** `sortedKeys` ascending (with `shards` alongside) is already a valid heap: no sifting to build it. */
  constructor(
    private key: number[] = [],
    private shard: number[] = [...key],
  ) {}
  get size(): number {
    return this.key.length;
  }
  /** The smallest key (Infinity when empty). */
  peekKey(): number {
    return this.key[0] ?? Infinity;
  }
  push(key: number, shard: number): void {
    this.key.push(key);
    this.shard.push(shard);
    let i = this.key.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (this.key[p]! <= this.key[i]!) break;
      this.swap(i, p);
      i = p;
    }
  }
  pop(): { key: number; shard: number } {
    const top = { key: this.key[0]!, shard: this.shard[0]! };
    const lastKey = this.key.pop()!;
    const lastShard = this.shard.pop()!;
    if (this.key.length > 0) {
      this.key[0] = lastKey;
      this.shard[0] = lastShard;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < this.key.length && this.key[l]! < this.key[m]!) m = l;
        if (r < this.key.length && this.key[r]! < this.key[m]!) m = r;
        if (m === i) break;
        this.swap(i, m);
        i = m;
      }
    }
    return top;
  }
  private swap(i: number, j: number): void {
    [this.key[i], this.key[j]] = [this.key[j]!, this.key[i]!];
    [this.shard[i], this.shard[j]] = [this.shard[j]!, this.shard[i]!];
  }
}

export class LeaseTable {
  readonly epoch: number;
  readonly leaseMs: number;
  private readonly samples: Uint32Array;
  private readonly states: Uint8Array;
  private readonly offsets: Uint32Array;
  private readonly expiry: Float64Array;
  private readonly owner: (string | undefined)[];
  private readonly pending: ShardQueue;
  /** Under a plan: pending shards per residue (i mod world); the FIFO is then unused. */
  private plan: { world: number; residues: MinHeap[] } | undefined;
  private readonly byTrainer = new Map<string, Set<number>>();
  private readonly heap = new MinHeap();
  private counts: LeaseCounts;
  /** Samples consumed so far this epoch (done shards in full, in-flight shards up to their reported offset). */
  samplesSeen = 0;
  readonly expectedSamples: number;
  /** Shards whose state changed since the last takeChanges(). */
  private readonly changed: DirtySet;

  /** `samples[i]` = samples in shard i; shards are handed out in index order (the caller shuffles if it wants). */
  constructor(samples: ArrayLike<number>, opts: { epoch?: number; leaseMs: number }) {
    const n = samples.length;
    this.epoch = opts.epoch ?? 0;
    this.leaseMs = opts.leaseMs;
    this.samples = Uint32Array.from(samples);
    this.states = new Uint8Array(n);
    this.offsets = new Uint32Array(n);
    this.expiry = new Float64Array(n);
    this.owner = new Array<string | undefined>(n);
    this.pending = new ShardQueue(n);
    for (let i = 0; i < n; i++) this.pending.push(i);
    this.counts = { pending: n, leased: 0, done: 0 };
    this.changed = new DirtySet(n);
    this.leaseFrom = new Uint32Array(n);
    let total = 0;
    for (let i = 0; i < n; i++) total += this.samples[i]!;
    this.expectedSamples = total;
  }

  get shardCount(): number {
    return this.samples.length;
  }

  stats(): LeaseCounts & { samplesSeen: number; expectedSamples: number } {
    return { ...this.counts, samplesSeen: this.samplesSeen, expectedSamples: this.expectedSamples };
  }

  /** True once every shard is done. */
  finished(): boolean {
    return this.counts.done === this.samples.length;
  }

  /**
   * Hands the next pending shard to `trainer`, or undefined when none is pending. Expired leases are reclaimed
   * first. Under a plan, `rank` picks the residue (the lowest pending shard i with i mod world = rank); without a
   * rank (a trainer outside the generation, or a fallback) the lowest pending shard of any residue.
   */
  lease(trainer: string, now: number, rank?: number): Lease | undefined {
    this.expire(now);
    let shard = this.nextPending(rank);
    // An empty shard (all samples filtered out) is done as soon as it is reached.
    while (shard !== undefined && this.samples[shard] === 0) {
      this.setState(shard, DONE);
      shard = this.nextPending(rank);
    }
    if (shard === undefined) return undefined;
    this.setState(shard, LEASED);
    this.leaseFrom[shard] = this.offsets[shard]!;
    this.owner[shard] = trainer;
    this.expiry[shard] = now + this.leaseMs;
    this.heap.push(now + this.leaseMs, shard);
    let mine = this.byTrainer.get(trainer);
    if (!mine) this.byTrainer.set(trainer, (mine = new Set()));
    mine.add(shard);
    return this.describe(shard);
  }

  /** The plan's world size, if a plan is set. */
  get world(): number | undefined {
    return this.plan?.world;
  }

  /** Assigns shard i to rank i mod `world` from now on (O(shards); called when a generation forms). */
  setPlan(world: number): void {
    if (!Number.isInteger(world) || world < 1) throw new Error(`a plan needs a world size >= 1, not ${world}`);
    if (this.plan?.world === world) return;
    this.plan = { world, residues: [] };
    this.rebuildPending();
  }

  /** The epoch's offsets (see TableSnapshot). */
  snapshot(): TableSnapshot {
    return { epoch: this.epoch, offsets: Buffer.from(this.offsets.buffer, this.offsets.byteOffset, this.offsets.byteLength).toString('base64') };
  }

  /**
   * The table a snapshot describes: shards whose offset reached their sample count are done, every other shard is
   * pending at its offset (samplesSeen = the sum of the offsets). Throws if the snapshot does not fit `samples`.
   */
  static fromSnapshot(samples: ArrayLike<number>, snap: TableSnapshot, opts: { leaseMs: number }): LeaseTable {
    const t = new LeaseTable(samples, { epoch: snap.epoch, leaseMs: opts.leaseMs });
    const bytes = Buffer.from(snap.offsets, 'base64');
    if (bytes.length !== 4 * t.shardCount) throw new Error(`the data cursor has offsets for ${bytes.length / 4} shards, but the dataset has ${t.shardCount}`);
    const offsets = new Uint32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    const records: ShardRecord[] = [];
    for (let i = 0; i < t.shardCount; i++) {
      const o = offsets[i]!;
      if (o > t.samples[i]!) throw new Error(`the data cursor says ${o} samples of shard ${i} were read, but it has ${t.samples[i]}`);
      if (o > 0 || t.samples[i] === 0) records.push({ shard: i, state: o === t.samples[i] ? 'done' : 'pending', offset: o });
    }
    t.restore(records);
    return t;
  }

  /** The current lease on a shard, if any. */
  leaseOf(shard: number): Lease | undefined {
    return this.states[shard] === LEASED ? this.describe(shard) : undefined;
  }

  /** Shards leased to a trainer. */
  leasesOf(trainer: string): number[] {
    return [...(this.byTrainer.get(trainer) ?? [])];
  }

  /** Extends every lease of a live trainer (called on its heartbeat). */
  renew(trainer: string, now: number): void {
    for (const shard of this.byTrainer.get(trainer) ?? []) {
      this.expiry[shard] = now + this.leaseMs;
      this.heap.push(now + this.leaseMs, shard);
      this.changed.add(shard);
    }
  }

  /** Records that the samples of `shard` before `offset` were consumed (their gradients applied) by its lessee. */
  progress(shard: number, trainer: string, offset: number): Outcome {
    const bad = this.checkOwner(shard, trainer);
    if (bad) return bad;
    const prev = this.offsets[shard]!;
    if (!Number.isInteger(offset) || offset < prev || offset > this.samples[shard]!) {
      return refuse('bad-offset', `offset ${offset} for shard ${shard} must be an integer in [${prev}, ${this.samples[shard]}]`);
    }
    this.samplesSeen += offset - prev;
    this.offsets[shard] = offset;
    this.changed.add(shard);
    return { ok: true };
  }

  /** The lessee read the shard to its end: `samplesConsumed` (by this lessee) must take it exactly to the end. */
  complete(shard: number, trainer: string, samplesConsumed: number): Outcome {
    const bad = this.checkOwner(shard, trainer);
    if (bad) return bad;
    const leaseStart = this.leaseFrom[shard]!;
    if (leaseStart + samplesConsumed !== this.samples[shard]) {
      return refuse(
        'bad-offset',
        `shard ${shard} has ${this.samples[shard]} samples; this lease started at ${leaseStart}, so completing it takes ${this.samples[shard]! - leaseStart}, not ${samplesConsumed}`,
      );
    }
    this.samplesSeen += this.samples[shard]! - this.offsets[shard]!;
    this.offsets[shard] = this.samples[shard]!;
    this.unlease(shard);
    this.setState(shard, DONE);
    return { ok: true };
  }

  /** Returns leases past their expiry to pending (at their last reported offset); returns the shards reclaimed. */
  expire(now: number): number[] {
    const out: number[] = [];
    while (this.heap.size > 0 && this.heap.peekKey() <= now) {
      const { key: at, shard } = this.heap.pop();
      if (this.states[shard] !== LEASED || this.expiry[shard] !== at) continue; // renewed or finished since
      this.reclaim(shard);
      out.push(shard);
    }
    return out;
  }

  /** A trainer died or left: every shard it held goes back to pending. Returns the shards reclaimed. */
  release(trainer: string): number[] {
    const shards = this.leasesOf(trainer);
    for (const s of shards) this.reclaim(s);
    this.byTrainer.delete(trainer);
    return shards;
  }

  /** Shards changed since the last call, as records to persist. */
  takeChanges(): ShardRecord[] {
    const out = this.changed.take().map((s) => this.record(s));
    return out;
  }

  record(shard: number): ShardRecord {
    const state = SHARD_STATES[this.states[shard]!]!;
    const r: ShardRecord = { shard, state, offset: this.offsets[shard]! };
    if (state === 'leased') {
      r.trainer = this.owner[shard];
      r.expiresAt = this.expiry[shard];
      r.from = this.leaseFrom[shard];
    }
    return r;
  }

  toJSON(): LeaseTableState {
    const leases: LeaseTableState['leases'] = [];
    for (const [trainer, set] of this.byTrainer) for (const shard of set) leases.push({ shard, trainer, expiresAt: this.expiry[shard]!, from: this.leaseFrom[shard]! });
    return {
      epoch: this.epoch,
      leaseMs: this.leaseMs,
      samples: [...this.samples],
      states: Buffer.from(this.states.buffer, this.states.byteOffset, this.states.byteLength).toString('base64'),
      offsets: Buffer.from(this.offsets.buffer, this.offsets.byteOffset, this.offsets.byteLength).toString('base64'),
      pending: this.plan ? [...this.states.keys()].filter((i) => this.states[i] === PENDING) : this.pending.toArray(),
      leases,
    };
  }

  static fromJSON(s: LeaseTableState): LeaseTable {
    const t = new LeaseTable(s.samples, { epoch: s.epoch, leaseMs: s.leaseMs });
    const states = new Uint8Array(Buffer.from(s.states, 'base64'));
    const offBytes = Buffer.from(s.offsets, 'base64');
    const offsets = new Uint32Array(offBytes.buffer.slice(offBytes.byteOffset, offBytes.byteOffset + offBytes.byteLength));
    if (states.length !== t.shardCount || offsets.length !== t.shardCount) throw new Error(`lease table state: ${states.length} states and ${offsets.length} offsets for ${t.shardCount} shards`);
    const records: ShardRecord[] = [];
    const leaseOf = new Map(s.leases.map((l) => [l.shard, l]));
    for (let i = 0; i < t.shardCount; i++) {
      const state = SHARD_STATES[states[i]!];
      if (!state) throw new Error(`lease table state: shard ${i} has unknown state ${states[i]}`);
      const l = leaseOf.get(i);
      records.push({ shard: i, state, offset: offsets[i]!, trainer: l?.trainer, expiresAt: l?.expiresAt, from: l?.from });
    }
    t.restore(records, s.pending);
    return t;
  }

  /**
   * Overwrites shards with persisted records (every shard not named keeps its current state). With `order`, the
   * pending queue is rebuilt in that order, else pending shards queue in index order.
   */
  restore(records: ShardRecord[], order?: number[]): void {
    for (const r of records) {
      if (r.shard < 0 || r.shard >= this.shardCount) throw new Error(`shard record for shard ${r.shard}, but the table has ${this.shardCount}`);
      this.unlease(r.shard);
      this.setState(r.shard, SHARD_STATES.indexOf(r.state));
      this.offsets[r.shard] = r.offset;
      if (r.state === 'leased') {
        if (r.trainer === undefined || r.expiresAt === undefined) throw new Error(`shard record ${r.shard} is leased without trainer or expiry`);
        this.owner[r.shard] = r.trainer;
        this.expiry[r.shard] = r.expiresAt;
        this.heap.push(r.expiresAt, r.shard);
        let mine = this.byTrainer.get(r.trainer);
        if (!mine) this.byTrainer.set(r.trainer, (mine = new Set()));
        mine.add(r.shard);
        this.leaseFrom[r.shard] = r.from ?? r.offset;
      }
    }
    // Recount and rebuild the queue from the per-shard states.
    this.samplesSeen = 0;
    for (let i = 0; i < this.shardCount; i++) this.samplesSeen += this.offsets[i]!;
    this.rebuildPending(order);
    this.changed.clear();
  }

  // Where the current lease of a shard started (valid while it is leased); complete() checks the lessee's count
  // against it.
  private readonly leaseFrom: Uint32Array;

  private describe(shard: number): Lease {
    return { shard, trainer: this.owner[shard]!, fromSample: this.offsets[shard]!, samples: this.samples[shard]!, expiresAt: this.expiry[shard]! };
  }

  private checkOwner(shard: number, trainer: string): Outcome | undefined {
    if (!Number.isInteger(shard) || shard < 0 || shard >= this.shardCount) return refuse('unknown-shard', `no shard ${shard} (the table has ${this.shardCount})`);
    const st = this.states[shard];
    if (st === DONE) return refuse('already-done', `shard ${shard} is already done`);
    if (st === PENDING) return refuse('not-leased', `shard ${shard} is not leased (its lease expired or its trainer was declared dead)`);
    if (this.owner[shard] !== trainer) return refuse('wrong-owner', `shard ${shard} is leased to ${this.owner[shard]}, not ${trainer}`);
    return undefined;
  }

  private reclaim(shard: number): void {
    this.unlease(shard);
    this.setState(shard, PENDING);
    if (this.plan) this.plan.residues[shard % this.plan.world]!.push(shard, shard);
    else this.pending.push(shard);
  }

  private nextPending(rank: number | undefined): number | undefined {
    const plan = this.plan;
    if (!plan) return this.pending.shift();
    let r = rank !== undefined && rank < plan.world ? rank : undefined;
    if (r === undefined) {
      let best: number | undefined;
      plan.residues.forEach((_, q) => {
        const top = this.peekResidue(q);
        if (top !== undefined && (best === undefined || top < this.peekResidue(best)!)) best = q;
      });
      r = best;
    }
    if (r === undefined || this.peekResidue(r) === undefined) return undefined;
    return plan.residues[r]!.pop().shard;
  }

  /** The lowest pending shard of a residue, dropping heap entries that are no longer pending. */
  private peekResidue(r: number): number | undefined {
    const h = this.plan!.residues[r]!;
    while (h.size > 0 && this.states[h.peekKey()] !== PENDING) h.pop();
    return h.size > 0 ? h.peekKey() : undefined;
  }

  /** Refills the FIFO (in `order`, then index order) or the plan's heaps from the per-shard states. */
  private rebuildPending(order?: number[]): void {
    while (this.pending.shift() !== undefined);
    if (this.plan) {
      // Under a plan the order is the shard index, whatever `order` says.
      const W = this.plan.world;
      const sorted: number[][] = Array.from({ length: W }, () => []);
      for (let i = 0; i < this.shardCount; i++) if (this.states[i] === PENDING) sorted[i % W]!.push(i);
      this.plan.residues = sorted.map((a) => new MinHeap(a));
      return;
    }
    const seen = new Uint8Array(this.shardCount);
    for (const s of order ?? []) {
      if (this.states[s] === PENDING && !seen[s]) {
        seen[s] = 1;
        this.pending.push(s);
      }
    }
    for (let i = 0; i < this.shardCount; i++) if (this.states[i] === PENDING && !seen[i]) this.pending.push(i);
  }

  private unlease(shard: number): void {
    const t = this.owner[shard];
    if (t !== undefined) {
      const mine = this.byTrainer.get(t);
      // An emptied set stays: its trainer leases again at once (release() drops it when the trainer goes).
      mine?.delete(shard);
    }
    this.owner[shard] = undefined;
  }

  private setState(shard: number, state: number): void {
    const old = this.states[shard]!;
    if (old !== state) {
      const c = this.counts;
      if (old === PENDING) c.pending--;
      else if (old === LEASED) c.leased--;
      else c.done--;
      if (state === PENDING) c.pending++;
      else if (state === LEASED) c.leased++;
      else c.done++;
      this.states[shard] = state;
    }
    this.changed.add(shard);
  }
}

function refuse(reason: Refusal, message: string): Outcome {
  return { ok: false, reason, message };
}
