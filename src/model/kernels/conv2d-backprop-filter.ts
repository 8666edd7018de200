// Conv2DBackpropFilter (the filter gradient of conv2d) as ONE forward conv2d.
// Why: wasm has no such kernel at all, so training any conv or conv-transpose layer fails there; on cpu the stock
// kernel is a naive loop about 100× slower than the forward conv of the same size.
// dW[kh,kw,ci,co] = Σ_{b,i,j} xPadded[b, i·sh + kh, j·sw + kw, ci] · dy[b,i,j,co] is itself a convolution over the
// spatial axes in which x's channels play the batch, x's batch plays the input channels, dy is the filter and the
// stride becomes the filter's dilation.
import * as tf from '@tensorflow/tfjs-core';
import { asTensor, type KernelArgs } from './replace.ts';
import { window2d } from './window.ts';

export function conv2dBackpropFilter(args: KernelArgs, stock: tf.KernelFunc | undefined): tf.TensorInfo | tf.TensorInfo[] {
  const attrs = args.attrs as unknown as tf.Conv2DBackpropFilterAttrs;
  if (attrs.dataFormat === 'NCHW') {
    if (stock) return stock(args);
    throw new Error('Conv2DBackpropFilter: easel implements NHWC only (data format NCHW requested)');
  }
  const x = asTensor<tf.Rank.R4>(args.inputs.x);
  const dy = asTensor<tf.Rank.R4>(args.inputs.dy);
  const conv = tf.backend_util.computeConv2DInfo(x.shape, attrs.filterShape, attrs.strides, 1, attrs.pad, attrs.dimRoundingMode);
  const { filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw, outHeight, outWidth, padInfo } = conv;
  return tf.tidy(() => {
    const xWindow = window2d(x, padInfo.top, (outHeight - 1) * sh + kh, padInfo.left, (outWidth - 1) * sw + kw);
    const xChannelsAsBatch = tf.transpose(xWindow, [3, 1, 2, 0]); // [ci, H, W, b]
    const dyAsFilter = tf.transpose(dy, [1, 2, 0, 3]); // [oh, ow, b, co]
    const dw = tf.conv2d(xChannelsAsBatch, dyAsFilter as tf.Tensor4D, 1, 'valid', 'NHWC', [sh, sw]); // [ci, kh, kw, co]
    return tf.transpose(dw, [1, 2, 0, 3]);
  });
}
