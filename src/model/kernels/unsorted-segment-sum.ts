// UnsortedSegmentSum as a plain loop over the data.
// Why: wasm has no such kernel, and it is the gradient of `gather` — so no embedding table can train on wasm
// without it. A loop in a fixed order is exact enough (one add per element) and deterministic.
import * as tf from '@tensorflow/tfjs-core';
import { asTensor, type KernelArgs } from './replace.ts';

export function unsortedSegmentSum(args: KernelArgs): tf.TensorInfo {
  const { numSegments } = args.attrs as unknown as tf.UnsortedSegmentSumAttrs;
  const x = asTensor(args.inputs.x), ids = asTensor(args.inputs.segmentIds);
  const inner = x.size / Math.max(1, ids.size);
  const values = x.dataSync(), segment = ids.dataSync();
  const out = x.dtype === 'int32' ? new Int32Array(numSegments * inner) : new Float32Array(numSegments * inner);
  for (let i = 0; i < segment.length; i++) {
    const s = segment[i];
    if (s < 0 || s >= numSegments) continue; // TensorFlow drops out-of-range ids
    for (let j = 0, src = i * inner, dst = s * inner; j < inner; j++) out[dst + j] += values[src + j];
  }
  return tf.tensor(out, [numSegments, ...x.shape.slice(ids.rank)], x.dtype);
}
