// `npx tsx scripts/clip-probe.ts <checkpoint> <train shards> <eval shards>`: does a checkpoint's CLIP image
// embedding carry shape apart from colour? Fits two probes on the embeddings of the synthetic training images (seen
// colour–shape pairs) and applies them to the held-out pairs' images:
//   nearest centroid   one centroid per class, the mean over its colour–shape pairs (each pair weighted equally);
//   linear (ridge)     least squares onto one-hot classes, λ = 1e-3.
// A probe that reads shape well on seen pairs but not on held-out ones means the embedding binds shape to colour:
// the decoder then has nothing to draw a held-out pair's shape from (docs/models.md, "Why held-out shapes fail").
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../src/model/backend.ts';
import { loadCheckpoint } from '../src/trainer/models.ts';
import { readSynthSamples, type SynthSample } from '../src/eval/evaluate.ts';

const [ckptUrl, trainUrl, evalUrl] = process.argv.slice(2);
if (!evalUrl) {
  console.error('usage: npx tsx scripts/clip-probe.ts <checkpoint> <train shards> <eval shards>');
  process.exit(2);
}
await initBackend();
const ckpt = await loadCheckpoint(ckptUrl);
const size = ckpt.models.clip.config.imageSize;

async function embed(samples: SynthSample[]): Promise<number[][]> {
  const out: number[][] = [];
  for (let i = 0; i < samples.length; i += 32) {
    const part = samples.slice(i, i + 32);
    const px = new Float32Array(part.length * size * size * 3);
    part.forEach((s, j) => px.set(s.image, j * size * size * 3));
    const e = tf.tidy(() => ckpt.models.clip.encodeImage(tf.tensor4d(px, [part.length, size, size, 3])));
    out.push(...((await e.array()) as number[][]));
    e.dispose();
  }
  return out;
}

/** Solves A X = B by Gauss–Jordan elimination with partial pivoting (A small and well conditioned here). */
function solve(A: number[][], B: number[][]): number[][] {
  const n = A.length;
  const M = A.map((r, i) => [...r, ...B[i]]);
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(M[r][c]) > Math.abs(M[p][c])) p = r;
    [M[c], M[p]] = [M[p], M[c]];
    for (let r = 0; r < n; r++) {
      if (r === c) continue;
      const f = M[r][c] / M[c][c];
      for (let k = c; k < M[r].length; k++) M[r][k] -= f * M[c][k];
    }
  }
  return M.map((r, i) => r.slice(n).map((x) => x / M[i][i]));
}

const dot = (a: number[], b: number[]) => a.reduce((s, x, k) => s + x * b[k], 0);
const argmax = (xs: number[]) => xs.indexOf(Math.max(...xs));

const train = await readSynthSamples(trainUrl, size, 1200);
const held = await readSynthSamples(evalUrl, size, 64);
const [te, he] = [await embed(train), await embed(held)];
const report: Record<string, unknown> = { checkpoint: ckptUrl, train: train.length, held_out: held.length };
for (const key of ['shape', 'color'] as const) {
  const classes = [...new Set(train.map((s) => s.truth[key]))];
  const accuracy = (predict: (v: number[]) => string) => (ss: SynthSample[], es: number[][]) => +(ss.filter((s, i) => predict(es[i]) === s.truth[key]).length / ss.length).toFixed(3);

  const pairs = new Map<string, number[][]>();
  train.forEach((s, i) => pairs.set(`${s.truth.color} ${s.truth.shape}`, [...(pairs.get(`${s.truth.color} ${s.truth.shape}`) ?? []), te[i]]));
  const mean = (vs: number[][]) => vs[0].map((_, d) => vs.reduce((a, v) => a + v[d], 0) / vs.length);
  const centroids = classes.map((c) => mean([...pairs].filter(([k]) => k.split(' ')[key === 'color' ? 0 : 1] === c).map(([, vs]) => mean(vs))));
  const nearest = accuracy((v) => classes[argmax(centroids.map((m) => dot(m, v) / Math.sqrt(dot(m, m))))]);

  const X = te.map((v) => [...v, 1]);
  const D = X[0].length;
  const XtX = Array.from({ length: D }, (_, i) => Array.from({ length: D }, (_, j) => X.reduce((a, r) => a + r[i] * r[j], 0) + (i === j ? 1e-3 : 0)));
  const XtY = Array.from({ length: D }, (_, i) => classes.map((c) => X.reduce((a, r, n) => a + (train[n].truth[key] === c ? r[i] : 0), 0)));
  const W = solve(XtX, XtY);
  const linear = accuracy((v) => classes[argmax(classes.map((_, k) => [...v, 1].reduce((a, x, d) => a + x * W[d][k], 0)))]);

  report[key] = {
    nearest_centroid: { seen: nearest(train, te), held_out: nearest(held, he) },
    linear: { seen: linear(train, te), held_out: linear(held, he) },
  };
}
ckpt.dispose();
console.log(JSON.stringify(report));
