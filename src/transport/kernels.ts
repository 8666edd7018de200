// The ring's float32 arithmetic as a tiny WebAssembly SIMD module: four lanes per instruction instead of V8's
// one element per loop iteration (V8 does not vectorise JavaScript loops). Measured on the development VM over
// 32 MB: the JavaScript add loop ~13 ms and the owner's add/divide/check loop ~19 ms, against ~2 ms for a memcpy;
// the kernels themselves run near memcpy speed, so copying a chunk's operands into the module's memory and the result
// out again still costs less than the JavaScript loop alone.
//
// Results are bit-identical to the JavaScript loops: WebAssembly's f32 add and div are IEEE-754 binary32 with
// round-to-nearest-even and no flush-to-zero, which is what Math.fround(a + b) and Math.fround(s / w) compute
// (rounding a double result of float32 operands to float32 is exact for + and /). Only NaN payloads may differ,
// and any NaN makes the step non-finite anyway.
//
// The module is hand-assembled (no toolchain in the build): exports
//   add(a, b, o, n)        o[i] = a[i] + b[i]                        (byte offsets into memory, n elements)
//   mean(a, b, o, n, w)    o[i] = (a[i] + b[i]) / w, returns 1 when every o[i] is finite, else 0
//   sums(p, blocks, acc)   the running sums of checksum32 (below) over `blocks` 16-byte blocks at p, stored at acc

const I32 = 0x7f;
const F32 = 0x7d;
const V128 = 0x7b;

/** Unsigned LEB128. */
function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  } while (n !== 0);
  return out;
}

/** Signed LEB128 (small constants only). */
function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const byte = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (byte & 0x40) === 0) || (n === -1 && (byte & 0x40) !== 0)) return [...out, byte];
    out.push(byte | 0x80);
  }
}

const section = (id: number, body: number[]) => [id, ...uleb(body.length), ...body];
const vec = (items: number[][]) => [...uleb(items.length), ...items.flat()];
const str = (s: string) => [...uleb(s.length), ...[...s].map((c) => c.charCodeAt(0))];

// Opcodes used below.
const get = (i: number) => [0x20, ...uleb(i)];
const set = (i: number) => [0x21, ...uleb(i)];
const tee = (i: number) => [0x22, ...uleb(i)];
const i32c = (v: number) => [0x41, ...sleb(v)];
const I32_ADD = 0x6a;
const I32_AND = 0x71;
const I32_OR = 0x72;
const I32_SHL = 0x74;
const I32_GE_U = 0x4f;
const I32_EQZ = 0x45;
const F32_LOAD = [0x2a, 2, 0];
const F32_STORE = [0x38, 2, 0];
const F32_ADD = 0x92;
const F32_SUB = 0x93;
const F32_DIV = 0x95;
const F32_NE = 0x5c;
const simd = (op: number, ...imm: number[]) => [0xfd, ...uleb(op), ...imm];
const V128_LOAD = simd(0x00, 0, 0);
const V128_STORE = simd(0x0b, 0, 0);
const F32X4_SPLAT = simd(0x13);
const F32X4_NE = simd(0x42);
const V128_OR = simd(0x50);
const V128_ANY_TRUE = simd(0x53);
const F32X4_ADD = simd(0xe4);
const F32X4_SUB = simd(0xe5);
const F32X4_DIV = simd(0xe7);
const I64X2_EXTEND_LOW_U32 = simd(0xc9);
const I64X2_EXTEND_HIGH_U32 = simd(0xca);
const I64X2_ADD = simd(0xce);
const v128StoreAt = (offset: number) => simd(0x0b, 0, ...uleb(offset));
const BLOCK = [0x02, 0x40];
const LOOP = [0x03, 0x40];
const END = 0x0b;
const br = (depth: number) => [0x0c, depth];
const brIf = (depth: number) => [0x0d, depth];

/**
 * `while (i < limit) { body; i += step }` over byte offset local `i` (the two loops of every kernel: 16 bytes at a
 * time, then the tail 4 bytes at a time).
 */
function loop(i: number, limit: number, step: number, body: number[]): number[] {
  return [...BLOCK, ...LOOP, ...get(i), ...get(limit), I32_GE_U, ...brIf(1), ...body, ...get(i), ...i32c(step), I32_ADD, ...set(i), ...br(0), END, END];
}

/** Locals i (byte offset), bytes (n × 4) and vecEnd (bytes rounded down to 16) from parameter n. */
function bounds(n: number, bytes: number, vecEnd: number): number[] {
  return [...get(n), ...i32c(2), I32_SHL, ...tee(bytes), ...i32c(-16), I32_AND, ...set(vecEnd)];
}

/** Pushes address param `p` + byte offset `i`. */
const at = (p: number, i: number) => [...get(p), ...get(i), I32_ADD];

function addBody(): number[] {
  // params a=0 b=1 o=2 n=3; locals i=4 bytes=5 vecEnd=6
  const [a, b, o, n, i, bytes, vecEnd] = [0, 1, 2, 3, 4, 5, 6];
  const code = [
    ...bounds(n, bytes, vecEnd),
    ...loop(i, vecEnd, 16, [...at(o, i), ...at(a, i), ...V128_LOAD, ...at(b, i), ...V128_LOAD, ...F32X4_ADD, ...V128_STORE]),
    ...loop(i, bytes, 4, [...at(o, i), ...at(a, i), ...F32_LOAD, ...at(b, i), ...F32_LOAD, F32_ADD, ...F32_STORE]),
    END,
  ];
  return [...vec([[3, I32]]), ...code];
}

function meanBody(): number[] {
  // params a=0 b=1 o=2 n=3 w=4 (f32); locals i=5 bytes=6 vecEnd=7 bad=8 (i32), wv=9 acc=10 x=11 (v128), xs=12 (f32)
  const [a, b, o, n, w, i, bytes, vecEnd, bad, wv, acc, x, xs] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
  const code = [
    ...bounds(n, bytes, vecEnd),
    ...get(w), ...F32X4_SPLAT, ...set(wv),
    // x = (a + b) / w; o = x; acc |= (x - x) != (x - x)   (x - x is NaN exactly when x is NaN or ±Inf)
    ...loop(i, vecEnd, 16, [
      ...at(o, i), ...at(a, i), ...V128_LOAD, ...at(b, i), ...V128_LOAD, ...F32X4_ADD, ...get(wv), ...F32X4_DIV, ...tee(x), ...V128_STORE,
      ...get(acc), ...get(x), ...get(x), ...F32X4_SUB, ...tee(x), ...get(x), ...F32X4_NE, ...V128_OR, ...set(acc),
    ]),
    ...loop(i, bytes, 4, [
      ...at(o, i), ...at(a, i), ...F32_LOAD, ...at(b, i), ...F32_LOAD, F32_ADD, ...get(w), F32_DIV, ...tee(xs), ...F32_STORE,
      ...get(bad), ...get(xs), ...get(xs), F32_SUB, ...tee(xs), ...get(xs), F32_NE, I32_OR, ...set(bad),
    ]),
    ...get(acc), ...V128_ANY_TRUE, ...get(bad), I32_OR, I32_EQZ,
    END,
  ];
  return [...vec([[4, I32], [3, V128], [1, F32]]), ...code];
}

function sumsBody(): number[] {
  // params p=0 blocks=1 acc=2; locals i=3 end=4 (i32), s1lo=5 s1hi=6 s2lo=7 s2hi=8 v=9 (v128)
  const [p, blocks, acc, i, end, s1lo, s1hi, s2lo, s2hi, v] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
  // Words w (u32, little-endian) widened to u64 lanes: s1 += w; s2 += s1 (lanes 0-1 = words 0-1 of each block, 2-3 = words 2-3).
  const half = (extend: number[], s1: number, s2: number) => [...extend, ...get(s1), ...I64X2_ADD, ...tee(s1), ...get(s2), ...I64X2_ADD, ...set(s2)];
  const code = [
    ...get(p), ...set(i),
    ...get(blocks), ...i32c(4), I32_SHL, ...get(p), I32_ADD, ...set(end),
    ...loop(i, end, 16, [...get(i), ...V128_LOAD, ...tee(v), ...half(I64X2_EXTEND_LOW_U32, s1lo, s2lo), ...get(v), ...half(I64X2_EXTEND_HIGH_U32, s1hi, s2hi)]),
    ...[s1lo, s1hi, s2lo, s2hi].flatMap((s, k) => [...get(acc), ...get(s), ...v128StoreAt(16 * k)]),
    END,
  ];
  return [...vec([[2, I32], [5, V128]]), ...code];
}

function moduleBytes(): Uint8Array<ArrayBuffer> {
  const types = section(1, vec([
    [0x60, ...vec([[I32], [I32], [I32], [I32]]), ...vec([])],
    [0x60, ...vec([[I32], [I32], [I32], [I32], [F32]]), ...vec([[I32]])],
    [0x60, ...vec([[I32], [I32], [I32]]), ...vec([])],
  ]));
  const imports = section(2, vec([[...str('e'), ...str('m'), 0x02, 0x00, 0x00]]));
  const funcs = section(3, vec([[0], [1], [2]]));
  const exports = section(7, vec([[...str('add'), 0x00, 0], [...str('mean'), 0x00, 1], [...str('sums'), 0x00, 2]]));
  const bodies = [addBody(), meanBody(), sumsBody()].map((b) => [...uleb(b.length), ...b]);
  const code = section(10, vec(bodies));
  return new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, ...types, ...imports, ...funcs, ...exports, ...code]);
}

let compiled: WebAssembly.Module | undefined;
function kernelModule(): WebAssembly.Module {
  if (!compiled) {
    const bytes = moduleBytes();
    if (!WebAssembly.validate(bytes)) throw new Error('the ring needs WebAssembly SIMD (Node.js ≥ 20 on x64 with SSE4.1, or on arm64)');
    compiled = new WebAssembly.Module(bytes);
  }
  return compiled;
}

interface Exports {
  add(a: number, b: number, o: number, n: number): void;
  mean(a: number, b: number, o: number, n: number, w: number): number;
  sums(p: number, blocks: number, acc: number): void;
}

/**
 * Three float32 scratch vectors `a`, `b`, `out` of `capacity` elements in one WebAssembly memory, 64 bytes for
 * checksum sums, then two send arenas of `arenaBytes` each (the ring carves its outgoing messages from them, so a
 * kernel writes its result straight into the message and the message's checksum is read in place). Callers copy
 * operands into `a`/`b` (or their byte views), run a kernel, and copy or send the result where it belongs.
 * The memory never grows: a caller that needs more makes new Kernels, and views of the old ones stay valid.
 */
export class Kernels {
  readonly a: Float32Array;
  readonly b: Float32Array;
  readonly out: Float32Array;
  private readonly fns: Exports;
  private readonly acc: Uint32Array;
  private readonly buffer: ArrayBuffer;
  private readonly arenas: [Uint8Array, Uint8Array];
  /** Bytes per vector: capacity × 4 rounded up to a whole 16-byte block. */
  private readonly stride: number;

  private constructor(
    module: WebAssembly.Module,
    readonly capacity: number,
    readonly arenaBytes: number,
  ) {
    const stride = (this.stride = Math.ceil((capacity * 4) / 16) * 16);
    const arena = Math.ceil(arenaBytes / 16) * 16;
    const memory = new WebAssembly.Memory({ initial: Math.max(1, Math.ceil((3 * stride + 64 + 2 * arena) / 65536)) });
    this.fns = new WebAssembly.Instance(module, { e: { m: memory } }).exports as unknown as Exports;
    this.buffer = memory.buffer;
    this.a = new Float32Array(memory.buffer, 0, capacity);
    this.b = new Float32Array(memory.buffer, stride, capacity);
    this.out = new Float32Array(memory.buffer, 2 * stride, capacity);
    this.acc = new Uint32Array(memory.buffer, 3 * stride, 16);
    const at = 3 * stride + 64;
    this.arenas = [new Uint8Array(memory.buffer, at, arenaBytes), new Uint8Array(memory.buffer, at + arena, arenaBytes)];
  }

  /** Kernels with room for `capacity` elements per vector and two send arenas of `arenaBytes`. */
  static create(capacity: number, arenaBytes = 0): Kernels {
    return new Kernels(kernelModule(), capacity, arenaBytes);
  }

  /** Send arena 0 or 1. */
  arena(slot: 0 | 1): Uint8Array {
    return this.arenas[slot];
  }

  /** True when `view` lies in this module's memory (a kernel can read or write it in place). */
  owns(view: Uint8Array): boolean {
    return view.buffer === this.buffer;
  }

  /** out[0..n) = a + b, or into `dst` (n float32 in this memory, e.g. a message body in an arena). */
  add(n: number, dst?: Uint8Array): void {
    this.check(n);
    this.fns.add(this.a.byteOffset, this.b.byteOffset, this.target(n, dst), n);
  }

  /** out[0..n) (or `dst`) = (a + b) / w; false if some result is NaN or ±Inf. */
  mean(n: number, w: number, dst?: Uint8Array): boolean {
    this.check(n);
    return this.fns.mean(this.a.byteOffset, this.b.byteOffset, this.target(n, dst), n, w) === 1;
  }

  /** checksum32 of the first n elements of `out` (read in place). */
  outChecksum(n: number): number {
    this.check(n);
    return this.checksumInPlace(new Uint8Array(this.buffer, this.out.byteOffset, n * 4));
  }

  /** checksum32 of the first n elements of `b` (read in place). */
  bChecksum(n: number): number {
    this.check(n);
    return this.checksumInPlace(new Uint8Array(this.buffer, this.b.byteOffset, n * 4));
  }

  /**
   * checksum32 of `body`, a view of this memory, read in place. The bytes after it up to the next 16-byte boundary
   * (of its length) take part as zeros and are overwritten with zeros: the caller leaves that slack free.
   */
  checksumInPlace(body: Uint8Array): number {
    if (!this.owns(body)) throw new RangeError('checksumInPlace: the body is not in the kernels\' memory');
    const bytes = body.byteLength;
    const padded = Math.ceil(bytes / 16) * 16;
    new Uint8Array(this.buffer, body.byteOffset + bytes, padded - bytes).fill(0);
    this.fns.sums(body.byteOffset, padded / 16, this.acc.byteOffset);
    return foldSums(this.acc, bytes);
  }

  /** checksum32 of `body` (at most capacity × 4 bytes), copied into `b` first. */
  checksum(body: Uint8Array): number {
    if (Math.ceil(body.byteLength / 16) * 16 > this.stride) throw new RangeError(`${body.byteLength} bytes do not fit kernels of ${this.capacity} elements`);
    const at = new Uint8Array(this.buffer, this.b.byteOffset, body.byteLength);
    at.set(body);
    return this.checksumInPlace(at);
  }

  private target(n: number, dst: Uint8Array | undefined): number {
    if (!dst) return this.out.byteOffset;
    if (!this.owns(dst) || dst.byteLength < n * 4) throw new RangeError(`kernel output needs ${n * 4} bytes of the kernels' memory`);
    return dst.byteOffset;
  }

  private check(n: number): void {
    if (!Number.isInteger(n) || n < 0 || n > this.capacity) throw new RangeError(`${n} elements do not fit kernels of ${this.capacity}`);
  }
}

/**
 * MurmurHash3's 32-bit mixing of the 16 words of the running sums and the body length: every bit of the sums
 * reaches every bit of the checksum.
 */
export function foldSums(sums: Uint32Array, length: number): number {
  let h = 0x45415332; // 'EAS2'
  for (let i = 0; i < sums.length; i++) {
    let k = Math.imul(sums[i], 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    h ^= Math.imul(k, 0x1b873593);
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  h ^= length;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

let shared: Kernels | undefined;
/**
 * The chunk checksum: the body read as little-endian u32 words (zero-padded to a multiple of 16 bytes) in four
 * lanes (word j in lane j mod 4), each lane's Fletcher-style sums s1 = Σ w and s2 = Σ s1 (one term per 16-byte
 * block) kept in 64 bits — so they do not wrap within a chunk, and any two flipped bits, any change of a single
 * word, any swap of two different words within a lane change them — then mixed into 32 bits with MurmurHash3's
 * finaliser together with the byte length. A SIMD pass of adds runs at about memcpy speed; CRC-32 (zlib) was
 * the ring's largest cost after its arithmetic.
 */
export function checksum32(body: Uint8Array): number {
  const need = Math.ceil(body.byteLength / 4);
  if (!shared || shared.capacity < need) shared = Kernels.create(Math.max(need, 1024));
  return shared.checksum(body);
}
