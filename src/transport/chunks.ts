// Chunk arithmetic and the binary chunk header of easel's collectives: pure functions, no I/O.
//
// A flat vector of n elements over a ring of W ranks is cut into W segments (sizes differ by at most one element;
// with n < W some are empty), and each segment into chunks small enough that header + body fits the server's
// max_payload. Every chunk on the wire is one NATS message: a fixed 56-byte little-endian header, then the body
// (`length` elements of `dtype`).
import { checksum32 } from './kernels.ts';

/** Where a piece of the flat vector lives: element offset and element count. */
export interface Span {
  offset: number;
  length: number;
}

/** Element spans of the W segments of an n-element vector (the first n mod W segments are one element longer). */
export function segmentSpans(n: number, world: number): Span[] {
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`vector length must be a non-negative integer, got ${n}`);
  if (!Number.isInteger(world) || world < 1) throw new RangeError(`world size must be a positive integer, got ${world}`);
  const base = Math.floor(n / world);
  const rem = n % world;
  const spans: Span[] = [];
  let offset = 0;
  for (let s = 0; s < world; s++) {
    const length = base + (s < rem ? 1 : 0);
    spans.push({ offset, length });
    offset += length;
  }
  return spans;
}

/** Spans of `count` consecutive blocks of `blockLength` elements each (allGather: block b = rank b's part). */
export function blockSpans(blockLength: number, count: number): Span[] {
  return Array.from({ length: count }, (_, b) => ({ offset: b * blockLength, length: blockLength }));
}

/** Elements per chunk so that header + body fits in `maxPayload` bytes (optionally capped at `maxChunkBytes`). */
export function elementsPerChunk(maxPayload: number, bytesPerElement: number, maxChunkBytes = Infinity): number {
  const bodyBytes = Math.min(maxPayload, maxChunkBytes) - HEADER_BYTES;
  const per = Math.floor(bodyBytes / bytesPerElement);
  if (per < 1) throw new RangeError(`max payload ${maxPayload} B leaves no room for a ${HEADER_BYTES}-byte chunk header and one element`);
  return per;
}

/** Number of chunks a span of `length` elements takes (0 for an empty span). */
export function chunkCount(length: number, perChunk: number): number {
  return Math.ceil(length / perChunk);
}

/** Element span (within the whole vector) of chunk `index` of `span`. */
export function chunkSpan(span: Span, index: number, perChunk: number): Span {
  const start = index * perChunk;
  if (index < 0 || start >= span.length) throw new RangeError(`chunk ${index} is outside a span of ${span.length} elements`);
  return { offset: span.offset + start, length: Math.min(perChunk, span.length - start) };
}

// ---------------------------------------------------------------------------------------------------------------
// Header

export const HEADER_BYTES = 56;
/** 'EASL' */
export const MAGIC = 0x4c534145;
/** 2: the body checksum is checksum32 (kernels.ts); 1 had CRC-32. */
export const VERSION = 2;

/** Which collective a chunk belongs to. */
export enum Kind {
  AllReduce = 1,
  AllGather = 2,
  Broadcast = 3,
}
/** Reduce-scatter (partial sums travel) or all-gather (final values travel; also used by allGather and broadcast). */
export enum Phase {
  ReduceScatter = 0,
  AllGather = 1,
}
/** Element type of the body on the wire. */
export enum Dtype {
  F32 = 0,
  BF16 = 1,
  F16 = 2,
}
export const BYTES_PER_ELEMENT: Record<Dtype, number> = { [Dtype.F32]: 4, [Dtype.BF16]: 2, [Dtype.F16]: 2 };

/** Flag bit: the sender saw a NaN or ±Inf in the final values of its segment. */
export const FLAG_NONFINITE = 1;

export interface ChunkHeader {
  kind: Kind;
  phase: Phase;
  dtype: Dtype;
  /** runHash(run id): chunks of another run are foreign. */
  run: number;
  generation: number;
  step: number;
  /** Which collective within the step (0, 1, … in call order), so two allGathers in one step never mix. */
  seq: number;
  flags: number;
  /** Sending rank. */
  from: number;
  /** Hop within the phase (0 = first send of the segment). */
  hop: number;
  segment: number;
  /** Chunk index within the segment, and how many chunks the segment has. */
  chunk: number;
  chunks: number;
  /** Element offset of this chunk within the whole vector, and its element count. */
  offset: number;
  length: number;
  /** Element count of the whole vector. */
  total: number;
  /** checksum32 of the body (0 when checksums are off: see `checksum` in CollectiveOptions). */
  checksum: number;
}

/** 32-bit FNV-1a of the run id: a fixed-size stand-in for it in every header. */
export function runHash(run: string): number {
  let h = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(run)) {
    h ^= byte;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

const U16 = 0xffff;
const U32 = 0xffffffff;

/** Writes `h` into the first HEADER_BYTES of `buf`. Throws if a field does not fit its slot. */
export function encodeHeader(h: ChunkHeader, buf: Uint8Array): void {
  const dv = new DataView(buf.buffer, buf.byteOffset, HEADER_BYTES);
  const u8 = (at: number, v: number, name: string) => (check(v, 0xff, name), dv.setUint8(at, v));
  const u16 = (at: number, v: number, name: string) => (check(v, U16, name), dv.setUint16(at, v, true));
  const u32 = (at: number, v: number, name: string) => (check(v, U32, name), dv.setUint32(at, v, true));
  u32(0, MAGIC, 'magic');
  u8(4, VERSION, 'version');
  u8(5, h.kind, 'kind');
  u8(6, h.phase, 'phase');
  u8(7, h.dtype, 'dtype');
  u32(8, h.run, 'run');
  u32(12, h.generation, 'generation');
  u32(16, h.step, 'step');
  u16(20, h.seq, 'seq');
  u16(22, h.flags, 'flags');
  u16(24, h.from, 'from');
  u16(26, h.hop, 'hop');
  u32(28, h.segment, 'segment');
  u32(32, h.chunk, 'chunk');
  u32(36, h.chunks, 'chunks');
  u32(40, h.offset, 'offset');
  u32(44, h.length, 'length');
  u32(48, h.total, 'total');
  u32(52, h.checksum, 'checksum');
}

function check(v: number, max: number, name: string): void {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new RangeError(`chunk header field ${name} = ${v} does not fit (0…${max})`);
}

/** Why a message is not a well-formed chunk. */
export class MalformedChunk extends Error {
  constructor(
    readonly reason: 'short' | 'magic' | 'version' | 'kind' | 'phase' | 'dtype' | 'size' | 'checksum',
    message: string,
  ) {
    super(message);
  }
}

/**
 * Parses and checks the parts of a chunk that need no context: magic, version, enum ranges, body size against
 * `length` × dtype, and the body's checksum (unless the header's checksum is 0 and `requireChecksum` is false).
 * `verifyBody: false` leaves the checksum to a caller that checks it where it copies the body anyway (the ring:
 * see checksumRequired). Context checks (run, generation, step, sender, layout) are the receiver's job.
 */
export function decodeHeader(msg: Uint8Array, requireChecksum = false, verifyBody = true): ChunkHeader {
  if (msg.byteLength < HEADER_BYTES) throw new MalformedChunk('short', `${msg.byteLength}-byte message is shorter than the ${HEADER_BYTES}-byte chunk header`);
  const dv = new DataView(msg.buffer, msg.byteOffset, HEADER_BYTES);
  if (dv.getUint32(0, true) !== MAGIC) throw new MalformedChunk('magic', 'not an easel chunk (bad magic)');
  if (dv.getUint8(4) !== VERSION) throw new MalformedChunk('version', `chunk format version ${dv.getUint8(4)}, expected ${VERSION}`);
  const h: ChunkHeader = {
    kind: dv.getUint8(5),
    phase: dv.getUint8(6),
    dtype: dv.getUint8(7),
    run: dv.getUint32(8, true),
    generation: dv.getUint32(12, true),
    step: dv.getUint32(16, true),
    seq: dv.getUint16(20, true),
    flags: dv.getUint16(22, true),
    from: dv.getUint16(24, true),
    hop: dv.getUint16(26, true),
    segment: dv.getUint32(28, true),
    chunk: dv.getUint32(32, true),
    chunks: dv.getUint32(36, true),
    offset: dv.getUint32(40, true),
    length: dv.getUint32(44, true),
    total: dv.getUint32(48, true),
    checksum: dv.getUint32(52, true),
  };
  if (!(h.kind in Kind)) throw new MalformedChunk('kind', `unknown collective kind ${h.kind}`);
  if (!(h.phase in Phase)) throw new MalformedChunk('phase', `unknown phase ${h.phase}`);
  if (!(h.dtype in Dtype)) throw new MalformedChunk('dtype', `unknown dtype ${h.dtype}`);
  const bodyBytes = msg.byteLength - HEADER_BYTES;
  if (bodyBytes !== h.length * BYTES_PER_ELEMENT[h.dtype as Dtype]) {
    throw new MalformedChunk('size', `body is ${bodyBytes} bytes but the header says ${h.length} ${Dtype[h.dtype]} elements`);
  }
  if (verifyBody && checksumRequired(h, requireChecksum)) checkBody(h, bodyChecksum(msg.subarray(HEADER_BYTES)));
  return h;
}

/** Whether a chunk's body must match its header's checksum: always when required, else when the sender set one. */
export function checksumRequired(h: ChunkHeader, requireChecksum: boolean): boolean {
  return h.checksum !== 0 || requireChecksum;
}

/** Throws MalformedChunk('checksum') unless `sum`, the body's checksum32 as received, is the header's. */
export function checkBody(h: ChunkHeader, sum: number): void {
  if ((sum || 1) !== h.checksum) throw new MalformedChunk('checksum', `body checksum ${(sum || 1).toString(16)} ≠ header's ${h.checksum.toString(16)}`);
}

/** checksum32 of a chunk body (kernels.ts: SIMD sums, ~3× faster than zlib's CRC-32), never 0 (0 in a header means "not computed"). */
export function bodyChecksum(body: Uint8Array): number {
  return checksum32(body) || 1;
}
