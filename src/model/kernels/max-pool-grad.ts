// MaxPoolGrad as a plain loop: each output's gradient goes to the first maximum of its window (TensorFlow's rule).
// Why: the stock wasm kernel returns wrong gradients (checked against finite differences and the cpu backend).
import * as tf from '@tensorflow/tfjs-core';
import { asTensor, type KernelArgs } from './replace.ts';

export function maxPoolGrad(args: KernelArgs): tf.TensorInfo {
  const { filterSize, strides, pad, dimRoundingMode } = args.attrs as unknown as tf.MaxPoolGradAttrs;
  const x = asTensor<tf.Rank.R4>(args.inputs.input), dy = asTensor<tf.Rank.R4>(args.inputs.dy);
  const pool = tf.backend_util.computePool2DInfo(x.shape, filterSize, strides, 1, pad, dimRoundingMode);
  const { batchSize, inHeight, inWidth, inChannels: c, outHeight, outWidth, filterHeight, filterWidth } = pool;
  const { strideHeight, strideWidth, padInfo } = pool;
  const xs = x.dataSync(), dys = dy.dataSync();
  const dx = new Float32Array(x.size);
  for (let b = 0; b < batchSize; b++) {
    const base = b * inHeight * inWidth * c;
    for (let oy = 0; oy < outHeight; oy++) {
      for (let ox = 0; ox < outWidth; ox++) {
        for (let ch = 0; ch < c; ch++) {
          let best = -1, bestValue = -Infinity;
          for (let fy = 0; fy < filterHeight; fy++) {
            const y = oy * strideHeight - padInfo.top + fy;
            if (y < 0 || y >= inHeight) continue;
            for (let fx = 0; fx < filterWidth; fx++) {
              const xx = ox * strideWidth - padInfo.left + fx;
              if (xx < 0 || xx >= inWidth) continue;
              const at = base + (y * inWidth + xx) * c + ch;
              if (xs[at] > bestValue || best < 0) { best = at; bestValue = xs[at]; }
            }
          }
          if (best >= 0) dx[best] += dys[((b * outHeight + oy) * outWidth + ox) * c + ch];
        }
      }
    }
  }
  return tf.tensor(dx, x.shape, x.dtype);
}
