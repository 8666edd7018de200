// Slice on wasm, copying rows straight from the wasm heap into the output.
// Why: the stock kernel first copies the WHOLE input out of the wasm heap into a fresh JS array (readSync) for every
// slice it takes. Fresh large allocations are slow (on our 2-core machine a 256 KB one costs ~2 ms), so slicing a
// batch into pieces — attention heads, per-batch products, concat's gradient — cost milliseconds per slice.
import * as tf from '@tensorflow/tfjs-core';
import type { KernelArgs } from './replace.ts';

/** The two wasm-backend internals this kernel needs (BackendWasm has both; neither allocates outside the heap). */
export interface WasmHeap {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array | Int32Array | Uint8Array;
}

export function wasmSlice(args: KernelArgs, stock: tf.KernelFunc | undefined): tf.TensorInfo | tf.TensorInfo[] {
  const x = args.inputs.x as tf.TensorInfo;
  const { begin, size } = args.attrs as unknown as tf.SliceAttrs;
  if (x.dtype === 'string' && stock) return stock(args);
  const [start, extent] = tf.slice_util.parseSliceParams(x as tf.Tensor, begin, size);
  const heap = args.backend as WasmHeap;
  const out = heap.makeOutput(extent, x.dtype);
  // Views are taken after makeOutput: growing the heap there would detach earlier ones.
  const src = heap.typedArrayFromHeap(x), dst = heap.typedArrayFromHeap(out);
  if (dst.length === 0) return out;
  // Copy runs as long as possible: axes after `inner` are taken whole, so each run spans them all.
  const rank = x.shape.length, strides = tf.util.computeStrides(x.shape);
  if (rank === 0) {
    dst.set(src);
    return out;
  }
  let inner = rank - 1, run = extent[inner] ?? 1;
  while (inner > 0 && extent[inner] === x.shape[inner]) run *= extent[--inner];
  const runs = dst.length / run;
  const index = new Array<number>(inner).fill(0); // position among the runs, over axes before `inner`
  for (let r = 0; r < runs; r++) {
    let from = start[inner] * (strides[inner] ?? 1);
    for (let d = 0; d < inner; d++) from += (start[d] + index[d]) * strides[d];
    dst.set(src.subarray(from, from + run), r * run);
    for (let d = inner - 1; d >= 0 && ++index[d] === extent[d]; d--) index[d] = 0;
  }
  return out;
}
