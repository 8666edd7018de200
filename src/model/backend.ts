// Picks the fastest tfjs backend that loads here: tensorflow (tfjs-node-gpu, then tfjs-node) → wasm → cpu.
// EASEL_BACKEND (or the caller's `preferred`) overrides the order. Logs which backend runs.
import * as tf from '@tensorflow/tfjs-core';
import { logger } from '../util/log.ts';

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

let active: Promise<BackendName> | undefined;

/** Initialises tfjs once per process and returns the backend in use. */
export function initBackend(preferred?: BackendName): Promise<BackendName> {
  active ??= (async () => {
    const want = (preferred ?? process.env.EASEL_BACKEND) as BackendName | undefined;
    if (want && !ORDER.includes(want)) throw new Error(`unknown backend '${want}' (EASEL_BACKEND): use ${ORDER.join(', ')}`);
    const order = want ? [want] : ORDER;
    for (const name of order) {
      if (await load(name)) {
        await tf.ready();
        log.info(`tfjs backend: ${name}`);
        return name;
      }
    }
    throw new Error(`no tfjs backend could load (tried ${order.join(', ')})`);
  })();
  return active;
}
