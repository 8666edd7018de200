// Byte-level BPE tokenizer (as GPT-2 and CLIP): a caption's UTF-8 bytes are its starting tokens, so any text
// (emoji, CJK, accents) encodes with no unknown token; learnt merges then join frequent byte pairs into word-sized
// tokens, so the same context holds several times more text (the demo's captions: 39.5 bytes, 8.0 tokens). With no
// merges it is the plain byte tokenizer (ids 0–255 are the bytes), whose ids existing checkpoints depend on. A row
// is BOS, tokens…, EOS, then PAD up to the context length; the text encoder pools its output at the EOS position.
import * as tf from '@tensorflow/tfjs-core';
import { z } from 'zod';
import { formatZodError } from '../cli/args.ts';

/** Ids 0–255 are the bytes themselves; merge k makes id VOCAB_SIZE + k. */
export const BOS = 256;
export const EOS = 257;
export const PAD = 258;
/** The byte tokenizer's vocabulary: the bytes and the three special ids. */
export const VOCAB_SIZE = 259;

type Merge = readonly [number, number];

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: false });

/**
 * GPT-2's pre-tokenisation: a word keeps its leading space (so " circle" can become one token), runs of digits and
 * of punctuation are pieces of their own, and a run of spaces leaves its last one to the next word. Merges never
 * cross pieces. Every character falls in some piece, so the pieces concatenate back to the text.
 */
const PIECE = / ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** Captions repeat words, so encoded pieces are cached; clearing at this size bounds the memory. */
const CACHE_LIMIT = 10_000;

/** A pair as one Map key. Ids stay below 2^26 (that would be 67M merges), so the key is exact and orders pairs as (a, b) do. */
const PAIR_SPAN = 2 ** 26;
function pairKey(a: number, b: number): number {
  return a * PAIR_SPAN + b;
}

/** True for a UTF-8 continuation byte (10xxxxxx): cutting before it would split a character. */
function isContinuation(byte: number): boolean {
  return (byte & 0xc0) === 0x80;
}

function checkContextLength(contextLength: number): void {
  if (!Number.isInteger(contextLength) || contextLength < 2) {
    throw new Error(`context length must be an integer ≥ 2 (room for BOS and EOS), got ${contextLength}`);
  }
}

/** Replaces each occurrence of the pair (a, b), left to right and not overlapping, with `id`. */
function mergePair(ids: readonly number[], a: number, b: number, id: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < ids.length; i++) {
    if (i + 1 < ids.length && ids[i] === a && ids[i + 1] === b) {
      out.push(id);
      i++;
    } else {
      out.push(ids[i]);
    }
  }
  return out;
}

/** Standard BPE encoding of one piece: while some adjacent pair has a merge, apply the earliest-learnt one. */
function applyMerges(bytes: readonly number[], merges: readonly Merge[], rank: ReadonlyMap<number, number>): number[] {
  let ids = [...bytes];
  for (;;) {
    let best = Infinity;
    for (let i = 0; i + 1 < ids.length; i++) best = Math.min(best, rank.get(pairKey(ids[i], ids[i + 1])) ?? Infinity);
    if (best === Infinity) return ids;
    ids = mergePair(ids, merges[best][0], merges[best][1], VOCAB_SIZE + best);
  }
}

/**
 * The most frequent pair's key, ties going to the smaller first id, then the smaller second id (the smaller key):
 * the choice depends only on the counts, never on the Map's insertion order.
 */
function mostFrequentPair(counts: ReadonlyMap<number, number>): { key: number; count: number } | undefined {
  let best: { key: number; count: number } | undefined;
  for (const [key, count] of counts) {
    if (!best || count > best.count || (count === best.count && key < best.key)) best = { key, count };
  }
  return best;
}

/**
 * Learns up to `maxMerges` merges from pieces and their frequencies: repeatedly merge the most frequent adjacent
 * pair. Pair counts are updated only for the pieces that held the merged pair, not recounted over every piece.
 */
function learnMerges(pieceCounts: ReadonlyMap<string, number>, maxMerges: number): Merge[] {
  const words = [...pieceCounts.keys()].map((piece) => Array.from(utf8.encode(piece)));
  const freq = [...pieceCounts.values()];
  const pairCounts = new Map<number, number>();
  // pair → the words that hold it (or did: a stale entry costs one no-op merge, never a wrong count).
  const holders = new Map<number, Set<number>>();
  const count = (w: number, sign: 1 | -1): void => {
    const ids = words[w];
    for (let i = 0; i + 1 < ids.length; i++) {
      const key = pairKey(ids[i], ids[i + 1]);
      const c = (pairCounts.get(key) ?? 0) + sign * freq[w];
      if (c === 0) pairCounts.delete(key);
      else pairCounts.set(key, c);
      if (sign > 0) {
        const set = holders.get(key) ?? new Set<number>();
        holders.set(key, set.add(w));
      }
    }
  };
  words.forEach((_, w) => count(w, 1));
  const merges: Merge[] = [];
  while (merges.length < maxMerges) {
    const best = mostFrequentPair(pairCounts);
    if (!best || best.count < 2) break;
    const a = Math.floor(best.key / PAIR_SPAN);
    const b = best.key % PAIR_SPAN;
    for (const w of holders.get(best.key) ?? []) {
      count(w, -1);
      words[w] = mergePair(words[w], a, b, VOCAB_SIZE + merges.length);
      count(w, 1);
    }
    holders.delete(best.key);
    merges.push([a, b]);
  }
  return merges;
}

/** Where a merge list is malformed: each merge must join two ids defined before it (bytes or earlier merges), once. */
function mergeProblems(merges: readonly Merge[]): { index: number; message: string }[] {
  const problems: { index: number; message: string }[] = [];
  const seen = new Map<number, number>();
  merges.forEach(([a, b], k) => {
    for (const id of [a, b]) {
      if (id === BOS || id === EOS || id === PAD) problems.push({ index: k, message: `id ${id} is a special token (BOS, EOS, PAD), not text` });
      else if (id >= VOCAB_SIZE + k) problems.push({ index: k, message: `id ${id} is not defined before merge ${k}` });
    }
    const earlier = seen.get(pairKey(a, b));
    if (earlier !== undefined) problems.push({ index: k, message: `pair [${a}, ${b}] is already merge ${earlier}` });
    else seen.set(pairKey(a, b), k);
  });
  return problems;
}

const TokenId = z.number().int().nonnegative();

/** A tokenizer as stored beside a checkpoint. */
export const TokenizerJson = z
  .object({
    format: z.literal('easel-bpe/1').describe('the file format and its version'),
    merges: z.array(z.tuple([TokenId, TokenId])).describe('merge k makes id 259 + k from a pair of earlier ids; earlier merges apply first'),
  })
  .superRefine((value, ctx) => {
    for (const p of mergeProblems(value.merges)) ctx.addIssue({ code: 'custom', path: ['merges', p.index], message: p.message });
  });
export type TokenizerJson = z.output<typeof TokenizerJson>;

export class Tokenizer {
  /** No merges: the byte tokenizer, ids unchanged. */
  static readonly BYTES: Tokenizer = new Tokenizer();

  readonly merges: readonly Merge[];
  readonly vocabSize: number;
  /** pair key → merge index: the lower, the earlier it applies. */
  private readonly rank = new Map<number, number>();
  /** Each id's bytes (empty for the special ids): what it decodes to, and where a cut may fall. */
  private readonly bytesOf: Uint8Array[];
  private readonly cache = new Map<string, readonly number[]>();

  constructor(merges: readonly Merge[] = []) {
    const problems = mergeProblems(merges);
    if (problems.length > 0) throw new Error(`invalid tokenizer merges:\n${problems.map((p) => `merges.${p.index}: ${p.message}`).join('\n')}`);
    this.merges = merges.map(([a, b]) => [a, b] as const);
    this.vocabSize = VOCAB_SIZE + merges.length;
    this.bytesOf = Array.from({ length: 256 }, (_, byte) => Uint8Array.of(byte));
    this.bytesOf.push(new Uint8Array(0), new Uint8Array(0), new Uint8Array(0));
    this.merges.forEach(([a, b], k) => {
      this.rank.set(pairKey(a, b), k);
      this.bytesOf.push(Uint8Array.of(...this.bytesOf[a], ...this.bytesOf[b]));
    });
  }

  /** Learns at most `merges` merges from `texts`, fewer when no pair occurs twice. Same texts, same merges. */
  static learn(texts: Iterable<string>, merges: number): Tokenizer {
    if (!Number.isInteger(merges) || merges < 0) throw new Error(`merges must be an integer ≥ 0, got ${merges}`);
    const pieceCounts = new Map<string, number>();
    for (const text of texts) {
      for (const [piece] of text.matchAll(PIECE)) pieceCounts.set(piece, (pieceCounts.get(piece) ?? 0) + 1);
    }
    return new Tokenizer(learnMerges(pieceCounts, merges));
  }

  /** Validates a stored tokenizer; the error names `where` and each bad field. */
  static fromJson(value: unknown, where: string): Tokenizer {
    const r = TokenizerJson.safeParse(value);
    if (!r.success) throw new Error(`invalid tokenizer in ${where}:\n${formatZodError(r.error)}`);
    return new Tokenizer(r.data.merges);
  }

  toJson(): TokenizerJson {
    return { format: 'easel-bpe/1', merges: this.merges.map(([a, b]) => [a, b]) };
  }

  /**
   * Encodes one text to exactly `contextLength` ids: BOS, tokens, EOS, PAD…. A text too long for the context keeps
   * the whole tokens that fit, less any that would split a character, and still ends in EOS.
   */
  encode(text: string, contextLength: number): Int32Array {
    checkContextLength(contextLength);
    const tokens = this.tokensOf(text, contextLength - 2);
    let n = Math.min(tokens.length, contextLength - 2);
    while (n < tokens.length && n > 0 && isContinuation(this.bytesOf[tokens[n]][0])) n--;
    const ids = new Int32Array(contextLength).fill(PAD);
    ids[0] = BOS;
    ids.set(tokens.slice(0, n), 1);
    ids[n + 1] = EOS;
    return ids;
  }

  /** The text of one encoded row: the tokens between BOS and the first EOS (an invalid sequence decodes to U+FFFD). */
  decode(ids: ArrayLike<number>): string {
    const bytes: number[] = [];
    for (let i = ids[0] === BOS ? 1 : 0; i < ids.length && ids[i] !== EOS; i++) {
      for (const byte of this.bytesOf[ids[i]] ?? []) bytes.push(byte);
    }
    return utf8Decoder.decode(Uint8Array.from(bytes));
  }

  /** Encodes a batch: int32 [B, contextLength]. */
  tokenize(texts: string[], contextLength: number): tf.Tensor2D {
    const ids = new Int32Array(texts.length * contextLength);
    texts.forEach((text, i) => ids.set(this.encode(text, contextLength), i * contextLength));
    return tf.tensor2d(ids, [texts.length, contextLength], 'int32');
  }

  /** The text's tokens: all of them, or at least `max + 1` (the cut looks no further, so the rest needs no encoding). */
  private tokensOf(text: string, max: number): number[] {
    // Without merges the pieces would only be cut apart and joined again: the bytes are the tokens.
    if (this.merges.length === 0) return Array.from(utf8.encode(text));
    const tokens: number[] = [];
    for (const [piece] of text.matchAll(PIECE)) {
      for (const id of this.encodePiece(piece)) tokens.push(id);
      if (tokens.length > max) break;
    }
    return tokens;
  }

  private encodePiece(piece: string): readonly number[] {
    let ids = this.cache.get(piece);
    if (ids === undefined) {
      ids = applyMerges(Array.from(utf8.encode(piece)), this.merges, this.rank);
      if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
      this.cache.set(piece, ids);
    }
    return ids;
  }
}

/** The byte tokenizer's encode (Tokenizer.BYTES). */
export function encode(text: string, contextLength: number): Int32Array {
  return Tokenizer.BYTES.encode(text, contextLength);
}

/** The byte tokenizer's decode (Tokenizer.BYTES). */
export function decode(ids: ArrayLike<number>): string {
  return Tokenizer.BYTES.decode(ids);
}

/** The byte tokenizer's tokenize (Tokenizer.BYTES). */
export function tokenize(texts: string[], contextLength: number): tf.Tensor2D {
  return Tokenizer.BYTES.tokenize(texts, contextLength);
}
