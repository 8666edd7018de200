// `npx tsx scripts/slip-probe.ts <train shards> <eval shards> <weight> [steps]`: CLIP (the demo's config, 500 steps,
// warmup + cosine) plus, with weight > 0, a SimCLR-style image–image contrastive loss between two colour-permuted
// views of each image (RGB channels shuffled, 20 % grey) — SLIP (Mu et al. 2021) with colour augmentation — to see
// whether self-supervision gives the image tower a colour-free shape. Prints one JSON line: a linear shape probe
// on the image embeddings (fitted on 1,200 training images, scored on 1,200 others and on the held-out pairs) and
// held-out text→image retrieval top-1. docs/models.md, "Session 7".
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../src/model/backend.ts';
import { Clip, ClipConfig } from '../src/model/clip.ts';
import { contrastiveLoss } from '../src/model/losses.ts';
import { tokenize } from '../src/model/tokenizer.ts';
import { readSynthSamples, retrievalTop1, fitsCaption, type SynthSample } from '../src/eval/evaluate.ts';
import { SHAPES } from '../src/data/synth/spec.ts';
import { Rng } from '../src/util/rng.ts';

const [trainUrl, evalUrl, w, stepsArg] = process.argv.slice(2);
const W = Number(w);
const STEPS = Number(stepsArg ?? 500);
await initBackend();
const config = ClipConfig.parse({ imageSize: 32, patchSize: 8, width: 64, layers: 2, heads: 4, contextLength: 48, textWidth: 64, textLayers: 2, textHeads: 4, embedDim: 64 });
const S = 32;
const train = await readSynthSamples(trainUrl, S, 10_000);
const held = await readSynthSamples(evalUrl, S, 10_000);
const clip = new Clip(config, 1);
const opt = tf.train.adam(1e-3, 0.9, 0.98);
const rng = new Rng(1);
const PERMS = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];

function pixels(samples: SynthSample[], view: boolean): tf.Tensor4D {
  const px = new Float32Array(samples.length * S * S * 3);
  samples.forEach((s, i) => {
    const o = i * S * S * 3;
    if (!view) return px.set(s.image, o);
    const p = PERMS[rng.int(6)];
    const grey = rng.float() < 0.2;
    for (let j = 0; j < S * S * 3; j += 3) {
      const r = s.image[j], g = s.image[j + 1], b = s.image[j + 2];
      if (grey) { const l = 0.299 * r + 0.587 * g + 0.114 * b; px[o + j] = px[o + j + 1] = px[o + j + 2] = l; }
      else { const c = [r, g, b]; px[o + j] = c[p[0]]; px[o + j + 1] = c[p[1]]; px[o + j + 2] = c[p[2]]; }
    }
  });
  return tf.tensor4d(px, [samples.length, S, S, 3]);
}
const sslScale = tf.scalar(Math.log(10));
for (let step = 1; step <= STEPS; step++) {
  const batch = Array.from({ length: 32 }, () => train[rng.int(train.length)]);
  const v1 = pixels(batch, true), v2 = pixels(batch, true), im = pixels(batch, false);
  const tok = tokenize(batch.map((b) => b.caption), 48);
  const lr = 1e-3 * Math.min(1, step / 30) * (0.1 + 0.9 * 0.5 * (1 + Math.cos((Math.PI * step) / STEPS)));
  (opt as unknown as { learningRate: number }).learningRate = lr;
  const loss = opt.minimize(() => {
    const l = clip.loss({ images: im, tokens: tok });
    return (W > 0 ? tf.add(l, tf.mul(W, contrastiveLoss(clip.encodeImage(v1), clip.encodeImage(v2), sslScale))) : l) as tf.Scalar;
  }, true)!;
  if (step % 100 === 0) console.log('step', step, 'loss', (await loss.data())[0].toFixed(3));
  tf.dispose([loss, v1, v2, im, tok]);
}
async function embed(samples: SynthSample[]): Promise<number[][]> {
  const out: number[][] = [];
  for (let i = 0; i < samples.length; i += 64) {
    const e = tf.tidy(() => clip.encodeImage(pixels(samples.slice(i, i + 64), false)));
    out.push(...((await e.array()) as number[][]));
    e.dispose();
  }
  return out;
}
// Linear shape probe trained on the embeddings of 1,200 training images, scored on 1,200 others (seen) and held-out.
const fitSet = train.slice(0, 1200), seenSet = train.slice(1200, 2400);
const [ef, es, eh] = [await embed(fitSet), await embed(seenSet), await embed(held)];
const head = tf.variable(tf.zeros([64, 3]));
const popt = tf.train.adam(1e-2);
const X = tf.tensor2d(ef), Y = tf.oneHot(tf.tensor1d(fitSet.map((s) => SHAPES.indexOf(s.truth.shape)), 'int32'), 3);
for (let i = 0; i < 500; i++) tf.dispose(popt.minimize(() => tf.losses.softmaxCrossEntropy(Y, tf.mul(tf.matMul(X, head), 10)) as tf.Scalar, true)!);
const acc = async (e: number[][], s: SynthSample[]) => {
  const p = (await tf.argMax(tf.matMul(tf.tensor2d(e), head), 1).data()) as Int32Array;
  return +(s.filter((x, i) => SHAPES[p[i]] === x.truth.shape).length / s.length).toFixed(3);
};
const txt = tf.tidy(() => clip.encodeText(tokenize(held.map((s) => s.caption), 48)));
const te = (await txt.array()) as number[][];
const retrieval = retrievalTop1(te, eh, (q, j) => fitsCaption(held[q].caption, held[j].truth));
console.log(JSON.stringify({ w: W, steps: STEPS, probe_seen: await acc(es, seenSet), probe_held_out: await acc(eh, held), retrieval: +retrieval.toFixed(3) }));
