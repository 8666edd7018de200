// The filter's accounting: every sample read is either kept or dropped for exactly one reason, so
// input = kept + Σ dropped holds for each shard and for the whole run. assertBalanced checks it before any
// stats are published.
import { DROP_REASONS, type DropReason } from './reasons.ts';

export interface FilterCounts {
  input: number;
  kept: number;
  dropped: Record<DropReason, number>;
}

/** Per-shard stats, published as `<out>/NNNNN_stats.json` once that shard's filtered tar is published. */
export interface ShardStats extends FilterCounts {
  /** Input tar key, which is also the output tar key. */
  shard: string;
  /** Tar entries the reader set aside without forming a sample from them (see ShardReadStats). */
  skipped_members: { duplicate: number; oversized: number; not_a_member: number };
  seconds: number;
}

export interface FailedShard {
  shard: string;
  error: string;
}

/** `<out>/stats.json`: totals over every finished shard, including those finished by an earlier run. */
export interface FilterStats extends FilterCounts {
  shards: { total: number; done: number; failed: number };
  failed_shards: FailedShard[];
}

export function emptyCounts(): FilterCounts {
  return { input: 0, kept: 0, dropped: Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as Record<DropReason, number> };
}

/** Adds `b` into `a`. */
export function addCounts(a: FilterCounts, b: FilterCounts): void {
  a.input += b.input;
  a.kept += b.kept;
  for (const r of DROP_REASONS) a.dropped[r] += b.dropped[r] ?? 0;
}

export function droppedTotal(c: FilterCounts): number {
  return DROP_REASONS.reduce((sum, r) => sum + c.dropped[r], 0);
}

/** Throws unless input = kept + Σ dropped and every count is a non-negative integer. */
export function assertBalanced(c: FilterCounts, what: string): void {
  const counts = [c.input, c.kept, ...DROP_REASONS.map((r) => c.dropped[r])];
  if (!counts.every((n) => Number.isInteger(n) && n >= 0)) throw new Error(`${what}: counts must be non-negative integers: ${JSON.stringify(c)}`);
  const dropped = droppedTotal(c);
  if (c.input !== c.kept + dropped) throw new Error(`${what}: input ${c.input} ≠ kept ${c.kept} + dropped ${dropped}`);
}
