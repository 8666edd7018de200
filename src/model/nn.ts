// The building blocks easel's models are made of: parameters created under dotted names with seeded init, and
// the few layers every model here uses (linear, layer norm, attention, MLP, pre-LN transformer block, embeddings).
//
// Shape letters: B batch, T query length, S key length, C width, H heads, D = C / H head size, V vocabulary.
// Only rank ≤ 4 tensors and plain 2-D matMuls where it matters: on wasm, one matMul over [B*T, C] × [C, C'] is
// fast while rank-5 transposes and einsum are slow or missing.
import * as tf from '@tensorflow/tfjs-core';
import { deriveSeed } from '../util/rng.ts';

/** FNV-1a over a name's UTF-16 code units: a stable integer per parameter name. */
function nameHash(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/**
 * Creates a model's tf.Variables under dotted names ("visual.blocks.0.attn.qkv.w"), in creation order.
 * Each parameter's initial values come from deriveSeed(seed, hash(full name)), so a weight's init depends only
 * on the model seed and its own name — never on how many parameters were created before it.
 * `scope("blocks.0")` returns a view that prefixes names and shares the same ordered map.
 */
export class ParamStore {
  readonly vars: Map<string, tf.Variable>;

  constructor(
    readonly seed: number,
    private readonly prefix = '',
    vars?: Map<string, tf.Variable>,
  ) {
    this.vars = vars ?? new Map();
  }

  scope(name: string | number): ParamStore {
    return new ParamStore(this.seed, this.fullName(String(name)), this.vars);
  }

  /** Normal(0, std²) init. */
  normal(name: string, shape: number[], std = 0.02): tf.Variable {
    const full = this.fullName(name);
    return this.add(full, tf.randomNormal(shape, 0, std, 'float32', deriveSeed(this.seed, nameHash(full))));
  }

  zeros(name: string, shape: number[]): tf.Variable {
    return this.add(this.fullName(name), tf.zeros(shape));
  }

  ones(name: string, shape: number[]): tf.Variable {
    return this.add(this.fullName(name), tf.ones(shape));
  }

  /** Every element set to `value` (e.g. CLIP's logit scale, ln(1/0.07)). */
  constant(name: string, shape: number[], value: number): tf.Variable {
    return this.add(this.fullName(name), tf.fill(shape, value));
  }

  private fullName(name: string): string {
    return this.prefix ? `${this.prefix}.${name}` : name;
  }

  private add(name: string, init: tf.Tensor): tf.Variable {
    if (this.vars.has(name)) {
      init.dispose();
      throw new Error(`parameter '${name}' is created twice`);
    }
    // Unnamed variable: tfjs names must be unique per process, and two models may hold the same dotted names.
    const v = tf.variable(init, true);
    init.dispose();
    this.vars.set(name, v);
    return v;
  }
}

/** Flattens all leading axes so the layer is one 2-D matMul: [..., inDim] → [N, inDim]. */
function as2d(x: tf.Tensor): tf.Tensor2D {
  return tf.reshape(x, [-1, x.shape[x.rank - 1]]);
}

/** y = x·w + b over the last axis. w: [inDim, outDim], b: [outDim]. */
export class Linear {
  readonly w: tf.Variable;
  readonly b?: tf.Variable;

  constructor(
    ps: ParamStore,
    readonly inDim: number,
    readonly outDim: number,
    opts: { bias?: boolean; std?: number } = {},
  ) {
    this.w = ps.normal('w', [inDim, outDim], opts.std ?? 0.02);
    if (opts.bias ?? true) this.b = ps.zeros('b', [outDim]);
  }

  /** x: [..., inDim] → [..., outDim]. */
  apply<T extends tf.Tensor>(x: T): T {
    let y: tf.Tensor = tf.matMul(as2d(x), this.w);
    if (this.b) y = tf.add(y, this.b);
    return tf.reshape(y, [...x.shape.slice(0, -1), this.outDim]) as T;
  }
}

/** 2-D convolution, 'same' padding, weights [k, k, Cin, Cout] with N(0, 1/fan-in) init (or zeros). */
export class Conv {
  readonly w: tf.Variable;
  readonly b: tf.Variable;

  constructor(
    ps: ParamStore,
    inCh: number,
    outCh: number,
    readonly kernel = 3,
    readonly stride: 1 | 2 = 1,
    zeroInit = false,
  ) {
    const shape = [kernel, kernel, inCh, outCh];
    this.w = zeroInit ? ps.zeros('w', shape) : ps.normal('w', shape, 1 / Math.sqrt(kernel * kernel * inCh));
    this.b = ps.zeros('b', [outCh]);
  }

  apply(x: tf.Tensor4D): tf.Tensor4D {
    return tf.add(tf.conv2d(x, this.w as tf.Tensor4D, this.stride, 'same'), this.b);
  }
}

/** Layer normalisation over the last axis with learned gain g and bias b (both [C]). */
export class LayerNorm {
  readonly g: tf.Variable;
  readonly b: tf.Variable;

  constructor(
    ps: ParamStore,
    readonly dim: number,
    readonly eps = 1e-5,
  ) {
    this.g = ps.ones('g', [dim]);
    this.b = ps.zeros('b', [dim]);
  }

  /** x: [..., C] → [..., C]. */
  apply<T extends tf.Tensor>(x: T): T {
    const { mean, variance } = tf.moments(x, -1, true);
    const normed = tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, this.eps)));
    return tf.add(tf.mul(normed, this.g), this.b) as T;
  }
}

/** GELU, tanh approximation: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))). */
export function gelu<T extends tf.Tensor>(x: T): T {
  const cube = tf.mul(tf.mul(x, x), x); // not tf.pow: several times slower on wasm, forward and backward
  const inner = tf.mul(tf.add(x, tf.mul(cube, 0.044715)), Math.sqrt(2 / Math.PI));
  return tf.mul(tf.mul(x, 0.5), tf.add(tf.tanh(inner), 1)) as T;
}

/** x / ‖x‖ along the last axis. */
export function l2Normalize<T extends tf.Tensor>(x: T, eps = 1e-6): T {
  return tf.div(x, tf.sqrt(tf.add(tf.sum(tf.square(x), -1, true), eps))) as T;
}

export interface AttentionInputs {
  /** Query i sees keys ≤ i of x (and every context token). */
  causal?: boolean;
  /** [B, S] with 1 = attend, 0 = ignore, over the whole key sequence [context tokens…, x tokens…]. */
  keyMask?: tf.Tensor2D;
  /**
   * [B, Tc] with 1 = attend, 0 = ignore, over the context tokens only (e.g. caption padding); the x tokens stay
   * visible. Combines with keyMask.
   */
  contextMask?: tf.Tensor2D;
  /** [B, Tc, contextDim] extra tokens the queries attend to (unCLIP's CLIP-embedding tokens, caption tokens). */
  context?: tf.Tensor3D;
}

/** A large negative logit: exp underflows to exactly 0 after softmax's max-subtraction. */
const MASKED = -1e9;

/** Additive attention bias, broadcastable to [B, H, T, S]; undefined when nothing is masked. */
function attentionBias(t: number, tc: number, inputs: AttentionInputs): tf.Tensor | undefined {
  let bias: tf.Tensor | undefined;
  if (inputs.causal) {
    const s = tc + t;
    const values = new Float32Array(t * s);
    for (let i = 0; i < t; i++) for (let j = tc + i + 1; j < s; j++) values[i * s + j] = MASKED;
    bias = tf.tensor4d(values, [1, 1, t, s]);
  }
  if (inputs.keyMask) {
    const [b, s] = inputs.keyMask.shape;
    if (s !== tc + t) throw new Error(`keyMask covers ${s} keys, attention has ${tc + t} (context ${tc} + tokens ${t})`);
    const padBias = tf.reshape(tf.mul(tf.sub(1, tf.cast(inputs.keyMask, 'float32')), MASKED), [b, 1, 1, s]);
    bias = bias ? tf.add(bias, padBias) : padBias;
  }
  if (inputs.contextMask) {
    const [b, sc] = inputs.contextMask.shape;
    if (sc !== tc) throw new Error(`contextMask covers ${sc} keys, attention has ${tc} context tokens`);
    const ctxBias = tf.mul(tf.sub(1, tf.cast(inputs.contextMask, 'float32')), MASKED); // [B, Tc]
    const padBias = tf.reshape(tf.concat([ctxBias, tf.zeros([b, t])], 1), [b, 1, 1, tc + t]);
    bias = bias ? tf.add(bias, padBias) : padBias;
  }
  return bias;
}

/** [B, T, C] → [B*H, T, D]. */
function splitHeads(x: tf.Tensor3D, heads: number): tf.Tensor3D {
  const [b, t, c] = x.shape;
  return tf.reshape(tf.transpose(tf.reshape(x, [b, t, heads, c / heads]), [0, 2, 1, 3]), [b * heads, t, c / heads]);
}

/** [B, S, C] → [B*H, D, S]: keys already transposed, so the scores are a plain batched matMul. */
function splitHeadsTransposed(x: tf.Tensor3D, heads: number): tf.Tensor3D {
  const [b, s, c] = x.shape;
  return tf.reshape(tf.transpose(tf.reshape(x, [b, s, heads, c / heads]), [0, 2, 3, 1]), [b * heads, c / heads, s]);
}

/** Multi-head self-attention with optional causal mask, key padding mask and extra context tokens. */
export class Attention {
  readonly qkv: Linear;
  readonly proj: Linear;
  /** Projects context tokens to keys and values (only when built with contextDim). */
  readonly contextKv?: Linear;

  constructor(
    ps: ParamStore,
    readonly width: number,
    readonly heads: number,
    opts: { contextDim?: number; std?: number; projStd?: number } = {},
  ) {
    if (width % heads !== 0) throw new Error(`attention width ${width} is not divisible by ${heads} heads`);
    this.qkv = new Linear(ps.scope('qkv'), width, 3 * width, { std: opts.std });
    this.proj = new Linear(ps.scope('proj'), width, width, { std: opts.projStd });
    if (opts.contextDim) this.contextKv = new Linear(ps.scope('contextKv'), opts.contextDim, 2 * width, { std: opts.std });
  }

  /** x: [B, T, C] → [B, T, C]. */
  apply(x: tf.Tensor3D, inputs: AttentionInputs = {}): tf.Tensor3D {
    const [b, t, c] = x.shape;
    const h = this.heads;
    const d = c / h;
    const [q, xk, xv] = tf.split(this.qkv.apply(x), 3, -1) as tf.Tensor3D[]; // each [B, T, C]
    let [k, v, tc] = [xk, xv, 0];
    if (inputs.context) {
      if (!this.contextKv) throw new Error('attention got context tokens but was built without contextDim');
      tc = inputs.context.shape[1];
      const [ck, cv] = tf.split(this.contextKv.apply(inputs.context), 2, -1) as tf.Tensor3D[]; // [B, Tc, C]
      k = tf.concat([ck, xk], 1); // [B, S = Tc + T, C]
      v = tf.concat([cv, xv], 1);
    }
    const s = tc + t;
    const qh = splitHeads(tf.mul(q, 1 / Math.sqrt(d)), h); // [B*H, T, D]
    const kt = splitHeadsTransposed(k, h); // [B*H, D, S]
    const vh = splitHeads(v, h); // [B*H, S, D]
    let scores: tf.Tensor = tf.matMul(qh, kt); // [B*H, T, S]
    const bias = attentionBias(t, tc, inputs);
    if (bias) scores = tf.reshape(tf.add(tf.reshape(scores, [b, h, t, s]), bias), [b * h, t, s]);
    const weights = tf.softmax(scores); // [B*H, T, S]
    const out = tf.matMul(weights as tf.Tensor3D, vh); // [B*H, T, D]
    const merged = tf.reshape(tf.transpose(tf.reshape(out, [b, h, t, d]), [0, 2, 1, 3]), [b, t, c]) as tf.Tensor3D;
    return this.proj.apply(merged);
  }
}

/** Position-wise feed-forward: C → 4C → GELU → C. */
export class Mlp {
  readonly fc: Linear;
  readonly proj: Linear;

  constructor(ps: ParamStore, width: number, opts: { hidden?: number; std?: number; projStd?: number } = {}) {
    const hidden = opts.hidden ?? 4 * width;
    this.fc = new Linear(ps.scope('fc'), width, hidden, { std: opts.std });
    this.proj = new Linear(ps.scope('proj'), hidden, width, { std: opts.projStd });
  }

  /** x: [..., C] → [..., C]. */
  apply<T extends tf.Tensor>(x: T): T {
    return this.proj.apply(gelu(this.fc.apply(x)));
  }
}

export interface TransformerOptions {
  width: number;
  layers: number;
  heads: number;
  /** Width of extra context tokens every block's attention may take (AttentionInputs.context). */
  contextDim?: number;
  /**
   * Init std of the input-side weights (qkv, context kv, MLP fc); the residual-branch output projections get
   * std/√(2·layers). Default 0.02 (GPT-2). Narrow models learn much faster from width^-0.5 (CLIP's choice).
   */
  std?: number;
}

/** Pre-LN transformer block: x + attn(ln1(x)), then x + mlp(ln2(x)). */
export class Block {
  readonly ln1: LayerNorm;
  readonly attn: Attention;
  readonly ln2: LayerNorm;
  readonly mlp: Mlp;

  constructor(ps: ParamStore, opts: TransformerOptions) {
    // GPT-2's init: residual-branch output projections scaled down by √(2·layers).
    const std = opts.std ?? 0.02;
    const projStd = std / Math.sqrt(2 * opts.layers);
    this.ln1 = new LayerNorm(ps.scope('ln1'), opts.width);
    this.attn = new Attention(ps.scope('attn'), opts.width, opts.heads, { contextDim: opts.contextDim, std, projStd });
    this.ln2 = new LayerNorm(ps.scope('ln2'), opts.width);
    this.mlp = new Mlp(ps.scope('mlp'), opts.width, { std, projStd });
  }

  /** x: [B, T, C] → [B, T, C]. */
  apply(x: tf.Tensor3D, inputs: AttentionInputs = {}): tf.Tensor3D {
    const h = tf.add(x, this.attn.apply(this.ln1.apply(x), inputs));
    return tf.add(h, this.mlp.apply(this.ln2.apply(h)));
  }
}

/** A stack of pre-LN blocks named blocks.0, blocks.1, … (no final norm: each model adds its own). */
export class Transformer {
  readonly blocks: Block[];

  constructor(ps: ParamStore, opts: TransformerOptions) {
    this.blocks = Array.from({ length: opts.layers }, (_, i) => new Block(ps.scope('blocks').scope(i), opts));
  }

  /** x: [B, T, C] → [B, T, C]. */
  apply(x: tf.Tensor3D, inputs: AttentionInputs = {}): tf.Tensor3D {
    for (const block of this.blocks) x = block.apply(x, inputs);
    return x;
  }
}

/**
 * Token embedding table [V, C]. The lookup is one-hot × table — one matMul whose gradient is another matMul —
 * rather than tf.gather, whose gradient needs UnsortedSegmentSum (missing on stock wasm).
 */
export class Embedding {
  readonly table: tf.Variable;

  constructor(
    ps: ParamStore,
    readonly vocab: number,
    readonly dim: number,
    std = 0.02,
  ) {
    this.table = ps.normal('table', [vocab, dim], std);
  }

  /** ids: int32 [B, T] → [B, T, C]. */
  apply(ids: tf.Tensor2D): tf.Tensor3D {
    const [b, t] = ids.shape;
    const oneHot = tf.cast(tf.oneHot(tf.reshape(ids, [b * t]) as tf.Tensor1D, this.vocab), 'float32'); // [B*T, V]
    return tf.reshape(tf.matMul(oneHot, this.table), [b, t, this.dim]);
  }
}

/** Learned positional embedding [maxLen, C], added to the first T positions of x. */
export class PositionalEmbedding {
  readonly table: tf.Variable;

  constructor(
    ps: ParamStore,
    readonly maxLen: number,
    readonly dim: number,
    std = 0.01,
  ) {
    this.table = ps.normal('table', [maxLen, dim], std);
  }

  /** x: [B, T, C] → [B, T, C]. */
  apply(x: tf.Tensor3D): tf.Tensor3D {
    const t = x.shape[1];
    if (t > this.maxLen) throw new Error(`sequence of ${t} is longer than the positional table (${this.maxLen})`);
    return tf.add(x, t === this.maxLen ? this.table : tf.slice(this.table, [0, 0], [t, this.dim]));
  }
}

/**
 * Sinusoidal embedding of (diffusion) timesteps, as in the Transformer / DDPM papers:
 * t: [B] float → [B, dim] = [cos(t·f_0), …, cos(t·f_{dim/2-1}), sin(t·f_0), …], f_i = maxPeriod^(-i/(dim/2)).
 */
export function timestepEmbedding(t: tf.Tensor1D, dim: number, maxPeriod = 10000): tf.Tensor2D {
  if (dim % 2 !== 0) throw new Error(`timestep embedding size must be even, got ${dim}`);
  const half = dim / 2;
  const freqs = new Float32Array(half);
  for (let i = 0; i < half; i++) freqs[i] = Math.exp((-Math.log(maxPeriod) * i) / half);
  const args = tf.mul(tf.reshape(tf.cast(t, 'float32'), [-1, 1]), tf.tensor2d(freqs, [1, half])); // [B, half]
  return tf.concat([tf.cos(args), tf.sin(args)], 1) as tf.Tensor2D;
}
