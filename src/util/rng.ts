// Deterministic seeds. tfjs random ops take an explicit integer seed (an unseeded call uses Math.random),
// so every random draw in easel comes from a seed derived here. State is one uint32, so a checkpoint can
// store it and a resumed run continues the same stream.

/** mulberry32: a small, fast, well-mixed 32-bit generator. Returns [next state, uniform float in [0,1)]. */
export function mulberry32(state: number): [number, number] {
  const s = (state + 0x6d2b79f5) >>> 0;
  let t = s;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return [s, ((t ^ (t >>> 14)) >>> 0) / 4294967296];
}

/** Mixes any number of integers (base seed, stage, step, rank…) into one uint32 seed. */
export function deriveSeed(...parts: number[]): number {
  let h = 0x811c9dc5;
  for (const p of parts) {
    h = Math.imul(h ^ (p >>> 0), 0x01000193) >>> 0;
    h = mulberry32(h)[0];
    h = Math.imul(h ^ (h >>> 16), 0x45d9f3b) >>> 0;
  }
  return h >>> 0;
}

export class Rng {
  constructor(private s: number) {
    this.s = s >>> 0;
  }
  /** Uniform float in [0, 1). */
  float(): number {
    const [s, f] = mulberry32(this.s);
    this.s = s;
    return f;
  }
  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.float() * n);
  }
  /** A fresh uint32 seed for a tfjs random op. */
  seed(): number {
    return Math.floor(this.float() * 4294967296) >>> 0;
  }
  /** Fisher–Yates shuffle in place. */
  shuffle<T>(xs: T[]): T[] {
    for (let i = xs.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [xs[i], xs[j]] = [xs[j], xs[i]];
    }
    return xs;
  }
  /** The generator's state, for checkpoints. */
  get state(): number {
    return this.s;
  }
}
