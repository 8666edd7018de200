// Transpose on wasm with adjacent axes merged first, then the stock kernel (rank ≤ 4) or a JS loop over the heap.
// Why: the stock kernel has fast paths for rank 2–4 only; a rank-5 permutation (attention's [b,t,3,h,d] →
// [3,b,h,t,d] split, for one) takes a generic path ~10–40× slower than the same data moved at rank 4. Merging
// axes that stay next to each other brings most permutations down to rank ≤ 4; the rest get a simple loop.
import * as tf from '@tensorflow/tfjs-core';
import type { KernelArgs } from './replace.ts';
import type { WasmHeap } from './slice.ts';

/** Merges runs of input axes that stay adjacent and in order under `perm`; drops size-1 axes. */
export function simplifyTranspose(shape: number[], perm: number[]): { shape: number[]; perm: number[] } {
  const keep = perm.filter((axis) => shape[axis] !== 1);
  const runs: number[][] = [];
  for (const axis of keep) {
    const last = runs[runs.length - 1];
    if (last && last[last.length - 1] + 1 === axis) last.push(axis);
    else runs.push([axis]);
  }
  const order = [...runs].sort((a, b) => a[0] - b[0]); // runs in input order
  return {
    shape: order.map((run) => run.reduce((n, axis) => n * shape[axis], 1)),
    perm: runs.map((run) => order.indexOf(run)),
  };
}

export function wasmTranspose(args: KernelArgs, stock: tf.KernelFunc | undefined): tf.TensorInfo | tf.TensorInfo[] {
  const x = args.inputs.x as tf.TensorInfo;
  const { perm } = args.attrs as unknown as tf.TransposeAttrs;
  if (x.dtype === 'string' && stock) return stock(args);
  const { shape, perm: p } = simplifyTranspose(x.shape, perm);
  const outShape = perm.map((axis) => x.shape[axis]);
  if (shape.length <= 4 && stock) {
    const out = stock({ ...args, inputs: { x: { dataId: x.dataId, shape, dtype: x.dtype } }, attrs: { perm: p } }) as tf.TensorInfo;
    out.shape = outShape;
    return out;
  }
  const heap = args.backend as WasmHeap;
  const out = heap.makeOutput(outShape, x.dtype);
  const src = heap.typedArrayFromHeap(x), dst = heap.typedArrayFromHeap(out);
  loopTranspose(src, dst, shape, p);
  return out;
}

/** dst = src (of `shape`) permuted by `perm`, one output row at a time. */
function loopTranspose(src: ArrayLike<number>, dst: { [i: number]: number; length: number }, shape: number[], p: number[]): void {
  const rank = shape.length;
  const inStrides = [...tf.util.computeStrides(shape), 1];
  const rowShape = p.map((axis) => shape[axis]);
  const stride = p.map((axis) => inStrides[axis]); // input step for a step along each output axis
  const inner = rowShape[rank - 1], innerStride = stride[rank - 1];
  const index = new Array<number>(rank - 1).fill(0);
  for (let o = 0; o < dst.length; o += inner) {
    let from = 0;
    for (let d = 0; d < rank - 1; d++) from += index[d] * stride[d];
    for (let j = 0; j < inner; j++, from += innerStride) dst[o + j] = src[from];
    for (let d = rank - 2; d >= 0 && ++index[d] === rowShape[d]; d--) index[d] = 0;
  }
}
