// The run's tokenizer: plain UTF-8 bytes, or byte-level BPE merges learnt from the first captions of the training
// data when the run starts (`tokenizer.merges` in the run file). Learning reads data.train's shards in index order
// and is deterministic: a distributed run's coordinator learns them once and hands them out, and a trainer left to
// learn them itself gets the same ones. Checkpoints carry the merges: generation, eval and resumes read them there.
import { openStore } from '../data/store/index.ts';
import { listShards, readShard, ShardReadError } from '../data/webdataset/index.ts';
import { Tokenizer } from '../model/tokenizer.ts';
import { logger } from '../util/log.ts';
import type { Manifest } from './checkpoint.ts';
import type { RunConfig } from './config.ts';

const log = logger('tokenizer');
const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The first `max` UTF-8 captions under `url`, in shard order; samples without one (or not UTF-8) are passed over,
 * as the loader does. A shard that cannot be read fails it, naming the shard: unlike the loader, which counts the
 * shard and goes on, learning must see the same captions every time (a store hiccup and a truncated tar look alike
 * here), or two learners — a coordinator restarted without its state, a trainer on its own — would differ.
 */
export async function firstCaptions(url: string, max: number): Promise<string[]> {
  const store = await openStore(url);
  try {
    const out: string[] = [];
    for (const shard of await listShards(store)) {
      try {
        for await (const sample of readShard(store, shard.key)) {
          if (!sample.caption) continue;
          try {
            out.push(UTF8.decode(sample.caption));
          } catch {
            continue;
          }
          if (out.length >= max) return out;
        }
      } catch (err) {
        if (!(err instanceof ShardReadError)) throw err;
        throw new Error(`cannot learn tokenizer merges from ${url}: ${err.message}; they must come from the same captions every time, so fix or remove the shard (or set tokenizer.merges: 0)`, { cause: err });
      }
    }
    return out;
  } finally {
    await store.close();
  }
}

/** The tokenizer a fresh run trains with: bytes, or merges learnt from data.train's first captions. */
export async function learnRunTokenizer(config: RunConfig): Promise<Tokenizer> {
  const { merges, learnFrom } = config.tokenizer;
  if (merges === 0) return Tokenizer.BYTES;
  const captions = await firstCaptions(config.data.train, learnFrom);
  if (captions.length === 0) throw new Error(`tokenizer.merges = ${merges} needs captions to learn from, but data.train = ${config.data.train} has none`);
  const t = Tokenizer.learn(captions, merges);
  log.info('learnt BPE merges', { merges: t.merges.length, asked: merges, captions: captions.length, vocab: t.vocabSize });
  return t;
}

/** The tokenizer a checkpoint was trained with (the byte tokenizer when its manifest names none). */
export function checkpointTokenizer(manifest: Pick<Manifest, 'tokenizer'>, where: string): Tokenizer {
  return manifest.tokenizer === undefined ? Tokenizer.BYTES : Tokenizer.fromJson(manifest.tokenizer, `${where}/manifest.json`);
}

/** The manifest field for a tokenizer: none for the byte tokenizer, so byte-level checkpoints read as before. */
export function tokenizerManifest(t: Tokenizer): Pick<Manifest, 'tokenizer'> {
  return t.merges.length === 0 ? {} : { tokenizer: t.toJson() };
}

/** Same merges, in the same order (what makes two tokenizers encode alike). */
export function sameTokenizer(a: Tokenizer, b: Tokenizer): boolean {
  return a.merges.length === b.merges.length && a.merges.every(([x, y], k) => x === b.merges[k][0] && y === b.merges[k][1]);
}

/**
 * A 24-bit FNV-1a hash of the merges: exact as a float32, so it travels in the float header rank 0 broadcasts when a
 * generation forms, where every other rank compares it with its own (distributed.ts, sync).
 */
export function tokenizerFingerprint(t: Tokenizer): number {
  let h = 0x811c9dc5;
  for (const [a, b] of t.merges) {
    for (const id of [a, b]) {
      h ^= id;
      h = Math.imul(h, 0x01000193) >>> 0;
    }
  }
  return (h ^ (h >>> 24)) & 0xffffff;
}
