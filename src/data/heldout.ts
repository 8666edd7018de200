// Held-out pairs read whole into memory: the first `max` samples of a split, in shard order, decoded as the
// training loader decodes them. For the small fixed sets that training validates on and `easel eval` scores, where
// the same samples must come back every time (no shuffle, no cursor).
import { decodeImage } from './loader.ts';
import { openStore } from './store/index.ts';
import { listShards, readShard } from './webdataset/index.ts';

export interface HeldOutSample {
  /** The shard key and the sample's key in it, to name a sample in errors. */
  shard: string;
  key: string;
  caption: string;
  /** size×size×3 in [-1, 1]. */
  image: Float32Array;
  /** The raw .json member (img2dataset's metadata; the synthetic dataset's ground truth), if any. */
  json?: Buffer;
}

/**
 * The first `max` samples under `url` (NNNNN.tar, in shard order). A sample without an image or a caption is an
 * error, not a skip: a held-out set must be the same every time it is read, so pass filtered shards.
 */
export async function readHeldOut(url: string, imageSize: number, max: number): Promise<HeldOutSample[]> {
  const store = await openStore(url);
  try {
    const shards = await listShards(store);
    if (shards.length === 0) throw new Error(`no shards (NNNNN.tar) under ${url}: pass a held-out split (filtered shards, or the synthetic dataset's eval/)`);
    const out: HeldOutSample[] = [];
    for (const s of shards) {
      for await (const sample of readShard(store, s.key)) {
        if (out.length >= max) return out;
        if (!sample.image || !sample.caption) throw new Error(`${url}/${s.key}: sample ${sample.key} lacks an image or a caption (held-out sets must be filtered shards)`);
        out.push({ shard: s.key, key: sample.key, caption: sample.caption.toString('utf8'), image: await decodeImage(sample.image.bytes, imageSize), json: sample.json });
      }
    }
    return out;
  } finally {
    await store.close();
  }
}
