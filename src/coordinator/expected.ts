// The samples a run's configuration calls for: what its trainers apply when it ends normally. Two limits end a
// run, whichever comes first: the stages' step budgets (the stage machine is done after them) and the epochs (every
// rank out of shards in the last epoch: the trainers stop). Which samples a step applies follows the trainers' plan
// (docs/coordinator.md, Determinism): shard i belongs to rank i mod W; a rank reads its shards in index order, in
// batches of the stage's batch size that never span two shards (a shard's last batch may be short) and continue at
// the shard's offset when the stage changes; a rank out of shards contributes an empty batch; and a step in which
// no rank has a sample is no step: the epoch turns over (or, in the last one, the run ends).
import { STAGE_ORDER, type StageBudgets } from './stages.ts';

export interface RunPlan {
  /** Samples in each shard, in index order. */
  shards: number[];
  epochs: number;
  /** Steps of each stage. */
  budgets: StageBudgets;
  /** Samples each rank reads per step, by stage. */
  batchSizes: StageBudgets;
  /** Trainers in the generation (the same W throughout: a generation change mid-epoch changes the plan). */
  world: number;
}

/** Where a rank stands in its shards: the next one (an index into its list) and the samples read of it. */
interface Position {
  shard: number;
  offset: number;
}

/** Samples the run applies: at most `epochs` × the dataset, fewer when the step budgets end it first. */
export function expectedSamples({ shards, epochs, budgets, batchSizes, world }: RunPlan): number {
  const W = Math.max(1, world);
  // Rank r's shards' sample counts, in the order it reads them.
  const own = Array.from({ length: W }, (_, r) => shards.filter((_, i) => i % W === r));
  const start = () => own.map((): Position => ({ shard: 0, offset: 0 }));
  let at = start();
  let seen = 0;
  let epoch = 0;
  // Whole runs of steps at a time: up to the stage's end or the epoch's, whichever is first (the rank that has
  // the most batches left decides the epoch's), so the work grows with shards × (stages + epochs), not with steps.
  for (const stage of STAGE_ORDER) {
    const batch = batchSizes[stage];
    let left = budgets[stage];
    while (left > 0) {
      const steps = Math.max(...own.map((counts, r) => batchesLeft(counts, at[r], batch)));
      if (steps === 0) {
        if (++epoch >= epochs) return seen;
        at = start();
        continue;
      }
      const k = Math.min(left, steps);
      own.forEach((counts, r) => (seen += advance(counts, at[r], k, batch)));
      left -= k;
    }
  }
  return seen;
}

/** Batches of `batch` a rank at `p` has left in the epoch. */
function batchesLeft(counts: number[], p: Position, batch: number): number {
  let n = 0;
  for (let j = p.shard; j < counts.length; j++) n += Math.ceil((counts[j] - (j === p.shard ? p.offset : 0)) / batch);
  return n;
}

/** Moves a rank `k` steps of `batch` on from `p` (in place); returns the samples it read. */
function advance(counts: number[], p: Position, k: number, batch: number): number {
  let read = 0;
  while (k > 0 && p.shard < counts.length) {
    const rest = counts[p.shard] - p.offset;
    const batches = Math.ceil(rest / batch);
    if (batches > k) {
      read += k * batch;
      p.offset += k * batch;
      return read;
    }
    read += rest;
    k -= batches;
    p.shard++;
    p.offset = 0;
  }
  return read;
}
