// `npm run bench -- kernels [--reps N] [--batch B] [--no-models] [--model-backends wasm,cpu]`: easel's replacement kernels against tfjs's
// stock kernels, in the same process, alternating stock/easel so drift in machine load hits both alike (median of
// reps). Part 1, per op on wasm (and cpu where easel replaces a cpu kernel): matMul GFLOP/s plain / transposed /
// batched, conv backprops, rank-5 transpose, slicing. Part 2, per model: one training step (forward, backward,
// Adam) of CLIP (ViT + text transformer), the diffusion prior and the decoder UNet at their default configs, on
// wasm (add cpu with --model-backends wasm,cpu: its stock UNet step alone takes many minutes), with and without
// easel's kernels. "fails: …" marks a stock step that cannot run at all.
// Last line: {"ratio": geometric mean over the replaced wasm ops of easel time / stock time, "ops": …, "models": …}.
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { initBackend } from '../src/model/backend.ts';
import { useEaselKernels } from '../src/model/kernels/index.ts';
import { Clip } from '../src/model/clip.ts';
import { DiffusionPrior } from '../src/model/prior.ts';
import { Decoder } from '../src/model/unet.ts';
import { tokenize } from '../src/model/tokenizer.ts';

const args = process.argv.slice(2);
const flag = (name: string, fallback: number) => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : fallback);
const reps = flag('--reps', 5);
const batch = flag('--batch', 16);
const modelBackends = args.includes('--model-backends') ? args[args.indexOf('--model-backends') + 1].split(',') : ['wasm'];
const SLOW_MS = 30_000;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const round = (x: number, digits = 2) => +x.toFixed(digits);

/** Median ms of `f` (its outputs read back and disposed) with easel's kernels and with tfjs's stock ones. */
function compare(backend: string, f: () => tf.Tensor | tf.Tensor[], n = reps): { easel: number; stock: number | string } {
  const once = (easel: boolean) => {
    useEaselKernels(backend, easel);
    const t0 = performance.now();
    const out = tf.tidy(f);
    const outs = Array.isArray(out) ? out : [out];
    for (const t of outs) t.dataSync();
    tf.dispose(outs);
    return performance.now() - t0;
  };
  let stockError: string | undefined;
  const tryStock = () => {
    try {
      return once(false);
    } catch (err) {
      stockError = `fails: ${(err as Error).message.split('\n')[0].slice(0, 80)}`;
      return NaN;
    }
  };
  once(true); // warm-up
  const stockWarmUp = tryStock();
  // A stock step slower than SLOW_MS (cpu's naive conv backprops) is timed once, its warm-up step standing in.
  const slowStock = stockWarmUp > SLOW_MS;
  const easel: number[] = [], stock: number[] = slowStock ? [stockWarmUp] : [];
  for (let i = 0; i < n; i++) {
    easel.push(once(true));
    if (!stockError && !slowStock) stock.push(tryStock());
  }
  useEaselKernels(backend, true);
  return { easel: median(easel), stock: stockError ?? median(stock) };
}

const rand = (shape: number[], seed: number) => tf.randomNormal(shape, 0, 1, 'float32', seed);
const bpFilter = (x: tf.Tensor, dy: tf.Tensor, filterShape: number[], strides: number) =>
  tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, { strides, pad: 'same', dataFormat: 'NHWC', filterShape }) as tf.Tensor;

/** `control`: an op easel does not replace, timed the same way to show the run's noise; not in the ratio. */
interface OpCase { name: string; backend: 'wasm' | 'cpu'; gflop?: number; control?: boolean; run: () => tf.Tensor | tf.Tensor[] }

function opCases(): OpCase[] {
  const n = 256, a = rand([n, n], 1), b = rand([n, n], 2);
  const ba = rand([16, 64, 64], 3), bb = rand([16, 64, 64], 4);
  const q = rand([32, 64, 16], 5), k = rand([32, 64, 16], 6);
  const x = rand([8, 32, 32, 32], 7), w = rand([3, 3, 32, 32], 8), dy = rand([8, 32, 32, 32], 9), dy2 = rand([8, 16, 16, 32], 10);
  const x5 = rand([8, 64, 3, 4, 16], 11);
  const xs = rand([4, 16, 16, 16], 12), ws = [3, 3, 16, 16], dys = rand([4, 16, 16, 16], 13);
  const mm = 2 * n ** 3 / 1e9;
  return [
    { name: 'matMul 256² plain (control)', backend: 'wasm', gflop: mm, control: true, run: () => tf.matMul(a, b) },
    { name: 'matMul 256² transposeA', backend: 'wasm', gflop: mm, run: () => tf.matMul(a, b, true, false) },
    { name: 'matMul 256² transposeB', backend: 'wasm', gflop: mm, run: () => tf.matMul(a, b, false, true) },
    { name: 'batched matMul 16×64³', backend: 'wasm', gflop: 16 * 2 * 64 ** 3 / 1e9, run: () => tf.matMul(ba, bb) },
    { name: 'attention scores 32×(64×16)·(64×16)ᵀ', backend: 'wasm', gflop: 32 * 2 * 64 * 64 * 16 / 1e9, run: () => tf.matMul(q, k, false, true) },
    { name: 'conv2d 3×3 [8,32,32,32] forward (control)', backend: 'wasm', control: true, run: () => tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 1, 'same') },
    { name: 'Conv2DBackpropInput stride 1', backend: 'wasm', run: () => tf.conv2dTranspose(dy as tf.Tensor4D, w as tf.Tensor4D, [8, 32, 32, 32], 1, 'same') },
    { name: 'Conv2DBackpropInput stride 2 (conv2dTranspose up)', backend: 'wasm', run: () => tf.conv2dTranspose(dy2 as tf.Tensor4D, w as tf.Tensor4D, [8, 32, 32, 32], 2, 'same') },
    { name: 'Conv2DBackpropFilter stride 1', backend: 'wasm', run: () => bpFilter(x, dy, [3, 3, 32, 32], 1) },
    { name: 'transpose rank 5 [8,64,3,4,16] → [2,0,3,1,4]', backend: 'wasm', run: () => tf.transpose(x5, [2, 0, 3, 1, 4]) },
    { name: 'slice [16,64,64] into 16', backend: 'wasm', run: () => Array.from({ length: 16 }, (_, i) => tf.slice(ba, [i, 0, 0], [1, 64, 64])) },
    { name: 'Conv2DBackpropFilter stride 1 [4,16,16,16]', backend: 'cpu', run: () => bpFilter(xs, dys, ws, 1) },
  ];
}

interface ModelCase { name: string; build: (backendBatch: number) => { step: () => tf.Tensor[]; dispose: () => void } }

function trainer(vars: tf.Variable[], loss: () => tf.Scalar, extra: tf.Tensor[]) {
  const optimizer = tf.train.adam(1e-4);
  return {
    step: () => {
      optimizer.minimize(loss, false, vars);
      vars[0].dataSync();
      return [];
    },
    dispose: () => { optimizer.dispose(); tf.dispose([...vars, ...extra]); },
  };
}
const captions = (b: number) => tokenize(Array.from({ length: b }, (_, i) => `a ${['red', 'green', 'blue'][i % 3]} circle`), 48);
const unit = (b: number, seed: number) => tf.tidy(() => { const e = rand([b, 64], seed); return tf.div(e, tf.norm(e, 'euclidean', -1, true)) as tf.Tensor2D; });

const MODELS: ModelCase[] = [
  { name: 'CLIP (ViT 32px/8 + text, width 64)', build: (b) => {
    const clip = new Clip({}, 1);
    const images = tf.randomUniform([b, 32, 32, 3], -1, 1, 'float32', 2) as tf.Tensor4D, tokens = captions(b);
    return trainer([...clip.params().values()], () => clip.loss({ images, tokens }), [images, tokens]);
  } },
  { name: 'diffusion prior (width 128, 3 layers)', build: (b) => {
    const prior = new DiffusionPrior({}, 1);
    const tokens = captions(b), textEmb = unit(b, 3), imageEmb = unit(b, 4);
    return trainer([...prior.params().values()], () => prior.loss({ tokens, textEmb, imageEmb }, 5), [tokens, textEmb, imageEmb]);
  } },
  { name: 'decoder UNet 32px (32/64/128 channels)', build: (b) => {
    const decoder = new Decoder({}, 1);
    const images = tf.randomUniform([b, 32, 32, 3], -1, 1, 'float32', 2) as tf.Tensor4D, tokens = captions(b), imageEmb = unit(b, 4);
    return trainer([...decoder.params().values()], () => decoder.loss({ images, imageEmb, tokens }, 5), [images, tokens, imageEmb]);
  } },
];

async function main() {
  await initBackend('wasm');
  useEaselKernels('cpu');
  const ops: Record<string, unknown> = {};
  const ratios: number[] = [];
  for (const c of opCases()) {
    await tf.setBackend(c.backend);
    const r = compare(c.backend, c.run);
    const entry: Record<string, unknown> = { easel_ms: round(r.easel), stock_ms: typeof r.stock === 'number' ? round(r.stock) : r.stock };
    if (c.gflop) {
      entry.easel_gflops = round(c.gflop / r.easel * 1e3);
      if (typeof r.stock === 'number') entry.stock_gflops = round(c.gflop / r.stock * 1e3);
    }
    if (typeof r.stock === 'number') {
      entry.ratio = round(r.easel / r.stock, 3);
      if (c.backend === 'wasm' && !c.control) ratios.push(r.easel / r.stock);
    }
    ops[`${c.backend}: ${c.name}`] = entry;
    console.error(`${c.backend}: ${c.name}: ${JSON.stringify(entry)}`);
  }
  const models: Record<string, unknown> = {};
  if (!args.includes('--no-models')) {
    for (const backend of modelBackends) {
      await tf.setBackend(backend);
      // cpu is ~30× slower: a quarter of the batch and fewer steps keep the bench to minutes.
      const b = backend === 'wasm' ? batch : Math.max(2, batch / 4);
      for (const m of MODELS) {
        const model = m.build(b);
        const r = compare(backend, model.step, backend === 'wasm' ? Math.max(3, reps) : 2);
        model.dispose();
        const entry = { batch: b, easel_ms: round(r.easel, 0), stock_ms: typeof r.stock === 'number' ? round(r.stock, 0) : r.stock,
          ratio: typeof r.stock === 'number' ? round(r.easel / r.stock, 3) : null };
        models[`${backend}: ${m.name}`] = entry;
        console.error(`${backend}: ${m.name}: ${JSON.stringify(entry)}`);
      }
    }
  }
  const ratio = Math.exp(ratios.reduce((s, r) => s + Math.log(r), 0) / ratios.length);
  console.log(JSON.stringify({ ratio: round(ratio, 3), ratio_is: 'geometric mean of easel/stock time over the replaced wasm ops that stock can run (lower is better)', reps, ops, models }));
}

await main();
