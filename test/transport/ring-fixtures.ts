// Shared by the transport tests: W rings on one nats-server, seeded vectors, and the reference mean in ring order.
import type { NatsConnection } from 'nats';
import { openNats, closeNats } from '../../src/transport/connection.ts';
import { openRing, type CollectiveOptions, type Ring } from '../../src/transport/allreduce.ts';
import { segmentSpans } from '../../src/transport/chunks.ts';
import { Rng } from '../../src/util/rng.ts';

export interface Rings {
  rings: Ring[];
  conns: NatsConnection[];
  close(): Promise<void>;
}

/** W connections (one per rank, as separate processes would have) and their rings. */
export async function openRings(url: string, world: number, opts: Partial<CollectiveOptions> = {}, run = 'test-run', generation = 1): Promise<Rings> {
  const conns = await Promise.all(Array.from({ length: world }, (_, r) => openNats({ servers: url, name: `rank-${r}`, reconnectWaitMs: 50, reconnectJitterMs: 50 })));
  const rings = conns.map((nc, rank) => openRing(nc, { run, generation, rank, world }, opts));
  // Subscriptions must reach the server before anyone publishes.
  await Promise.all(conns.map((nc) => nc.flush()));
  return {
    rings,
    conns,
    close: async () => {
      for (const r of rings) r.close();
      await Promise.all(conns.map(closeNats));
    },
  };
}

/** n normal-ish floats with a spread of magnitudes, from a seed. */
export function seededVector(n: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (rng.float() - 0.5) * 2 ** Math.floor(rng.float() * 20 - 10);
  return out;
}

/** The documented result: segment s summed in float32 from rank s+1 around the ring, then divided by W. */
export function ringOrderMean(inputs: Float32Array[]): Float32Array {
  const w = inputs.length;
  const n = inputs[0].length;
  const out = new Float32Array(n);
  segmentSpans(n, w).forEach((span, s) => {
    for (let i = span.offset; i < span.offset + span.length; i++) {
      let acc = inputs[(s + 1) % w][i];
      for (let k = 2; k <= w; k++) acc = Math.fround(acc + inputs[(s + k) % w][i]);
      out[i] = Math.fround(acc / w);
    }
  });
  return out;
}

/** Largest |a - mean64| relative to max(|mean64|, tiny), where mean64 is computed in float64. */
export function worstErrorVsFloat64Mean(result: Float32Array, inputs: Float32Array[]): number {
  let worst = 0;
  for (let i = 0; i < result.length; i++) {
    let sum = 0;
    let scale = 0;
    for (const x of inputs) {
      sum += x[i];
      scale += Math.abs(x[i]);
    }
    const mean = sum / inputs.length;
    worst = Math.max(worst, Math.abs(result[i] - mean) / Math.max(scale / inputs.length, 1e-30));
  }
  return worst;
}

export function sameBytes(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}
