// Shared plumbing for easel's replacement kernels: swap a kernel in tfjs's global registry, keeping the stock one
// so the replacement can hand the cases it does not improve back to it.
import * as tf from '@tensorflow/tfjs-core';

export type KernelArgs = Parameters<tf.KernelFunc>[0];

/** A replacement kernel: gets the stock kernel (if the backend has one) to fall back on. */
export type Replacement = (args: KernelArgs, stock: tf.KernelFunc | undefined) => tf.TensorInfo | tf.TensorInfo[];

/**
 * Registers `replacement` as `kernelName` for `backendName`, unregistering the stock kernel first. The stock
 * kernel's setup/dispose hooks are kept so the backend's own initialisation still runs if it is re-created.
 * Returns a function that puts the stock kernel back (benchmarks and tests compare the two in one process).
 */
export function replaceKernel(kernelName: string, backendName: string, replacement: Replacement): () => void {
  const stock = tf.getKernel(kernelName, backendName);
  if (stock) tf.unregisterKernel(kernelName, backendName);
  const stockFunc = stock?.kernelFunc;
  tf.registerKernel({
    kernelName,
    backendName,
    kernelFunc: (args) => replacement(args, stockFunc),
    setupFunc: stock?.setupFunc,
    disposeFunc: stock?.disposeFunc,
  });
  return () => {
    tf.unregisterKernel(kernelName, backendName);
    if (stock) tf.registerKernel(stock);
  };
}

/**
 * A kernel's inputs as tensors the tf ops accept. Ops hand kernels real tensors; a bare TensorInfo (a backend
 * calling a kernel directly) is wrapped, and the wrapper is disposed by the caller's tf.tidy.
 */
export function asTensor<R extends tf.Rank = tf.Rank>(info: tf.TensorInfo | undefined): tf.Tensor<R> {
  if (!info) throw new Error('easel kernel: a required input is missing');
  return (info instanceof tf.Tensor ? info : tf.engine().makeTensorFromTensorInfo(info)) as tf.Tensor<R>;
}
