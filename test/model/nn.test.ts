import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/model/backend.ts';
import {
  Attention,
  Block,
  Embedding,
  LayerNorm,
  Linear,
  ParamStore,
  PositionalEmbedding,
  Transformer,
  timestepEmbedding,
} from '../../src/model/nn.ts';

before(async () => {
  await initBackend();
});

function disposeAll(ps: ParamStore): void {
  for (const v of ps.vars.values()) v.dispose();
}

/** Scales every weight matrix up, so attention is far from uniform and every path carries signal. */
function amplify(ps: ParamStore, factor = 20): void {
  for (const v of ps.vars.values()) if (v.rank === 2) v.assign(tf.tidy(() => tf.mul(v, factor)));
}

/** Max |a - b| over two same-shaped arrays. */
function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

test('parameters are named by scope, in creation order, and a name cannot be created twice', () => {
  const ps = new ParamStore(1);
  new Transformer(ps.scope('enc'), { width: 8, layers: 2, heads: 2 });
  const names = [...ps.vars.keys()];
  assert.deepEqual(names.slice(0, 12), [
    'enc.blocks.0.ln1.g', 'enc.blocks.0.ln1.b',
    'enc.blocks.0.attn.qkv.w', 'enc.blocks.0.attn.qkv.b',
    'enc.blocks.0.attn.proj.w', 'enc.blocks.0.attn.proj.b',
    'enc.blocks.0.ln2.g', 'enc.blocks.0.ln2.b',
    'enc.blocks.0.mlp.fc.w', 'enc.blocks.0.mlp.fc.b',
    'enc.blocks.0.mlp.proj.w', 'enc.blocks.0.mlp.proj.b',
  ]);
  assert.equal(names.length, 24);
  assert.deepEqual(ps.vars.get('enc.blocks.1.attn.qkv.w')!.shape, [8, 24]);
  assert.throws(() => ps.scope('enc.blocks.0.ln1').ones('g', [8]), /'enc.blocks.0.ln1.g' is created twice/);
  disposeAll(ps);
});

test('the same seed gives identical weights; another seed or another name gives different ones', () => {
  const a = new ParamStore(7);
  const b = new ParamStore(7);
  const c = new ParamStore(8);
  const wa = a.normal('x.w', [4, 4]).dataSync();
  const wb = b.normal('x.w', [4, 4]).dataSync();
  const wc = c.normal('x.w', [4, 4]).dataSync();
  const wy = a.normal('y.w', [4, 4]).dataSync();
  assert.deepEqual(Array.from(wa), Array.from(wb));
  assert.notDeepEqual(Array.from(wa), Array.from(wc));
  assert.notDeepEqual(Array.from(wa), Array.from(wy));
  [a, b, c].forEach(disposeAll);
});

test('linear maps the last axis of any rank', () => {
  const ps = new ParamStore(2);
  const lin = new Linear(ps, 6, 5);
  tf.tidy(() => {
    const x = tf.randomNormal([2, 3, 6], 0, 1, 'float32', 1);
    const y = lin.apply(x);
    assert.deepEqual(y.shape, [2, 3, 5]);
    const expected = tf.reshape(tf.add(tf.matMul(tf.reshape(x, [6, 6]), lin.w), lin.b!), [2, 3, 5]);
    assert.ok(maxDiff(y.dataSync(), expected.dataSync()) < 1e-6);
  });
  disposeAll(ps);
});

test('layer norm gives each row mean 0 and variance 1, then applies gain and bias', () => {
  const ps = new ParamStore(3);
  const ln = new LayerNorm(ps, 16);
  tf.tidy(() => {
    const x = tf.add(tf.mul(tf.randomNormal([4, 5, 16], 0, 1, 'float32', 2), 7), 3);
    const { mean, variance } = tf.moments(ln.apply(x), -1);
    assert.ok(maxDiff(mean.dataSync(), new Float32Array(20)) < 1e-5);
    assert.ok(maxDiff(variance.dataSync(), new Float32Array(20).fill(1)) < 1e-3);
    ln.g.assign(tf.fill([16], 2));
    ln.b.assign(tf.fill([16], 0.5));
    const m2 = tf.moments(ln.apply(x), -1);
    assert.ok(maxDiff(m2.mean.dataSync(), new Float32Array(20).fill(0.5)) < 1e-5);
    assert.ok(maxDiff(m2.variance.dataSync(), new Float32Array(20).fill(4)) < 1e-2);
  });
  disposeAll(ps);
});

test('attention keeps [B, T, C] and takes extra context tokens of another width', () => {
  const ps = new ParamStore(4);
  const attn = new Attention(ps, 16, 4, { contextDim: 12 });
  tf.tidy(() => {
    const x = tf.randomNormal([3, 5, 16], 0, 1, 'float32', 3) as tf.Tensor3D;
    const context = tf.randomNormal([3, 2, 12], 0, 1, 'float32', 4) as tf.Tensor3D;
    assert.deepEqual(attn.apply(x).shape, [3, 5, 16]);
    assert.deepEqual(attn.apply(x, { context, causal: true }).shape, [3, 5, 16]);
    const keyMask = tf.ones([3, 7]) as tf.Tensor2D;
    assert.deepEqual(attn.apply(x, { context, keyMask }).shape, [3, 5, 16]);
    assert.throws(() => attn.apply(x, { keyMask: tf.ones([3, 5]) as tf.Tensor2D, context }), /keyMask covers 5 keys/);
  });
  assert.throws(() => new Attention(new ParamStore(0), 10, 3), /not divisible/);
  disposeAll(ps);
});

test('the causal mask blocks the future: changing a later token leaves earlier outputs unchanged', () => {
  const ps = new ParamStore(5);
  const block = new Block(ps, { width: 16, layers: 1, heads: 4, contextDim: 16 });
  amplify(ps, 5);
  tf.tidy(() => {
    const x = tf.randomNormal([2, 6, 16], 0, 1, 'float32', 5) as tf.Tensor3D;
    const context = tf.randomNormal([2, 2, 16], 0, 1, 'float32', 6) as tf.Tensor3D;
    // Perturb token 3 of every sequence (not by a constant: layer norm would remove that).
    const onlyToken3 = tf.tensor3d(Array.from({ length: 2 * 6 * 16 }, (_, i) => (Math.floor(i / 16) % 6 === 3 ? 1 : 0)), [2, 6, 16]);
    const bump = tf.mul(tf.randomNormal([2, 6, 16], 0, 1, 'float32', 9), onlyToken3);
    const base = block.apply(x, { causal: true, context }).arraySync();
    const moved = block.apply(tf.add(x, bump), { causal: true, context }).arraySync();
    for (let b = 0; b < 2; b++) {
      for (let t = 0; t < 6; t++) {
        const d = maxDiff(base[b][t], moved[b][t]);
        if (t < 3) assert.equal(d, 0, `token ${t} saw the future`);
        else assert.ok(d > 1e-3, `token ${t} did not see token 3`);
      }
    }
    // Without the mask, every position sees token 3.
    const open = block.apply(x, { context }).arraySync();
    const openMoved = block.apply(tf.add(x, bump), { context }).arraySync();
    assert.ok(maxDiff(open[0][0], openMoved[0][0]) > 1e-3);
  });
  disposeAll(ps);
});

test('a key masked out by keyMask has no effect on any output; context tokens do', () => {
  const ps = new ParamStore(6);
  const attn = new Attention(ps, 8, 2, { contextDim: 8 });
  amplify(ps);
  tf.tidy(() => {
    const x = tf.randomNormal([1, 4, 8], 0, 1, 'float32', 7) as tf.Tensor3D;
    const context = tf.randomNormal([1, 2, 8], 0, 1, 'float32', 8) as tf.Tensor3D;
    const keyMask = tf.tensor2d([[1, 0, 1, 1, 1, 1]]); // drop context token 1
    const otherContext = tf.concat([tf.slice(context, [0, 0, 0], [1, 1, 8]), tf.fill([1, 1, 8], 9)], 1) as tf.Tensor3D;
    const a = attn.apply(x, { context, keyMask }).dataSync();
    const b = attn.apply(x, { context: otherContext, keyMask }).dataSync();
    assert.ok(maxDiff(a, b) < 1e-6);
    const c = attn.apply(x, { context: otherContext }).dataSync();
    assert.ok(maxDiff(a, c) > 1e-3);
  });
  disposeAll(ps);
});

test('a transformer block’s gradients match finite differences', () => {
  const ps = new ParamStore(9);
  const block = new Block(ps, { width: 8, layers: 1, heads: 2 });
  amplify(ps);
  const x = tf.randomNormal([2, 3, 8], 0, 1, 'float32', 10) as tf.Tensor3D;
  const probe = tf.randomNormal([2, 3, 8], 0, 1, 'float32', 11);
  const f = (input: tf.Tensor3D) => tf.sum(tf.mul(block.apply(input, { causal: true }), probe)) as tf.Scalar;
  const grad = tf.tidy(() => tf.grad((input: tf.Tensor) => f(input as tf.Tensor3D))(x)).dataSync();
  const xs = x.dataSync();
  const eps = 1e-2;
  for (const i of [0, 5, 13, 22, 31, 47]) {
    const numeric = tf.tidy(() => {
      const plus = Float32Array.from(xs);
      const minus = Float32Array.from(xs);
      plus[i] += eps;
      minus[i] -= eps;
      const fp = f(tf.tensor3d(plus, [2, 3, 8])).dataSync()[0];
      const fm = f(tf.tensor3d(minus, [2, 3, 8])).dataSync()[0];
      return (fp - fm) / (2 * eps);
    });
    assert.ok(Math.abs(numeric - grad[i]) < 2e-2 * Math.max(1, Math.abs(numeric)), `d/dx[${i}]: ${grad[i]} vs ${numeric}`);
  }
  tf.dispose([x, probe]);
  disposeAll(ps);
});

test('embedding lookup returns table rows, and positional embedding adds the first T rows', () => {
  const ps = new ParamStore(12);
  const emb = new Embedding(ps.scope('tok'), 10, 4);
  const pos = new PositionalEmbedding(ps.scope('pos'), 6, 4);
  tf.tidy(() => {
    const ids = tf.tensor2d([[3, 0, 9]], [1, 3], 'int32');
    const looked = emb.apply(ids);
    assert.deepEqual(looked.shape, [1, 3, 4]);
    assert.ok(maxDiff(looked.dataSync(), tf.gather(emb.table, [3, 0, 9]).dataSync()) < 1e-7);
    const added = pos.apply(tf.zeros([2, 3, 4]) as tf.Tensor3D);
    assert.ok(maxDiff(tf.slice(added, [1, 0, 0], [1, 3, 4]).dataSync(), tf.slice(pos.table, [0, 0], [3, 4]).dataSync()) < 1e-7);
    assert.throws(() => pos.apply(tf.zeros([1, 7, 4]) as tf.Tensor3D), /longer than the positional table/);
    // The gradient reaches exactly the looked-up rows.
    const g = tf.grad((t: tf.Tensor) => tf.sum(tf.matMul(tf.cast(tf.oneHot(tf.tensor1d([3, 3, 9], 'int32'), 10), 'float32'), t)))(emb.table);
    assert.deepEqual(Array.from(tf.sum(g, 1).dataSync()), [0, 0, 0, 8, 0, 0, 0, 0, 0, 4]);
  });
  disposeAll(ps);
});

test('timestep embedding is cos/sin of t at geometric frequencies', () => {
  tf.tidy(() => {
    const e = timestepEmbedding(tf.tensor1d([0, 1, 500]), 8);
    assert.deepEqual(e.shape, [3, 8]);
    const rows = e.arraySync();
    assert.deepEqual(rows[0], [1, 1, 1, 1, 0, 0, 0, 0]);
    assert.ok(Math.abs(rows[1][0] - Math.cos(1)) < 1e-6 && Math.abs(rows[1][4] - Math.sin(1)) < 1e-6);
    const f1 = Math.exp(-Math.log(10000) / 4);
    assert.ok(Math.abs(rows[2][5] - Math.sin(500 * f1)) < 1e-3);
  });
  assert.throws(() => timestepEmbedding(tf.tensor1d([1]), 5), /must be even/);
});
