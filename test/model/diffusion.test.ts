import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/model/backend.ts';
import {
  alphaBar,
  classifierFreeGuidance,
  cosineAlphaBar,
  ddimSigma,
  ddimStep,
  ddpmPosterior,
  ddpmStep,
  epsFromX0,
  keepMask,
  linearBetaSchedule,
  makeSchedule,
  qSample,
  replaceDropped,
  samplingTimesteps,
  vFromX0Eps,
  x0FromEps,
  x0FromV,
} from '../../src/model/diffusion.ts';
import { Rng } from '../../src/util/rng.ts';

before(async () => {
  await initBackend();
});

const maxAbsDiff = (a: tf.Tensor, b: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);

for (const kind of ['cosine', 'linear'] as const) {
  test(`${kind} schedule: betas in (0,1), ᾱ strictly decreasing from ≈1 to ≈0`, () => {
    const s = makeSchedule(kind, 1000);
    for (let t = 0; t < s.timesteps; t++) {
      assert.ok(s.betas[t] > 0 && s.betas[t] < 1, `β_${t} = ${s.betas[t]}`);
      if (t > 0) assert.ok(s.alphasCumprod[t] < s.alphasCumprod[t - 1], `ᾱ not decreasing at ${t}`);
      assert.ok(Math.abs(s.alphas[t] - (1 - s.betas[t])) < 1e-15);
    }
    assert.ok(s.alphasCumprod[0] > 0.99, `ᾱ_0 = ${s.alphasCumprod[0]}`);
    assert.ok(s.alphasCumprod[999] < 1e-4, `ᾱ_T = ${s.alphasCumprod[999]}`);
  });
}

test('cosine schedule matches its closed form ᾱ(t) = f(t)/f(0) wherever β is not clipped', () => {
  const T = 1000;
  const s = makeSchedule('cosine', T);
  for (const t of [0, 1, 10, 100, 500, 900, 990]) {
    const expected = cosineAlphaBar(t + 1, T);
    assert.ok(Math.abs(s.alphasCumprod[t] - expected) < 1e-9, `t=${t}: ${s.alphasCumprod[t]} vs ${expected}`);
  }
  // Halfway the closed form is cos²(π/4 · (0.5+s)/(1+s)) / cos²(π/2 · s/(1+s)), independent of T.
  const mid = Math.cos(((0.5 + 0.008) / 1.008) * (Math.PI / 2)) ** 2 / Math.cos((0.008 / 1.008) * (Math.PI / 2)) ** 2;
  assert.ok(Math.abs(makeSchedule('cosine', 50).alphasCumprod[24] - mid) < 1e-9);
  assert.ok(Math.max(...s.betas) <= 0.999);
});

test('linear schedule spans the same noise range whatever T (rescaled by 1000/T)', () => {
  const a = linearBetaSchedule(1000);
  const b = linearBetaSchedule(100);
  assert.ok(Math.abs(a[0] - 1e-4) < 1e-12 && Math.abs(a[999] - 0.02) < 1e-12);
  assert.ok(Math.abs(b[0] - 1e-3) < 1e-12 && Math.abs(b[99] - 0.2) < 1e-12);
});

test('a bad schedule or step count is refused with a clear error', () => {
  assert.throws(() => makeSchedule('cosine', 0), /timesteps must be a positive integer/);
  assert.throws(() => samplingTimesteps(100, 0), /sampling steps must be an integer in 1…100/);
  assert.throws(() => samplingTimesteps(100, 101), /sampling steps/);
  assert.throws(() => alphaBar(makeSchedule('linear', 10), 10), /timestep 10 outside 0…9/);
});

test('sampling timesteps: descending, unique, from T-1 down to 0', () => {
  assert.deepEqual(samplingTimesteps(1000, 5), [999, 749, 500, 250, 0]);
  assert.deepEqual(samplingTimesteps(10, 10), [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
  assert.deepEqual(samplingTimesteps(1000, 1), [999]);
  const ts = samplingTimesteps(1000, 37);
  assert.equal(ts.length, 37);
  for (let i = 1; i < ts.length; i++) assert.ok(ts[i] < ts[i - 1]);
  assert.equal(alphaBar(makeSchedule('cosine', 10), -1), 1);
});

test('q_sample, x0-from-ε and ε-from-x0 are mutually inverse, per example or for the whole batch', () => {
  tf.tidy(() => {
    const x0 = tf.randomNormal([4, 3, 3, 2], 0, 1, 'float32', 1);
    const eps = tf.randomNormal([4, 3, 3, 2], 0, 1, 'float32', 2);
    const s = makeSchedule('cosine', 1000);
    // Away from the ends, where float32 stays well conditioned (1/√ᾱ and 1/√(1-ᾱ) are moderate).
    const abar = [50, 250, 600, 900].map((t) => alphaBar(s, t));
    const xt = qSample(x0, eps, abar);
    assert.ok(maxAbsDiff(x0FromEps(xt, eps, abar), x0) < 1e-3);
    assert.ok(maxAbsDiff(epsFromX0(xt, x0, abar), eps) < 1e-3);
    // Example 2 was noised with its own ᾱ: same result as noising it alone with that number.
    const alone = qSample(tf.slice(x0, 2, 1), tf.slice(eps, 2, 1), abar[2]);
    assert.ok(maxAbsDiff(tf.slice(xt, 2, 1), alone) < 1e-6);
    // The closed form itself: √ᾱ·x0 + √(1-ᾱ)·ε.
    const byHand = tf.add(tf.mul(tf.slice(x0, 1, 1), Math.sqrt(abar[1])), tf.mul(tf.slice(eps, 1, 1), Math.sqrt(1 - abar[1])));
    assert.ok(maxAbsDiff(tf.slice(xt, 1, 1), byHand) < 1e-6);
  });
});

test('v = √ᾱ·ε − √(1−ᾱ)·x0 gives x0 back from x_t at every t, with no 1/√ᾱ blow-up at the noisy end', () => {
  tf.tidy(() => {
    const x0 = tf.randomNormal([4, 3, 3, 2], 0, 1, 'float32', 1);
    const eps = tf.randomNormal([4, 3, 3, 2], 0, 1, 'float32', 2);
    const s = makeSchedule('cosine', 1000);
    // Including t = 999, where ᾱ ≈ 0 and x0-from-ε is ill-conditioned.
    const abar = [0, 400, 800, 999].map((t) => alphaBar(s, t));
    const xt = qSample(x0, eps, abar);
    const v = vFromX0Eps(x0, eps, abar);
    assert.ok(maxAbsDiff(x0FromV(xt, v, abar), x0) < 1e-5);
    const byHand = tf.sub(tf.mul(tf.slice(eps, 3, 1), Math.sqrt(abar[3])), tf.mul(tf.slice(x0, 3, 1), Math.sqrt(1 - abar[3])));
    assert.ok(maxAbsDiff(tf.slice(v, 3, 1), byHand) < 1e-6);
    // A prediction error δ in v moves x0 by at most |δ| (coefficient √(1−ᾱ) ≤ 1); the same δ in ε moves it by
    // √((1−ᾱ)/ᾱ), which is > 100 at t = 999.
    const delta = tf.fill(xt.shape, 0.01);
    assert.ok(maxAbsDiff(x0FromV(xt, tf.add(v, delta), abar), x0) <= 0.01 + 1e-5);
    const epsErr = maxAbsDiff(x0FromEps(tf.slice(xt, 3, 1), tf.add(tf.slice(eps, 3, 1), 0.01), abar[3]), tf.slice(x0, 3, 1));
    assert.ok(epsErr > 1, `x0 error from a 0.01 ε error at t=999: ${epsErr}`);
  });
});

test('the DDPM posterior variance equals DDIM σ² at η=1, and its mean is exact at the clean end', () => {
  const s = makeSchedule('cosine', 1000);
  for (const [t, prev] of [[999, 749], [500, 499], [10, 0]]) {
    const { variance, coefX0, coefXt } = ddpmPosterior(alphaBar(s, t), alphaBar(s, prev));
    assert.ok(Math.abs(ddimSigma(alphaBar(s, t), alphaBar(s, prev), 1) ** 2 - variance) < 1e-12);
    assert.ok(variance > 0 && coefX0 > 0 && coefXt > 0);
  }
  // Stepping to t = -1 (ᾱ = 1): the posterior is x0 itself, with no noise.
  const last = ddpmPosterior(alphaBar(s, 0), 1);
  assert.ok(Math.abs(last.coefX0 - 1) < 1e-12 && Math.abs(last.coefXt) < 1e-12 && Math.abs(last.variance) < 1e-15);
  // One step of the full chain: mean of q(x_{t-1}|x_t,x0) has the textbook coefficients.
  const t = 300;
  const post = ddpmPosterior(alphaBar(s, t), alphaBar(s, t - 1));
  const beta = s.betas[t];
  assert.ok(Math.abs(post.coefX0 - (Math.sqrt(alphaBar(s, t - 1)) * beta) / (1 - alphaBar(s, t))) < 1e-9);
  assert.ok(Math.abs(post.variance - (beta * (1 - alphaBar(s, t - 1))) / (1 - alphaBar(s, t))) < 1e-9);
});

test('DDIM with η=0 is deterministic and, fed the true ε, walks x_T back to x0 exactly', () => {
  tf.tidy(() => {
    const s = makeSchedule('cosine', 1000);
    const x0 = tf.randomUniform([2, 4, 4, 3], -1, 1, 'float32', 3);
    const eps = tf.randomNormal([2, 4, 4, 3], 0, 1, 'float32', 4);
    const ts = samplingTimesteps(1000, 10);
    const run = () => {
      let x = qSample(x0, eps, alphaBar(s, ts[0]));
      for (let i = 0; i < ts.length; i++) {
        const abarT = alphaBar(s, ts[i]);
        const abarPrev = alphaBar(s, i + 1 < ts.length ? ts[i + 1] : -1);
        const predX0 = x0FromEps(x, eps, abarT);
        const sigma = ddimSigma(abarT, abarPrev, 0);
        assert.equal(sigma, 0);
        x = ddimStep(predX0, eps, abarPrev, sigma);
        // With the true ε every intermediate is exactly q_sample at the next timestep.
        // (Tolerance: at t = T-1, ᾱ ≈ 2e-9, so recovering x0 there amplifies float32 rounding by 1/√ᾱ ≈ 2e4.)
        if (i + 1 < ts.length) assert.ok(maxAbsDiff(x, qSample(x0, eps, abarPrev)) < 5e-3);
      }
      return x;
    };
    const a = run();
    const b = run();
    assert.deepEqual(a.dataSync(), b.dataSync());
    assert.ok(maxAbsDiff(a, x0) < 5e-3, `DDIM recovered x0 to ${maxAbsDiff(a, x0)}`);
  });
});

test('DDIM with η>0 and the DDPM step draw from the posterior: noise enters with σ, mean is unchanged', () => {
  tf.tidy(() => {
    const s = makeSchedule('linear', 1000);
    const [abarT, abarPrev] = [alphaBar(s, 600), alphaBar(s, 400)];
    const x0 = tf.randomNormal([1000], 0, 1, 'float32', 5);
    const eps = tf.randomNormal([1000], 0, 1, 'float32', 6);
    const z = tf.randomNormal([1000], 0, 1, 'float32', 7);
    const xt = qSample(x0, eps, abarT);
    const sigma = ddimSigma(abarT, abarPrev, 1);
    const ddim = ddimStep(x0, eps, abarPrev, sigma, z);
    const ddpm = ddpmStep(xt, x0, abarT, abarPrev, z);
    // Both have noise coefficient σ on z; their means agree because ε is the exact ε of x_t.
    assert.ok(maxAbsDiff(ddim, ddpm) < 1e-4, `ddim vs ddpm ${maxAbsDiff(ddim, ddpm)}`);
    assert.throws(() => ddimStep(x0, eps, abarPrev, sigma), /needs noise/);
  });
});

test('classifier-free guidance is uncond + s·(cond − uncond): s=0 → uncond, s=1 → cond, s=3 extrapolates', () => {
  tf.tidy(() => {
    const cond = tf.tensor1d([1, 2, 3]);
    const uncond = tf.tensor1d([0, 2, 5]);
    assert.deepEqual(Array.from(classifierFreeGuidance(cond, uncond, 0).dataSync()), [0, 2, 5]);
    assert.deepEqual(Array.from(classifierFreeGuidance(cond, uncond, 1).dataSync()), [1, 2, 3]);
    assert.deepEqual(Array.from(classifierFreeGuidance(cond, uncond, 3).dataSync()), [3, 2, -1]);
  });
});

test('conditioning keep-masks follow the seed and drop about the asked fraction', () => {
  const a = keepMask(1000, 0.1, (() => { const r = new Rng(9); return () => r.float(); })());
  const b = keepMask(1000, 0.1, (() => { const r = new Rng(9); return () => r.float(); })());
  const c = keepMask(1000, 0.1, (() => { const r = new Rng(10); return () => r.float(); })());
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  const dropped = a.reduce((n, v) => n + (v === 0 ? 1 : 0), 0);
  assert.ok(dropped > 70 && dropped < 130, `dropped ${dropped} of 1000`);
  assert.ok(keepMask(50, 0, Math.random).every((v) => v === 1));
});

test('dropped rows take the null value, kept rows stay, for any rank; a mask of the wrong size is refused', () => {
  tf.tidy(() => {
    const x = tf.tensor3d([[[1, 2]], [[3, 4]], [[5, 6]]]); // [3, 1, 2]
    const out = replaceDropped(x, tf.tensor2d([[-1, -2]]), Float32Array.from([1, 0, 1]));
    assert.deepEqual(out.arraySync(), [[[1, 2]], [[-1, -2]], [[5, 6]]]);
    const flat = replaceDropped(tf.tensor2d([[1, 1], [2, 2]]), tf.tensor1d([9, 8]), Float32Array.from([0, 1]));
    assert.deepEqual(flat.arraySync(), [[9, 8], [2, 2]]);
    assert.throws(() => replaceDropped(x, tf.zeros([2]), new Float32Array(2)), /keep mask has 2 entries for a batch of 3/);
  });
});
