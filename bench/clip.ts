// `npm run bench -- clip [--batch 32] [--reps 5]`: one CLIP training step at the default ClipConfig on the
// active backend (EASEL_BACKEND=wasm|cpu to choose): forward only (the contrastive loss), forward + backward
// (tf.variableGrads over params()), and a full Adam step (optimizer.minimize). Median over reps after one warm-up.
// Last line: {"ratio": full step / forward (CPU time), …} — the baseline is the forward pass of the same run.
import os from 'node:os';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../src/model/backend.ts';
import { Clip, ClipConfig } from '../src/model/clip.ts';
import { tokenize } from '../src/model/tokenizer.ts';
import { Rng } from '../src/util/rng.ts';

const args = process.argv.slice(2);
const flag = (name: string, fallback: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const batch = flag('batch', 32);
const reps = flag('reps', 5);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Wall and CPU milliseconds of one call. wasm runs one thread, so CPU time is what the step costs on an idle
 *  core even while other processes share the machine; wall time is what this run saw. */
function time(fn: () => void): { wall: number; cpu: number } {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  fn();
  const c = process.cpuUsage(c0);
  return { wall: performance.now() - t0, cpu: (c.user + c.system) / 1000 };
}

async function main() {
  const backend = await initBackend();
  const config = ClipConfig.parse({});
  const clip = new Clip(config, 1);
  const rng = new Rng(2);
  const s = config.imageSize;
  const images = tf.tensor4d(Float32Array.from({ length: batch * s * s * 3 }, () => rng.float() * 2 - 1), [batch, s, s, 3]);
  const colors = ['red', 'green', 'blue', 'yellow'];
  const shapes = ['circle', 'square', 'triangle'];
  const tokens = tokenize(Array.from({ length: batch }, (_, i) => `a ${colors[i % 4]} ${shapes[i % 3]} on a white background`), config.contextLength);
  const vars = [...clip.params().values()];
  const optimizer = tf.train.adam(1e-3);
  const loss = () => clip.loss({ images, tokens });

  const forward = () => tf.tidy(() => loss().dataSync());
  const backward = () => {
    const { value, grads } = tf.variableGrads(loss, vars);
    tf.dispose([value, ...Object.values(grads)]);
    vars[0].dataSync();
  };
  const step = () => {
    tf.dispose(optimizer.minimize(loss, false, vars) ?? []);
    vars[0].dataSync();
  };
  const measure = (fn: () => void) => {
    fn(); // warm-up
    const runs = Array.from({ length: reps }, () => time(fn));
    return { wall: median(runs.map((r) => r.wall)), cpu: median(runs.map((r) => r.cpu)) };
  };
  const forwardMs = measure(forward);
  const backwardMs = measure(backward);
  const stepMs = measure(step);
  const params = vars.reduce((n, v) => n + v.size, 0);
  const ms = (x: number) => +x.toFixed(1);
  console.log(
    JSON.stringify({
      ratio: +(stepMs.cpu / forwardMs.cpu).toFixed(3),
      backend,
      batch,
      reps,
      params,
      forward_cpu_ms: ms(forwardMs.cpu),
      forward_backward_cpu_ms: ms(backwardMs.cpu),
      adam_step_cpu_ms: ms(stepMs.cpu),
      forward_wall_ms: ms(forwardMs.wall),
      forward_backward_wall_ms: ms(backwardMs.wall),
      adam_step_wall_ms: ms(stepMs.wall),
      load_average_1m: +os.loadavg()[0].toFixed(2),
      config,
    }),
  );
  tf.dispose([images, tokens]);
  optimizer.dispose();
  clip.dispose();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
