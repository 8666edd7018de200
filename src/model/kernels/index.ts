// easel's replacement kernels, per backend: each entry names the stock tfjs kernel it replaces (or adds) and why.
// useEaselKernels is called by initBackend once the backend has loaded; the tensorflow (libtensorflow) backend
// needs none and runs unchanged.
import { replaceKernel, type Replacement } from './replace.ts';
import { batchMatMul } from './batch-matmul.ts';
import { conv2dBackpropFilter } from './conv2d-backprop-filter.ts';
import { conv2dBackpropInput } from './conv2d-backprop-input.ts';
import { maxPoolGrad } from './max-pool-grad.ts';
import { wasmSlice } from './slice.ts';
import { wasmSplitV, wasmUnpack } from './split.ts';
import { wasmTranspose } from './transpose.ts';
import { resizeNearestNeighborGrad } from './resize-nearest-neighbor-grad.ts';
import { unsortedSegmentSum } from './unsorted-segment-sum.ts';

export interface EaselKernel {
  kernelName: string;
  replacement: Replacement;
  why: string;
}

export const EASEL_KERNELS: Record<string, EaselKernel[]> = {
  wasm: [
    { kernelName: 'Conv2DBackpropFilter', replacement: conv2dBackpropFilter, why: 'missing on wasm: conv training fails' },
    { kernelName: 'Conv2DBackpropInput', replacement: conv2dBackpropInput, why: 'stock is 3–10× slower than Conv2D of the same size' },
    { kernelName: 'BatchMatMul', replacement: batchMatMul, why: 'transposed/batched products run at 0.2–2 GFLOP/s, plain ones ~20' },
    { kernelName: 'UnsortedSegmentSum', replacement: unsortedSegmentSum, why: 'missing on wasm: gather gradients fail' },
    { kernelName: 'MaxPoolGrad', replacement: maxPoolGrad, why: 'stock gradient is wrong' },
    { kernelName: 'Transpose', replacement: wasmTranspose, why: 'rank-5 permutations take a generic path 10–40× slower' },
    { kernelName: 'Slice', replacement: wasmSlice, why: 'stock copies the whole input to JS per slice' },
    { kernelName: 'SplitV', replacement: wasmSplitV, why: 'stock uses the stock slice internally' },
    { kernelName: 'Unpack', replacement: wasmUnpack, why: 'stock uses the stock slice internally' },
  ],
  cpu: [
    { kernelName: 'Conv2DBackpropFilter', replacement: conv2dBackpropFilter, why: 'stock is a naive loop, 15–100× slower than this' },
    { kernelName: 'ResizeNearestNeighborGrad', replacement: resizeNearestNeighborGrad, why: 'stock is wrong for batch > 1' },
  ],
};

const restore = new Map<string, Array<() => void>>();

/**
 * Installs easel's kernels for `backendName` (`on`, the default) or puts the stock tfjs kernels back (`on` false,
 * for benchmarks and tests that compare the two). Idempotent. Returns the names of easel's kernels for the backend.
 */
export function useEaselKernels(backendName: string, on = true): string[] {
  const kernels = EASEL_KERNELS[backendName] ?? [];
  if (on && !restore.has(backendName)) {
    restore.set(backendName, kernels.map(({ kernelName, replacement }) => replaceKernel(kernelName, backendName, replacement)));
  } else if (!on && restore.has(backendName)) {
    for (const undo of restore.get(backendName)!) undo();
    restore.delete(backendName);
  }
  return kernels.map((k) => k.kernelName);
}
