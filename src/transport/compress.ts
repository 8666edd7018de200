// Optional 16-bit wire formats for gradients: float32 → bfloat16 or IEEE float16 and back, round-to-nearest-even.
// Halves the bytes on the wire at the cost of precision:
//   bf16: 8 exponent bits (float32's range), 7 mantissa bits → relative error ≤ 2^-8.
//   f16:  5 exponent bits, 10 mantissa bits → relative error ≤ 2^-11 for |x| in [2^-14, 65504];
//         absolute error ≤ 2^-25 below that (subnormals); |x| ≥ 65520 becomes ±Inf (so the step is skipped).
// NaN stays NaN and ±Inf stays ±Inf in both.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 → bfloat16 bits, round to nearest even. */
export function encodeBf16(src: Float32Array, dst: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) {
    const x = bits[i];
    if ((x & 0x7f800000) === 0x7f800000 && (x & 0x007fffff) !== 0) {
      dst[i] = (x >>> 16) | 0x0040; // NaN: keep sign, force a mantissa bit so it stays NaN
    } else {
      dst[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
    }
  }
  return dst;
}

/** bfloat16 bits → float32 (exact). */
export function decodeBf16(src: Uint16Array, dst: Float32Array = new Float32Array(src.length)): Float32Array {
  const bits = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
  return dst;
}

/** float32 → IEEE 754 half bits, round to nearest even (overflow → ±Inf, tiny → subnormal or ±0). */
export function encodeF16(src: Float32Array, dst: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) dst[i] = halfBits(bits[i]);
  return dst;
}

function halfBits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x007fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x0200 : 0); // Inf or NaN
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow
  if (e <= 0) {
    if (e < -10) return sign; // below half the smallest subnormal: ±0
    mant |= 0x00800000; // implicit bit
    const shift = 14 - e; // 14..24
    const half = 1 << (shift - 1);
    const rest = mant & ((1 << shift) - 1);
    let m = mant >>> shift;
    if (rest > half || (rest === half && (m & 1))) m++;
    return sign | m; // m may carry into the smallest normal, which is the right answer
  }
  let h = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h++; // may carry into the exponent, up to Inf: correct
  return sign | h;
}

/** IEEE 754 half bits → float32 (exact). */
export function decodeF16(src: Uint16Array, dst: Float32Array = new Float32Array(src.length)): Float32Array {
  for (let i = 0; i < src.length; i++) dst[i] = halfToFloat(src[i]);
  return dst;
}

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  u32[0] = ((h & 0x8000) << 16) | ((exp - 15 + 127) << 23) | (mant << 13);
  return f32[0];
}
