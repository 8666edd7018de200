// easel's collectives over NATS core pub/sub: ring all-reduce (reduce-scatter + all-gather, returning the mean),
// allGather and broadcast, for W ranks of one generation of a run.
//
// Every rank sends only to its successor ((rank + 1) mod W) on
//   easel.<run>.g<generation>.s<step>.<ar|ag|bc><seq>.<toRank>
// and subscribes to easel.<run>.*.*.*.<rank>, so chunks of an old generation or step still reach it and are
// counted as rejected instead of silently mixing in. Chunks are pipelined: a chunk is added and forwarded the moment
// it arrives, so all segments stream around the ring at once; a credit window (the successor acknowledges bytes it
// has consumed on …<toRank>.ack) bounds the bytes in flight per link, so neither the client nor the server has to
// buffer a whole gradient for a slow peer.
//
// Guarantees (see docs/transport.md):
// - Every rank returns the same bytes: each segment is reduced once, by its owner, and the owner's final bytes are
//   what the all-gather distributes (with a 16-bit wire format the owner rounds its own copy the same way).
// - Segment s is summed in ring order starting at rank s+1: x[s+1] + x[s+2] + … + x[s] (mod W), each addition
//   rounded to float32, then divided by W (rounded to float32): identical to a sequential float32 (tfjs) sum of
//   the ranks' vectors in that order followed by a division by W.
// - A NaN/±Inf in any input (or a sum that overflows) sets a flag that reaches every rank: all report nonFinite.
// - Nothing is sent to a successor that has not opened its end of this generation's ring: NATS core drops messages
//   nobody is subscribed to, and the ranks of a new generation learn of it at different heartbeats. Each end
//   answers requests on easel.<run>.g<generation>.ready.<rank>; a rank's first collective asks its successor there
//   (retrying while NATS answers "no responders") before its first chunk.
import { Empty, ErrorCode, type NatsConnection, type Subscription } from 'nats';
import { z } from 'zod';
import { validate } from '../cli/args.ts';
import { logger } from '../util/log.ts';
import {
  BYTES_PER_ELEMENT,
  Dtype,
  FLAG_NONFINITE,
  HEADER_BYTES,
  Kind,
  MalformedChunk,
  Phase,
  blockSpans,
  bodyChecksum,
  checkBody,
  checksumRequired,
  chunkCount,
  chunkSpan,
  decodeHeader,
  elementsPerChunk,
  encodeHeader,
  runHash,
  segmentSpans,
  type ChunkHeader,
  type Span,
} from './chunks.ts';
import { decodeBf16, decodeF16, encodeBf16, encodeF16 } from './compress.ts';
import { maxPayload } from './connection.ts';
import { Kernels } from './kernels.ts';

const log = logger('transport');

export const CollectiveOptions = z.strictObject({
  timeoutMs: z.number().int().positive().default(30_000).describe('a collective fails with CollectiveTimeoutError after this long without progress'),
  wire: z.enum(['f32', 'bf16', 'f16']).default('f32').describe('element type of all-reduced gradients on the wire (bf16/f16 halve the bytes, lose precision)'),
  checksum: z.boolean().default(true).describe('checksum every chunk body (checksum32, chunks.ts) and reject chunks whose checksum does not match'),
  maxChunkBytes: z.number().int().min(HEADER_BYTES + 4).optional().describe("largest chunk message in bytes (default: the server's max_payload)"),
  windowBytes: z.number().int().positive().default(16 * 1024 * 1024).describe('bytes a rank may have in flight to its successor before waiting for its acknowledgement'),
});
export type CollectiveOptions = z.output<typeof CollectiveOptions>;

/** Who is in the ring: the coordinator's generation, this process's rank and the world size. */
export interface RingMembership {
  /** Run id: one subject token (letters, digits, '-', '_'). */
  run: string;
  generation: number;
  rank: number;
  world: number;
}

/** Why a chunk was dropped; each reason has a counter in Ring.stats().rejected. */
export type RejectReason =
  | MalformedChunk['reason']
  | 'foreign-run'
  | 'stale-generation'
  | 'future-generation'
  | 'stale-step'
  | 'wrong-sender'
  | 'wrong-kind'
  | 'wrong-dtype'
  | 'wrong-layout'
  | 'wrong-sequence'
  | 'duplicate'
  | 'overflow';

/** A collective made no progress for timeoutMs: a peer is gone or stalled (the trainer abandons the step). */
export class CollectiveTimeoutError extends Error {
  readonly code = 'COLLECTIVE_TIMEOUT';
  constructor(
    message: string,
    readonly detail: { kind: string; step: number; seq: number; received: number; expected: number; waitingFor: number },
  ) {
    super(message);
  }
}

/** The collective was abandoned by Ring.abort() or Ring.close() (membership changed). */
export class CollectiveAbortedError extends Error {
  readonly code = 'COLLECTIVE_ABORTED';
}

export interface AllReduceResult {
  /** The element-wise mean over ranks: the same bytes on every rank. */
  values: Float32Array;
  /** Some rank had a NaN/±Inf (or the sum overflowed): every rank sees true, so all skip the step. */
  nonFinite: boolean;
  seconds: number;
}

export interface RingStats {
  rejected: Partial<Record<RejectReason, number>>;
  bytesSent: number;
  bytesReceived: number;
  collectives: number;
}

const KIND_TOKEN: Record<Kind, string> = { [Kind.AllReduce]: 'ar', [Kind.AllGather]: 'ag', [Kind.Broadcast]: 'bc' };
const WIRE_DTYPE = { f32: Dtype.F32, bf16: Dtype.BF16, f16: Dtype.F16 } as const;
const ACK_BYTES = 24;
/** Bytes reserved after each message in a send arena: the zero padding (< 16 bytes) of an in-place checksum, + 8-byte alignment. */
const ARENA_SLACK = 23;

/** A fresh Uint8Array with its own ArrayBuffer (NATS hands out Buffers that share a pool). */
function copyOf(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(bytes.byteLength);
  out.set(bytes);
  return out;
}

// float32 reduce-scatter arithmetic runs in the SIMD kernels (kernels.ts); the 16-bit wire formats and the
// single-rank case use these loops. They live in small functions of their own: inside a large method with many
// branches V8 optimises a hot loop on-stack, then throws that code away at the first branch it has not seen yet,
// and the next chunk's loop starts again in the interpreter (measured in the bench: ~7 ms/MB instead of ~0.4 ms/MB).

/** out[i] = a[i] + b[i] (float32 rounding); `out` may be `a`. */
function addInto(out: Float32Array, a: Float32Array, b: Float32Array): void {
  for (let i = 0; i < out.length; i++) out[i] = a[i] + b[i];
}

function divideBy(values: Float32Array, w: number): void {
  for (let i = 0; i < values.length; i++) values[i] /= w;
}

/** No NaN or ±Inf in `values`. */
function allFinite(values: Float32Array): boolean {
  let finite = true;
  for (let i = 0; i < values.length; i++) if (values[i] - values[i] !== 0) finite = false;
  return finite;
}

/** One collective in flight on this rank. */
interface Op {
  kind: Kind;
  step: number;
  seq: number;
  dtype: Dtype;
  spans: Span[];
  per: number;
  total: number;
  buf: Float32Array;
  /** First seen-bit index of each segment's chunks; phase p's bits start at p * chunksTotal. */
  chunkBase: number[];
  chunksTotal: number;
  seen: Uint8Array;
  expected: number;
  received: number;
  flags: number;
  /** Credit window towards the successor. */
  sent: number;
  acked: number;
  queue: Uint8Array[];
  /** Where the next outgoing message is carved from (all-reduce only), and the offset of its free space. */
  arena?: Uint8Array;
  arenaAt: number;
  subject: string;
  /** Bytes consumed from the predecessor, and how many of them were acknowledged. */
  consumed: number;
  ackedToPred: number;
  timer?: NodeJS.Timeout;
  started: number;
  resolve(): void;
  reject(err: Error): void;
}

/** Opens this rank's end of the ring (subscribes at once, so chunks sent before the first call are kept). */
export function openRing(nc: NatsConnection, membership: RingMembership, options: Partial<z.input<typeof CollectiveOptions>> = {}): Ring {
  return new Ring(nc, membership, validate(CollectiveOptions, options, 'collective options', 'transport'));
}

export class Ring {
  /**
   * Largest send arena (bytes per slot) kept in the kernels' WebAssembly memory, which is 32-bit (4 GiB at most,
   * both slots and the scratch vectors together). A bigger all-reduce (a gradient over ~512 MiB at W = 2) gets
   * JavaScript arenas and one more copy per chunk. Lowered by tests to exercise that path.
   */
  static wasmArenaLimit = 1 << 30;
  readonly run: string;
  readonly generation: number;
  readonly rank: number;
  readonly world: number;
  private readonly runId: number;
  private readonly succ: number;
  private readonly pred: number;
  private readonly dataSub: Subscription;
  private readonly ackSub: Subscription;
  private readonly readySub: Subscription;
  /** The successor has answered on its ready subject (see the header); checked before this end's first send. */
  private successorReady = false;
  /** Rejects the wait for the successor in progress, if any (abort() before the first collective has started). */
  private abortWait?: (err: Error) => void;
  private op?: Op;
  /** Last started (step, seq); chunks at or before it (other than the current op's) are stale. */
  private last = { step: -1, seq: -1 };
  /** Chunks of a collective this rank has not started yet (its predecessor is ahead by one). */
  private early: { step: number; seq: number; msg: Uint8Array }[] = [];
  private earlyBytes = 0;
  private closed = false;
  private allReduces = 0;
  /** Reused for chunk bodies that cannot be viewed in place (unaligned or 16-bit). */
  private scratch = new Float32Array(0);
  /**
   * The SIMD kernels, their scratch vectors and the send buffers of the last two all-reduces, in one WebAssembly
   * memory: a reduce-scatter chunk's sum is written straight into its outgoing message and checksummed there.
   * The send buffers alternate: once all-reduce k has completed here, every message of all-reduce k-1 has left
   * this process (k's completion needs a successor to have received one of k's messages, and the connection
   * writes in order), so k+1 may overwrite k-1's buffer. Gathers allocate per call instead (their completion does
   * not depend on this rank's sends).
   */
  private kernels?: Kernels;
  /** Send buffers used instead of the kernels' when an all-reduce is over wasmArenaLimit (same alternation). */
  private jsArenas: (Uint8Array | undefined)[] = [undefined, undefined];
  private readonly counters: RingStats = { rejected: {}, bytesSent: 0, bytesReceived: 0, collectives: 0 };

  constructor(
    private readonly nc: NatsConnection,
    m: RingMembership,
    readonly options: CollectiveOptions,
  ) {
    if (!/^[A-Za-z0-9_-]+$/.test(m.run)) throw new RangeError(`run id ${JSON.stringify(m.run)} must be letters, digits, '-' or '_' (it is a NATS subject token)`);
    if (!Number.isInteger(m.world) || m.world < 1 || m.world > 0xffff) throw new RangeError(`world size must be 1…65535, got ${m.world}`);
    if (!Number.isInteger(m.rank) || m.rank < 0 || m.rank >= m.world) throw new RangeError(`rank must be 0…${m.world - 1}, got ${m.rank}`);
    if (!Number.isInteger(m.generation) || m.generation < 0) throw new RangeError(`generation must be a non-negative integer, got ${m.generation}`);
    this.run = m.run;
    this.generation = m.generation;
    this.rank = m.rank;
    this.world = m.world;
    this.runId = runHash(m.run);
    this.succ = (m.rank + 1) % m.world;
    this.pred = (m.rank + m.world - 1) % m.world;
    this.dataSub = nc.subscribe(`easel.${m.run}.*.*.*.${m.rank}`, { callback: (err, msg) => !err && this.guard(() => this.onChunk(msg.data)) });
    this.ackSub = nc.subscribe(`easel.${m.run}.*.*.*.${m.rank}.ack`, { callback: (err, msg) => !err && this.guard(() => this.onAck(msg.data)) });
    this.readySub = nc.subscribe(this.readySubject(m.rank), { callback: (err, msg) => !err && msg.respond(Empty) });
  }

  /**
   * The element-wise mean of every rank's `values` (same length everywhere), bit-identical on all ranks.
   * `step` must not decrease between calls; several collectives in one step are told apart by call order.
   * `inPlace`: overwrite `values` with the mean instead of returning a fresh array (saves a copy of the gradient);
   * if the collective fails, `values` holds an unspecified mix of inputs and partial results.
   */
  async allReduce(values: Float32Array, { step, inPlace = false }: { step: number; inPlace?: boolean }): Promise<AllReduceResult> {
    const t0 = performance.now();
    const buf = inPlace ? values : new Float32Array(values);
    if (this.world === 1) return { values: buf, nonFinite: !allFinite(buf), seconds: (performance.now() - t0) / 1000 };
    const dtype = WIRE_DTYPE[this.options.wire];
    await this.awaitSuccessor(step);
    const op = await this.run_(Kind.AllReduce, step, dtype, segmentSpans(buf.length, this.world), buf);
    return { values: buf, nonFinite: (op.flags & FLAG_NONFINITE) !== 0, seconds: (performance.now() - t0) / 1000 };
  }

  /** Every rank's `own` (same length everywhere), concatenated in rank order. Exact (float32 on the wire). */
  async allGather(own: Float32Array, { step }: { step: number }): Promise<Float32Array> {
    const buf = new Float32Array(own.length * this.world);
    buf.set(own, own.length * this.rank);
    if (this.world > 1) {
      await this.awaitSuccessor(step);
      await this.run_(Kind.AllGather, step, Dtype.F32, blockSpans(own.length, this.world), buf);
    }
    return buf;
  }

  /** Rank 0's `values` on every rank: rank 0 passes its data, the others a buffer of the same length to fill. */
  async broadcast(values: Float32Array, { step }: { step: number }): Promise<Float32Array> {
    if (this.world > 1) {
      const spans = [{ offset: 0, length: values.length }, ...Array.from({ length: this.world - 1 }, () => ({ offset: values.length, length: 0 }))];
      await this.awaitSuccessor(step);
      await this.run_(Kind.Broadcast, step, Dtype.F32, spans, values);
    }
    return values;
  }

  /** Rejected-chunk counters by reason, and bytes moved. */
  stats(): RingStats {
    return structuredClone(this.counters);
  }

  /** Abandons the collective in flight (it rejects with CollectiveAbortedError). */
  abort(reason = 'aborted'): void {
    if (this.op) this.finish(this.op, new CollectiveAbortedError(`${this.describe(this.op)} ${reason}`));
    else this.abortWait?.(new CollectiveAbortedError(`rank ${this.rank}/${this.world} generation ${this.generation}, waiting for rank ${this.succ}: ${reason}`));
  }

  /** Aborts what is in flight and unsubscribes. The connection stays open (it is the caller's). */
  close(): void {
    if (this.closed) return;
    this.abort('abandoned: ring closed');
    this.closed = true;
    this.dataSub.unsubscribe();
    this.ackSub.unsubscribe();
    this.readySub.unsubscribe();
  }

  // -------------------------------------------------------------------------------------------------------------

  private readySubject(rank: number): string {
    return `easel.${this.run}.g${this.generation}.ready.${rank}`;
  }

  /**
   * Resolves once the successor's end of this generation's ring is open (once per ring; see the header). Chunks
   * the predecessor sends meanwhile wait in `early`. Fails like a collective that made no progress: after timeoutMs.
   */
  private async awaitSuccessor(step: number): Promise<void> {
    if (this.successorReady) return;
    const wait = { aborted: false };
    const aborted = new Promise<never>((_, reject) => {
      this.abortWait = (err) => {
        wait.aborted = true;
        reject(err);
      };
    });
    try {
      await Promise.race([this.askSuccessor(step, wait), aborted]);
    } finally {
      this.abortWait = undefined;
    }
  }

  private async askSuccessor(step: number, wait: { aborted: boolean }): Promise<void> {
    const deadline = performance.now() + this.options.timeoutMs;
    for (let pause = 5; !this.successorReady && !wait.aborted; pause = Math.min(2 * pause, 100)) {
      if (this.closed) throw new CollectiveAbortedError('ring is closed');
      const left = deadline - performance.now();
      if (left <= 0) {
        throw new CollectiveTimeoutError(`rank ${this.succ} did not open generation ${this.generation}'s ring within ${this.options.timeoutMs} ms (rank ${this.rank}/${this.world})`, {
          kind: 'ready',
          step,
          seq: 0,
          received: 0,
          expected: 1,
          waitingFor: this.succ,
        });
      }
      try {
        await this.nc.request(this.readySubject(this.succ), Empty, { timeout: Math.max(1, Math.min(250, left)) });
        this.successorReady = true;
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code !== ErrorCode.NoResponders && code !== ErrorCode.Timeout) throw err;
        await new Promise((r) => setTimeout(r, Math.min(pause, Math.max(0, deadline - performance.now()))));
      }
    }
  }

  private run_(kind: Kind, step: number, dtype: Dtype, spans: Span[], buf: Float32Array): Promise<Op> {
    if (this.closed) return Promise.reject(new CollectiveAbortedError('ring is closed'));
    if (this.op) return Promise.reject(new Error(`${this.describe(this.op)} is still in flight: collectives on one ring run one at a time`));
    if (!Number.isInteger(step) || step < 0 || step > 0xffffffff) return Promise.reject(new RangeError(`step must be a 32-bit non-negative integer, got ${step}`));
    if (step < this.last.step) return Promise.reject(new RangeError(`step ${step} is before the last collective's step ${this.last.step}`));
    if (buf.length > 0xffffffff) return Promise.reject(new RangeError(`${buf.length} elements do not fit a chunk header`));
    const seq = step === this.last.step ? this.last.seq + 1 : 0;
    this.last = { step, seq };
    this.counters.collectives++;
    const per = elementsPerChunk(maxPayload(this.nc), BYTES_PER_ELEMENT[dtype], this.options.maxChunkBytes);
    const counts = spans.map((s) => chunkCount(s.length, per));
    const chunkBase: number[] = [];
    let chunksTotal = 0;
    for (const c of counts) {
      chunkBase.push(chunksTotal);
      chunksTotal += c;
    }
    // What this rank receives: in reduce-scatter every segment but (rank-1)'s, in all-gather every segment it does not own.
    let expected = 0;
    for (let s = 0; s < this.world; s++) {
      if (kind === Kind.AllReduce && s !== this.mod(this.rank - 1)) expected += counts[s];
      if (s !== this.rank) expected += counts[s];
    }
    return new Promise<Op>((resolve, reject) => {
      const op: Op = {
        kind,
        step,
        seq,
        dtype,
        spans,
        per,
        total: buf.length,
        buf,
        chunkBase,
        chunksTotal,
        seen: new Uint8Array(2 * chunksTotal),
        expected,
        received: 0,
        flags: 0,
        sent: 0,
        acked: 0,
        queue: [],
        arena: kind === Kind.AllReduce ? this.arena(spans, per, dtype) : undefined,
        arenaAt: 0,
        subject: `easel.${this.run}.g${this.generation}.s${step}.${KIND_TOKEN[kind]}${seq}.${this.succ}`,
        consumed: 0,
        ackedToPred: 0,
        started: performance.now(),
        resolve: () => resolve(op),
        reject,
      };
      this.op = op;
      this.touch(op);
      if (kind === Kind.AllReduce) {
        // Hop 0 of reduce-scatter: this rank starts segment rank-1's sum with its own values.
        const s = this.mod(this.rank - 1);
        for (let c = 0; c < counts[s]; c++) this.sendChunk(op, Phase.ReduceScatter, 0, s, c);
      } else {
        for (let c = 0; c < counts[this.rank]; c++) this.sendChunk(op, Phase.AllGather, 0, this.rank, c);
      }
      // Chunks that arrived before this call.
      const mine = this.early.filter((e) => e.step === step && e.seq === seq);
      this.early = this.early.filter((e) => !(e.step === step && e.seq === seq));
      for (const e of mine) {
        this.earlyBytes -= e.msg.byteLength;
        if (this.op === op) this.onChunk(e.msg);
      }
      this.maybeDone(op);
    });
  }

  /**
   * A send buffer big enough for one all-reduce's messages (W-1 segments in each phase, each at most the largest,
   * each message followed by ARENA_SLACK), with kernels for chunks of `per` elements. Bigger needs get new kernels
   * (a new memory): messages of the previous all-reduce that nats.js has not written yet keep the old one alive.
   */
  private arena(spans: Span[], per: number, dtype: Dtype): Uint8Array {
    const largest = Math.max(...spans.map((s) => s.length * BYTES_PER_ELEMENT[dtype] + chunkCount(s.length, per) * (HEADER_BYTES + ARENA_SLACK)));
    const bytes = 2 * (this.world - 1) * largest;
    const slot = (this.allReduces++ % 2) as 0 | 1;
    const inWasm = bytes <= Ring.wasmArenaLimit;
    const have = this.kernels;
    if (!have || have.capacity < per || (inWasm && have.arenaBytes < bytes)) {
      this.kernels = Kernels.create(Math.max(per, have?.capacity ?? 0), inWasm ? Math.max(bytes, have?.arenaBytes ?? 0) : (have?.arenaBytes ?? 0));
    }
    if (inWasm) return this.kernels!.arena(slot);
    const js = this.jsArenas[slot];
    return js && js.byteLength >= bytes ? js : (this.jsArenas[slot] = new Uint8Array(bytes));
  }

  private mod(x: number): number {
    return ((x % this.world) + this.world) % this.world;
  }

  private describe(op: Op): string {
    return `${Kind[op.kind]} of step ${op.step}${op.seq ? ` (#${op.seq})` : ''} on rank ${this.rank}/${this.world} generation ${this.generation}`;
  }

  private reject(reason: RejectReason, detail: string): void {
    this.counters.rejected[reason] = (this.counters.rejected[reason] ?? 0) + 1;
    log.warn('chunk rejected', { reason, detail, run: this.run, generation: this.generation, rank: this.rank });
  }

  /** A bug here must fail the collective, not the NATS connection's reader (which would drop the connection). */
  private guard(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      log.error('collective failed while handling a message', { error: (err as Error).stack ?? String(err) });
      if (this.op) this.finish(this.op, err as Error);
    }
  }

  private onChunk(msg: Uint8Array): void {
    let h: ChunkHeader;
    try {
      // The body's checksum is checked in accept(), where the body is copied anyway.
      h = decodeHeader(msg, this.options.checksum, false);
    } catch (err) {
      if (err instanceof MalformedChunk) return this.reject(err.reason, err.message);
      throw err;
    }
    if (h.run !== this.runId) return this.reject('foreign-run', `run hash ${h.run} ≠ ${this.runId}`);
    if (h.generation < this.generation) return this.reject('stale-generation', `generation ${h.generation} < ${this.generation}`);
    if (h.generation > this.generation) return this.reject('future-generation', `generation ${h.generation} > ${this.generation}`);
    const op = this.op;
    if (!op || h.step !== op.step || h.seq !== op.seq) {
      const ahead = h.step > this.last.step || (h.step === this.last.step && h.seq > this.last.seq);
      if (!ahead) return this.reject('stale-step', `step ${h.step} #${h.seq} is done here (last started: step ${this.last.step} #${this.last.seq})`);
      if (this.earlyBytes + msg.byteLength > 4 * this.options.windowBytes) return this.reject('overflow', `too many chunks ahead of this rank (step ${h.step})`);
      this.early.push({ step: h.step, seq: h.seq, msg });
      this.earlyBytes += msg.byteLength;
      return;
    }
    this.accept(op, h, msg);
  }

  /** Checks a chunk of the current collective against what this rank expects, then adds/stores and forwards it. */
  private accept(op: Op, h: ChunkHeader, msg: Uint8Array): void {
    if (h.kind !== op.kind) return this.reject('wrong-kind', `${Kind[h.kind]} chunk for a ${Kind[op.kind]}`);
    if (h.from !== this.pred) return this.reject('wrong-sender', `from rank ${h.from}, expected ${this.pred}`);
    if (h.dtype !== op.dtype) return this.reject('wrong-dtype', `${Dtype[h.dtype]} on the wire, expected ${Dtype[op.dtype]}`);
    const rsPhase = h.phase === Phase.ReduceScatter;
    if (rsPhase && op.kind !== Kind.AllReduce) return this.reject('wrong-sequence', 'reduce-scatter chunk in a gather');
    // Segment s reaches rank r at hop k: reduce-scatter s = r-2-k, gather s = r-1-k (mod W); no segment comes back.
    const seg = this.mod(this.rank - (rsPhase ? 2 : 1) - h.hop);
    if (h.hop > this.world - 2 || h.segment !== seg) return this.reject('wrong-sequence', `segment ${h.segment} at hop ${h.hop} (${Phase[h.phase]}), expected segment ${seg}`);
    const span = op.spans[h.segment];
    const chunks = chunkCount(span.length, op.per);
    if (h.total !== op.total || h.chunks !== chunks || h.chunk >= chunks) {
      return this.reject('wrong-layout', `chunk ${h.chunk}/${h.chunks} of a ${h.total}-element vector, expected ${chunks} chunks of a ${op.total}-element vector`);
    }
    const cs = chunkSpan(span, h.chunk, op.per);
    if (h.offset !== cs.offset || h.length !== cs.length) return this.reject('wrong-layout', `elements ${h.offset}+${h.length}, expected ${cs.offset}+${cs.length}`);
    const bit = h.phase * op.chunksTotal + op.chunkBase[h.segment] + h.chunk;
    if (op.seen[bit]) return this.reject('duplicate', `chunk ${h.chunk} of segment ${h.segment} (${Phase[h.phase]}) again`);
    // A float32 reduce-scatter body goes into the kernels' b (its operand) and is checksummed there; others are
    // checksummed through a scratch copy.
    const kernels = rsPhase && op.dtype === Dtype.F32 ? this.kernels! : undefined;
    if (kernels) new Uint8Array(kernels.b.buffer, kernels.b.byteOffset, cs.length * 4).set(msg.subarray(HEADER_BYTES));
    if (checksumRequired(h, this.options.checksum)) {
      try {
        checkBody(h, kernels ? kernels.bChecksum(cs.length) : bodyChecksum(msg.subarray(HEADER_BYTES)));
      } catch (err) {
        if (err instanceof MalformedChunk) return this.reject(err.reason, err.message);
        throw err;
      }
    }
    op.seen[bit] = 1;
    op.received++;
    this.counters.bytesReceived += msg.byteLength;
    op.consumed += msg.byteLength;
    this.touch(op);

    const dst = op.buf.subarray(cs.offset, cs.offset + cs.length);
    const last = h.hop === this.world - 2;
    if (kernels) {
      // SIMD kernels (kernels.ts): this rank's values are copied in as operand a (the received body is in b
      // already), and the result is written straight into the outgoing message in the kernels' send arena and
      // checksummed there. An intermediate rank's partial sum is only forwarded (the all-gather overwrites dst
      // later); the owner's mean also goes into dst.
      kernels.a.set(dst);
      const next = this.outgoing(op, cs.length);
      const body = next.subarray(HEADER_BYTES);
      // Into the message when the arena is in the kernels' memory, else into their `out` and copied.
      const inPlace = kernels.owns(body);
      const to = inPlace ? body : undefined;
      if (!last) kernels.add(cs.length, to);
      else if (!kernels.mean(cs.length, this.world, to)) op.flags |= FLAG_NONFINITE;
      if (!inPlace) body.set(new Uint8Array(kernels.out.buffer, kernels.out.byteOffset, cs.length * 4));
      if (last) dst.set(new Float32Array(body.buffer, body.byteOffset, cs.length));
      const checksum = !this.options.checksum ? 0 : (inPlace ? kernels.checksumInPlace(body) : kernels.outChecksum(cs.length)) || 1;
      if (!last) this.post(op, next, Phase.ReduceScatter, h.hop + 1, h.segment, h.chunk, op.flags, checksum);
      else this.post(op, next, Phase.AllGather, 0, h.segment, h.chunk, op.flags, checksum);
    } else if (rsPhase) {
      const body = this.decodeBody(op.dtype, msg, op.per);
      addInto(dst, dst, body);
      if (!last) {
        this.sendChunk(op, Phase.ReduceScatter, h.hop + 1, h.segment, h.chunk);
      } else {
        // This rank owns the segment: its final bytes are the ones every rank will hold.
        divideBy(dst, this.world);
        if (op.dtype === Dtype.BF16) decodeBf16(encodeBf16(dst), dst);
        if (op.dtype === Dtype.F16) decodeF16(encodeF16(dst), dst);
        if (!allFinite(dst)) op.flags |= FLAG_NONFINITE;
        this.sendChunk(op, Phase.AllGather, 0, h.segment, h.chunk);
      }
    } else {
      dst.set(this.decodeBody(op.dtype, msg, op.per));
      op.flags |= h.flags;
      if (!last) {
        // Forward the received body verbatim: its checksum is the one just checked, no need to compute it again.
        const out = this.outgoing(op, cs.length);
        out.set(msg.subarray(HEADER_BYTES), HEADER_BYTES);
        this.post(op, out, Phase.AllGather, h.hop + 1, h.segment, h.chunk, h.flags, this.options.checksum ? h.checksum : 0);
      }
    }
    this.ackPredecessor(op, op.received === op.expected);
    this.maybeDone(op);
  }

  /** The chunk's values as float32: a view of the message when aligned, else decoded into a reused scratch buffer. */
  private decodeBody(dtype: Dtype, msg: Uint8Array, per: number): Float32Array {
    const n = (msg.byteLength - HEADER_BYTES) / BYTES_PER_ELEMENT[dtype];
    if (this.scratch.length < per) this.scratch = new Float32Array(per);
    const out = this.scratch.subarray(0, n);
    const at = msg.byteOffset + HEADER_BYTES;
    if (dtype === Dtype.F32) {
      if (at % 4 === 0) return new Float32Array(msg.buffer, at, n);
      // Float32Array views need 4-byte alignment; NATS hands out bodies at any offset.
      new Uint8Array(out.buffer, 0, n * 4).set(msg.subarray(HEADER_BYTES));
      return out;
    }
    const half = at % 2 === 0 ? new Uint16Array(msg.buffer, at, n) : new Uint16Array(copyOf(msg.subarray(HEADER_BYTES)).buffer);
    return dtype === Dtype.BF16 ? decodeBf16(half, out) : decodeF16(half, out);
  }

  private encodeBody(dtype: Dtype, values: Float32Array): Uint16Array {
    return dtype === Dtype.BF16 ? encodeBf16(values) : encodeF16(values);
  }

  /** Builds chunk `chunk` of `segment` from op.buf and sends it to the successor (or queues it behind the window). */
  private sendChunk(op: Op, phase: Phase, hop: number, segment: number, chunk: number, flags = op.flags): void {
    const cs = chunkSpan(op.spans[segment], chunk, op.per);
    const values = op.buf.subarray(cs.offset, cs.offset + cs.length);
    // The final values of an all-reduce travel in the wire dtype too; everything else of a gather is float32.
    const msg = this.outgoing(op, cs.length);
    if (op.dtype === Dtype.F32) new Float32Array(msg.buffer, msg.byteOffset + HEADER_BYTES, cs.length).set(values);
    else msg.set(new Uint8Array(this.encodeBody(op.dtype, values).buffer), HEADER_BYTES);
    this.post(op, msg, phase, hop, segment, chunk, flags);
  }

  /** Room for one outgoing chunk of `length` elements in the wire dtype: carved from the all-reduce's arena, else fresh. */
  private outgoing(op: Op, length: number): Uint8Array {
    const size = HEADER_BYTES + length * BYTES_PER_ELEMENT[op.dtype];
    if (!op.arena) return new Uint8Array(size);
    const msg = op.arena.subarray(op.arenaAt, op.arenaAt + size);
    // The slack after each message is where an in-place checksum reads its zero padding; 8-byte steps keep bodies aligned.
    op.arenaAt += (size + ARENA_SLACK) & ~7;
    return msg;
  }

  /**
   * Writes the header of a chunk whose body is already in `msg` (with the body's checksum, computed here unless the
   * caller knows it) and sends it to the successor, or queues it behind the window.
   */
  private post(op: Op, msg: Uint8Array, phase: Phase, hop: number, segment: number, chunk: number, flags: number, checksum?: number): void {
    const cs = chunkSpan(op.spans[segment], chunk, op.per);
    encodeHeader(
      {
        kind: op.kind,
        phase,
        dtype: op.dtype,
        run: this.runId,
        generation: this.generation,
        step: op.step,
        seq: op.seq,
        flags,
        from: this.rank,
        hop,
        segment,
        chunk,
        chunks: chunkCount(op.spans[segment].length, op.per),
        offset: cs.offset,
        length: cs.length,
        total: op.total,
        checksum: checksum ?? (this.options.checksum ? this.checksumOf(msg.subarray(HEADER_BYTES)) : 0),
      },
      msg,
    );
    op.queue.push(msg);
    this.pump(op);
  }

  /** A body's checksum: in place when it lies in the kernels' send arena, else through a scratch copy. */
  private checksumOf(body: Uint8Array): number {
    return this.kernels?.owns(body) ? this.kernels.checksumInPlace(body) || 1 : bodyChecksum(body);
  }

  /** Publishes queued chunks while the successor's credit window allows. */
  private pump(op: Op): void {
    const window = this.options.windowBytes;
    while (op.queue.length > 0) {
      const msg = op.queue[0];
      // Always let one chunk through an empty window, so a window smaller than a chunk cannot stall.
      if (op.sent - op.acked > 0 && op.sent - op.acked + msg.byteLength > window) return;
      op.queue.shift();
      op.sent += msg.byteLength;
      this.counters.bytesSent += msg.byteLength;
      this.nc.publish(op.subject, msg);
    }
  }

  private ackPredecessor(op: Op, force: boolean): void {
    if (!force && op.consumed - op.ackedToPred < this.options.windowBytes / 4) return;
    op.ackedToPred = op.consumed;
    const ack = new Uint8Array(ACK_BYTES);
    const dv = new DataView(ack.buffer);
    dv.setUint32(0, this.runId, true);
    dv.setUint32(4, this.generation, true);
    dv.setUint32(8, op.step, true);
    dv.setUint16(12, op.seq, true);
    dv.setUint16(14, op.kind, true);
    dv.setFloat64(16, op.consumed, true);
    this.nc.publish(`easel.${this.run}.g${this.generation}.s${op.step}.${KIND_TOKEN[op.kind]}${op.seq}.${this.pred}.ack`, ack);
  }

  private onAck(data: Uint8Array): void {
    const op = this.op;
    if (!op || data.byteLength !== ACK_BYTES) return;
    const dv = new DataView(data.buffer, data.byteOffset, ACK_BYTES);
    if (dv.getUint32(0, true) !== this.runId || dv.getUint32(4, true) !== this.generation) return;
    if (dv.getUint32(8, true) !== op.step || dv.getUint16(12, true) !== op.seq || dv.getUint16(14, true) !== op.kind) return;
    op.acked = Math.max(op.acked, dv.getFloat64(16, true));
    this.touch(op);
    this.pump(op);
    this.maybeDone(op);
  }

  /** Done once everything expected arrived and everything owed to the successor went out. */
  private maybeDone(op: Op): void {
    if (this.op === op && op.received === op.expected && op.queue.length === 0) this.finish(op);
  }

  private finish(op: Op, err?: Error): void {
    clearTimeout(op.timer);
    if (this.op === op) this.op = undefined;
    if (err) {
      op.reject(err);
    } else {
      log.debug('collective done', { kind: Kind[op.kind], step: op.step, seq: op.seq, ms: Math.round(performance.now() - op.started) });
      op.resolve();
    }
  }

  /** (Re)arms the no-progress timer. */
  private touch(op: Op): void {
    clearTimeout(op.timer);
    op.timer = setTimeout(() => {
      const detail = { kind: Kind[op.kind], step: op.step, seq: op.seq, received: op.received, expected: op.expected, waitingFor: this.pred };
      const queued = op.queue.length ? `, ${op.queue.length} chunks waiting for rank ${this.succ}'s acknowledgement` : '';
      this.finish(
        op,
        new CollectiveTimeoutError(
          `${this.describe(op)} made no progress for ${this.options.timeoutMs} ms: received ${op.received}/${op.expected} chunks from rank ${this.pred}${queued}`,
          detail,
        ),
      );
    }, this.options.timeoutMs);
  }
}
