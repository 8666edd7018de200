// Conv2DBackpropInput (the input gradient of conv2d, and the forward pass of conv2dTranspose) as ONE forward conv2d.
// Why: on wasm the stock kernel is a naive loop about 10× slower than the forward conv2d of the same size, and it
// runs in every conv layer's backward pass and in every transposed-conv upsampling.
// dx[b,y,x,ci] = Σ dyDilated[b, y + top - kh, x + left - kw, co] · W[kh,kw,ci,co] is a valid correlation of the
// stride-dilated, padded dy with the spatially flipped filter whose in/out channels are swapped.
import * as tf from '@tensorflow/tfjs-core';
import { asTensor, type KernelArgs } from './replace.ts';
import { dilate2d, window2d } from './window.ts';

export function conv2dBackpropInput(args: KernelArgs, stock: tf.KernelFunc | undefined): tf.TensorInfo | tf.TensorInfo[] {
  const attrs = args.attrs as unknown as tf.Conv2DBackpropInputAttrs;
  if (attrs.dataFormat === 'NCHW') {
    if (stock) return stock(args);
    throw new Error('Conv2DBackpropInput: easel implements NHWC only (data format NCHW requested)');
  }
  const dy = asTensor<tf.Rank.R4>(args.inputs.dy);
  const filter = asTensor<tf.Rank.R4>(args.inputs.filter);
  const inputShape = attrs.inputShape as [number, number, number, number];
  const conv = tf.backend_util.computeConv2DInfo(inputShape, filter.shape, attrs.strides, 1, attrs.pad, attrs.dimRoundingMode);
  const { filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw, padInfo } = conv;
  const [, height, width] = inputShape;
  return tf.tidy(() => {
    const dyDilated = dilate2d(dy, sh, sw);
    const dyWindow = window2d(dyDilated, kh - 1 - padInfo.top, height + kh - 1, kw - 1 - padInfo.left, width + kw - 1);
    const flipped = tf.transpose(tf.reverse(filter, [0, 1]), [0, 1, 3, 2]) as tf.Tensor4D; // [kh, kw, co, ci]
    return tf.conv2d(dyWindow, flipped, 1, 'valid');
  });
}
