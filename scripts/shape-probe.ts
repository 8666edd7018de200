// `npx tsx scripts/shape-probe.ts <train shards> <eval shards> [--steps 600] [--clip '<json>'] [--seed 1] [--grey 0]`:
// can CLIP's image tower learn shape in a way that carries over to colour–shape pairs it never saw, when it is
// told the shape directly? Trains a fresh image tower (the demo's CLIP config, or --clip overrides) with a linear
// shape classifier on its embedding — supervised cross-entropy on the synthetic ground truth, no captions — and
// every 100 steps prints shape accuracy on seen pairs (the first 256 training images) and on the held-out pairs.
//
// If seen accuracy climbs and held-out accuracy stays near zero, the failure of the held-out pairs is the image
// tower's (its features bind shape to colour), and no change to the contrastive objective can fix it
// (docs/models.md, "Why held-out shapes fail"). `--grey p` turns each training image grey (ITU-R 601 luma in all
// three channels) with probability p — colour jitter's greyscale step (open_clip, SimCLR) — so the tower cannot
// lean on colour to tell shapes apart. Deterministic for a seed. Last line: one JSON report.
import * as tf from '@tensorflow/tfjs-core';
import { parseArgs } from 'node:util';
import { initBackend } from '../src/model/backend.ts';
import { Clip, ClipConfig } from '../src/model/clip.ts';
import { readSynthSamples, type SynthSample } from '../src/eval/evaluate.ts';
import { SHAPES } from '../src/data/synth/spec.ts';
import { Rng } from '../src/util/rng.ts';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: { steps: { type: 'string', default: '600' }, clip: { type: 'string', default: '{}' }, seed: { type: 'string', default: '1' }, grey: { type: 'string', default: '0' } },
});
const [trainUrl, evalUrl] = positionals;
if (!evalUrl) {
  console.error(`usage: npx tsx scripts/shape-probe.ts <train shards> <eval shards> [--steps 600] [--clip '{"convStem":true}'] [--seed 1] [--grey 0.5]`);
  process.exit(2);
}
const steps = Number(values.steps);
const seed = Number(values.seed);
const BATCH = 32;
const GREY = Number(values.grey);
/** Cosine similarities are at most 1: scaled before the softmax, as CLIP's logit scale does. */
const LOGIT_SCALE = 10;

await initBackend();
const config = ClipConfig.parse(JSON.parse(values.clip));
const size = config.imageSize;
const train = await readSynthSamples(trainUrl, size, 10_000);
const held = await readSynthSamples(evalUrl, size, 10_000);
const clip = new Clip(config, seed);
const head = tf.variable(tf.randomNormal([config.embedDim, SHAPES.length], 0, 0.1, 'float32', seed), true, 'shapeHead');
const optimizer = tf.train.adam(1e-3);
const rng = new Rng(seed);

/** The samples' images as a batch; each one, with probability `grey`, in grey. */
function pixels(samples: SynthSample[], grey = 0): tf.Tensor4D {
  const px = new Float32Array(samples.length * size * size * 3);
  samples.forEach((s, i) => {
    px.set(s.image, i * size * size * 3);
    if (grey > 0 && rng.float() < grey) {
      for (let j = i * size * size * 3; j < (i + 1) * size * size * 3; j += 3) {
        const l = 0.299 * px[j] + 0.587 * px[j + 1] + 0.114 * px[j + 2];
        px[j] = px[j + 1] = px[j + 2] = l;
      }
    }
  });
  return tf.tensor4d(px, [samples.length, size, size, 3]);
}

function logits(images: tf.Tensor4D): tf.Tensor2D {
  return tf.mul(tf.matMul(clip.encodeImage(images), head), LOGIT_SCALE);
}

async function accuracy(samples: SynthSample[]): Promise<number> {
  let hits = 0;
  for (let i = 0; i < samples.length; i += 64) {
    const part = samples.slice(i, i + 64);
    const predicted = tf.tidy(() => tf.argMax(logits(pixels(part)), 1));
    const p = await predicted.data();
    predicted.dispose();
    hits += part.filter((s, j) => SHAPES[p[j]] === s.truth.shape).length;
  }
  return +(hits / samples.length).toFixed(3);
}

const seen = train.slice(0, 256);
const curve: { step: number; loss: number; seen: number; held_out: number }[] = [];
for (let step = 1; step <= steps; step++) {
  const batch = Array.from({ length: BATCH }, () => train[rng.int(train.length)]);
  const loss = tf.tidy(() => {
    const labels = tf.oneHot(tf.tensor1d(batch.map((s) => SHAPES.indexOf(s.truth.shape)), 'int32'), SHAPES.length);
    return optimizer.minimize(() => tf.losses.softmaxCrossEntropy(labels, logits(pixels(batch, GREY))) as tf.Scalar, true)!;
  });
  const value = (await loss.data())[0];
  loss.dispose();
  if (step % 100 === 0 || step === steps) {
    const row = { step, loss: +value.toFixed(3), seen: await accuracy(seen), held_out: await accuracy(held) };
    curve.push(row);
    console.log(`step ${step}  loss ${row.loss}  shape accuracy: seen ${row.seen}  held-out ${row.held_out}`);
  }
}
const pairs = [...new Set(held.map((s) => `${s.truth.color} ${s.truth.shape}`))];
console.log(JSON.stringify({ train: train.length, held_out: held.length, held_out_pairs: pairs, grey: GREY, clip: config, curve }));
