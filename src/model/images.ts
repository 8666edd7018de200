// Resolution changes between the models: CLIP embeds the data's full-resolution images while the decoder may draw
// at a lower one (unCLIP: CLIP at 224 px, the decoder at 64 px, upsamplers after it).
import * as tf from '@tensorflow/tfjs-core';

/** Images [B, S, S, 3] average-pooled to [B, size, size, 3] (S a multiple of size); the same tensor when S = size. */
export function poolTo(images: tf.Tensor4D, size: number): tf.Tensor4D {
  const factor = images.shape[1] / size;
  if (!Number.isInteger(factor) || factor < 1) throw new Error(`cannot pool ${images.shape[1]}-pixel images to ${size}: not a whole factor`);
  return factor === 1 ? images : tf.avgPool(images, factor, factor, 'valid');
}

/** Images [B, s, s, 3] scaled up to [B, size, size, 3] (bilinear), e.g. decoder samples for CLIP to score. */
export function scaleTo(images: tf.Tensor4D, size: number): tf.Tensor4D {
  return images.shape[1] === size ? images : tf.image.resizeBilinear(images, [size, size]);
}
