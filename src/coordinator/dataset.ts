// The dataset a run leases out: the filtered shards (`NNNNN.tar` directly under the training store) with their
// sample counts, read from the filter's per-shard `NNNNN_stats.json` (its `kept`), and the filter's drop totals.
import type { ObjectStore } from '../data/store/index.ts';
import { parseShardName, statsKeyFor } from '../data/webdataset/names.ts';
import type { ShardInfo } from './service.ts';

export interface Dataset {
  shards: ShardInfo[];
  /** Samples the filter dropped, by reason (summed over the shards' stats). */
  dropped: Record<string, number>;
}

/** Lists the shards of a filtered dataset; a tar without its stats file is an error naming it. */
export async function discoverShards(store: ObjectStore): Promise<Dataset> {
  const keys = new Set<string>();
  for await (const o of store.list('')) keys.add(o.key);
  const tars = [...keys].filter((k) => !k.includes('/') && parseShardName(k) !== undefined).sort();
  if (tars.length === 0) throw new Error(`no shards (NNNNN.tar) in ${store.url}`);
  const missing = tars.filter((k) => !keys.has(statsKeyFor(k)));
  if (missing.length) {
    throw new Error(
      `${missing.length} shard(s) in ${store.url} have no per-shard stats (e.g. ${statsKeyFor(missing[0]!)}): the coordinator needs each shard's sample count; run \`easel filter\` into this store first`,
    );
  }
  const dropped: Record<string, number> = {};
  const shards: ShardInfo[] = [];
  for (const key of tars) {
    const stats = JSON.parse((await store.getBytes(statsKeyFor(key))).toString('utf8')) as { kept?: unknown; dropped?: Record<string, number> };
    if (!Number.isInteger(stats.kept) || (stats.kept as number) < 0) throw new Error(`${statsKeyFor(key)} in ${store.url}: 'kept' must be a non-negative integer`);
    shards.push({ key, samples: stats.kept as number });
    for (const [reason, n] of Object.entries(stats.dropped ?? {})) dropped[reason] = (dropped[reason] ?? 0) + n;
  }
  return { shards, dropped };
}
