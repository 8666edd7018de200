// The coordinator's settings: a run file carries them under its `coordinator` key; `easel coordinator` flags
// override them. Errors name the field.
import { z } from 'zod';
import { validate } from '../cli/args.ts';

export const CoordinatorConfig = z.strictObject({
  heartbeatTimeoutMs: z.number().int().positive().default(10_000).describe('a trainer silent this long is declared dead and a new generation forms'),
  leaseMs: z.number().int().positive().default(60_000).describe('a shard lease lapses unless its trainer heartbeats (or reports) within this long'),
  minTrainers: z.number().int().positive().default(1).describe('fewest trainers a generation may have; below it the run waits'),
  maxTrainers: z.number().int().positive().default(64).describe('most trainers the run accepts; later ones are refused'),
  epochs: z.number().int().positive().default(1).describe('passes over the dataset; the lease table starts afresh each epoch'),
  tickMs: z.number().int().positive().default(1000).describe('how often the coordinator checks heartbeats and lease expiries'),
  checksumEvery: z.number().int().min(0).default(100).describe('every this many steps the trainers compare weight checksums; a mismatch re-syncs every rank from rank 0 (0: never)'),
  wire: z
    .enum(['f32', 'bf16', 'f16'])
    .default('f32')
    .describe("element type of the gradient all-reduce on the wire: bf16/f16 halve its bytes at the cost of precision (the transport's CollectiveOptions.wire); CLIP's embedding all-gather and the weight sync stay f32"),
  httpHost: z.string().min(1).default('0.0.0.0').describe('address the /metrics, /healthz, /readyz and /status server listens on'),
  httpPort: z.number().int().min(0).max(65535).default(9464).describe('port of that server (0: any free port)'),
}).refine((c) => c.minTrainers <= c.maxTrainers, { path: ['minTrainers'], message: 'must be at most maxTrainers' });
export type CoordinatorConfig = z.output<typeof CoordinatorConfig>;

/** Validates the `coordinator` section of a run file (or flags); errors name `coordinator.<field>`. */
export function parseCoordinatorConfig(value: unknown): CoordinatorConfig {
  return validate(CoordinatorConfig, value ?? {}, 'coordinator config', 'coordinator');
}
