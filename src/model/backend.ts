// Picks the fastest tfjs backend that loads here: tensorflow (tfjs-node-gpu, then tfjs-node) → wasm → cpu.
// EASEL_BACKEND (or the caller's `preferred`) overrides the order. Logs which backend runs. Then makes tfjs able to
// train on it: registers tfjs's gradients and easel's replacement kernels (src/model/kernels, docs/backends.md).
import { register } from 'node:module';
import * as tf from '@tensorflow/tfjs-core';
import { logger } from '../util/log.ts';
import { useEaselKernels } from './kernels/index.ts';
import { useBatchMatMulGrad } from './kernels/batch-matmul-grad.ts';

export type BackendName = 'tensorflow' | 'wasm' | 'cpu';
const ORDER: BackendName[] = ['tensorflow', 'wasm', 'cpu'];
const log = logger('backend');

async function load(name: BackendName): Promise<boolean> {
  try {
    if (name === 'tensorflow') {
      try {
        await import('@tensorflow/tfjs-node-gpu' as string);
      } catch {
        await import('@tensorflow/tfjs-node' as string);
      }
    } else if (name === 'wasm') {
      await import('@tensorflow/tfjs-backend-wasm');
    } else {
      await import('@tensorflow/tfjs-backend-cpu');
    }
    return await tf.setBackend(name);
  } catch (err) {
    log.debug(`backend ${name} did not load`, { reason: (err as Error).message.split('\n')[0] });
    return false;
  }
}

// Resolves the extensionless relative imports of tfjs-core's ESM build ('./engine' → './engine.js'), for that
// folder only. Node's own resolver refuses them.
const TFJS_ESM_RESOLVER = 'data:text/javascript,' + encodeURIComponent(`
export async function resolve(specifier, context, next) {
  if (specifier.startsWith('.') && !specifier.endsWith('.js') && context.parentURL?.includes('/@tensorflow/tfjs-core/dist/')) {
    return next(specifier + '.js', context);
  }
  return next(specifier, context);
}`);

/**
 * tfjs-core's Node bundle defines no gradients: the @tensorflow/tfjs umbrella package (which we do not install)
 * normally registers them from tfjs-core's ESM build. We load that one file the same way; tfjs keeps its gradient
 * registry and engine in globals, so the definitions apply to the tf we import. Skipped when something (e.g.
 * tfjs-node, which bundles the umbrella package) has registered them already.
 */
async function registerGradients(): Promise<void> {
  if (tf.getGradient('Sum')) return;
  register(TFJS_ESM_RESOLVER);
  await import('@tensorflow/tfjs-core/dist/register_all_gradients.js' as string);
}

let active: Promise<BackendName> | undefined;

/** Initialises tfjs once per process and returns the backend in use. Later calls return the same promise. */
export function initBackend(preferred?: BackendName): Promise<BackendName> {
  active ??= (async () => {
    const want = (preferred ?? process.env.EASEL_BACKEND) as BackendName | undefined;
    if (want && !ORDER.includes(want)) throw new Error(`unknown backend '${want}' (EASEL_BACKEND): use ${ORDER.join(', ')}`);
    const order = want ? [want] : ORDER;
    for (const name of order) {
      if (await load(name)) {
        await tf.ready();
        await registerGradients();
        useBatchMatMulGrad();
        const kernels = useEaselKernels(name);
        log.info(`tfjs backend: ${name}`, kernels.length ? { easelKernels: kernels.join(',') } : undefined);
        return name;
      }
    }
    throw new Error(`no tfjs backend could load (tried ${order.join(', ')})`);
  })();
  return active;
}
