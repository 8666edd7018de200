// Byte-level tokenizer: a caption's UTF-8 bytes are its tokens, so any text (emoji, CJK, accents) encodes with no
// unknown token and no vocabulary file. A row is BOS, bytes…, EOS, then PAD up to the context length; the text
// encoder pools its output at the EOS position.
import * as tf from '@tensorflow/tfjs-core';

/** Ids 0–255 are the bytes themselves. */
export const BOS = 256;
export const EOS = 257;
export const PAD = 258;
export const VOCAB_SIZE = 259;

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: false });

/** True for a UTF-8 continuation byte (10xxxxxx): cutting before it would split a character. */
function isContinuation(byte: number): boolean {
  return (byte & 0xc0) === 0x80;
}

/**
 * Encodes one text to exactly `contextLength` ids: BOS, bytes, EOS, PAD…. A text too long for the context is cut
 * at the last whole UTF-8 character that fits, and still ends in EOS.
 */
export function encode(text: string, contextLength: number): Int32Array {
  if (!Number.isInteger(contextLength) || contextLength < 2) {
    throw new Error(`context length must be an integer ≥ 2 (room for BOS and EOS), got ${contextLength}`);
  }
  const bytes = utf8.encode(text);
  let n = Math.min(bytes.length, contextLength - 2);
  while (n < bytes.length && n > 0 && isContinuation(bytes[n])) n--;
  const ids = new Int32Array(contextLength).fill(PAD);
  ids[0] = BOS;
  ids.set(bytes.subarray(0, n), 1);
  ids[n + 1] = EOS;
  return ids;
}

/** The text of one encoded row: the bytes between BOS and the first EOS (an invalid sequence decodes to U+FFFD). */
export function decode(ids: ArrayLike<number>): string {
  const bytes: number[] = [];
  for (let i = ids[0] === BOS ? 1 : 0; i < ids.length && ids[i] !== EOS; i++) {
    if (ids[i] < 256) bytes.push(ids[i]);
  }
  return utf8Decoder.decode(Uint8Array.from(bytes));
}

/** Encodes a batch: int32 [B, contextLength]. */
export function tokenize(texts: string[], contextLength: number): tf.Tensor2D {
  const ids = new Int32Array(texts.length * contextLength);
  texts.forEach((text, i) => ids.set(encode(text, contextLength), i * contextLength));
  return tf.tensor2d(ids, [texts.length, contextLength], 'int32');
}
