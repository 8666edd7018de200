// SplitV and Unpack (tf.split, tf.unstack) on wasm, built on easel's Slice.
// Why: the stock kernels call wasm's stock slice directly — bypassing the registry — so each piece pays for a copy of
// the WHOLE input out of the wasm heap (see slice.ts). Attention splits its fused q/k/v projection this way.
import * as tf from '@tensorflow/tfjs-core';
import type { KernelArgs } from './replace.ts';
import { wasmSlice } from './slice.ts';

const sliceOf = (args: KernelArgs, x: tf.TensorInfo, begin: number[], size: number[]) =>
  wasmSlice({ inputs: { x }, backend: args.backend, attrs: { begin, size } }, undefined) as tf.TensorInfo;

export function wasmSplitV(args: KernelArgs): tf.TensorInfo[] {
  const x = args.inputs.x as tf.TensorInfo;
  const { numOrSizeSplits, axis } = args.attrs as unknown as tf.SplitVAttrs;
  const at = tf.util.parseAxisParam(axis, x.shape)[0];
  const sizes = tf.backend_util.prepareSplitSize(x as tf.Tensor, numOrSizeSplits, at);
  const begin = new Array<number>(x.shape.length).fill(0);
  return sizes.map((s) => {
    const size = [...x.shape];
    size[at] = s;
    const piece = sliceOf(args, x, [...begin], size);
    begin[at] += s;
    return piece;
  });
}

export function wasmUnpack(args: KernelArgs): tf.TensorInfo[] {
  const value = args.inputs.value as tf.TensorInfo;
  const at = tf.util.parseAxisParam((args.attrs as unknown as tf.UnpackAttrs).axis, value.shape)[0];
  const size = [...value.shape];
  size[at] = 1;
  const outShape = value.shape.filter((_, i) => i !== at);
  return Array.from({ length: value.shape[at] }, (_, i) => {
    const begin = new Array<number>(value.shape.length).fill(0);
    begin[at] = i;
    const piece = sliceOf(args, value, begin, size);
    piece.shape = outShape; // dropping a size-1 axis: same data
    return piece;
  });
}
