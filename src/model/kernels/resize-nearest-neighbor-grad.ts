// ResizeNearestNeighborGrad as the exact transpose of the forward resize: every output pixel's gradient is added to
// the source pixel the forward pass copied it from (same index rule as tfjs's forward kernel).
// Why: the stock cpu kernel reads dy with the input image's batch stride, so every image after the first gets
// wrong gradients whenever batch > 1; it also ignores halfPixelCenters.
import * as tf from '@tensorflow/tfjs-core';
import { asTensor, type KernelArgs } from './replace.ts';

/** For each of `newSize` output positions, the source index the forward nearest-neighbour resize reads. */
export function nearestSources(oldSize: number, newSize: number, alignCorners: boolean, halfPixelCenters: boolean): Int32Array {
  const scale = (alignCorners && newSize > 1 ? oldSize - 1 : oldSize) / (alignCorners && newSize > 1 ? newSize - 1 : newSize);
  const sources = new Int32Array(newSize);
  for (let i = 0; i < newSize; i++) {
    const frac = halfPixelCenters ? scale * (i + 0.5) : scale * i;
    const nearest = Math.min(oldSize - 1, alignCorners ? Math.round(frac) : Math.floor(frac));
    sources[i] = halfPixelCenters ? Math.max(0, nearest) : nearest;
  }
  return sources;
}

export function resizeNearestNeighborGrad(args: KernelArgs): tf.TensorInfo {
  const { alignCorners, halfPixelCenters } = args.attrs as unknown as tf.ResizeNearestNeighborGradAttrs;
  const images = asTensor<tf.Rank.R4>(args.inputs.images), dy = asTensor<tf.Rank.R4>(args.inputs.dy);
  const [batch, inH, inW, c] = images.shape;
  const [, outH, outW] = dy.shape;
  const rows = nearestSources(inH, outH, alignCorners, halfPixelCenters);
  const cols = nearestSources(inW, outW, alignCorners, halfPixelCenters);
  const dys = dy.dataSync();
  const dx = new Float32Array(images.size);
  for (let b = 0; b < batch; b++) {
    for (let y = 0; y < outH; y++) {
      for (let x = 0; x < outW; x++) {
        const src = ((b * inH + rows[y]) * inW + cols[x]) * c, at = ((b * outH + y) * outW + x) * c;
        for (let ch = 0; ch < c; ch++) dx[src + ch] += dys[at + ch];
      }
    }
  }
  return tf.tensor(dx, images.shape, 'float32');
}
