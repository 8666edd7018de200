// Caption checks: the caption member's bytes must be UTF-8, and the text must be long enough to describe
// an image. Pure functions: bytes in, verdict out.
import type { FilterConfig } from './config.ts';
import type { Check } from './reasons.ts';

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

/** Decodes bytes strictly: malformed UTF-8 gives undefined, never text with U+FFFD replacements. */
export function decodeUtf8(bytes: Uint8Array): string | undefined {
  try {
    return utf8.decode(bytes);
  } catch {
    return undefined;
  }
}

export function decodeCaption(bytes: Uint8Array): Check<string> {
  const text = decodeUtf8(bytes);
  return text === undefined ? { ok: false, reason: 'caption_encoding', detail: 'caption bytes are not valid UTF-8' } : { ok: true, value: text };
}

/** Trims the caption and checks it against the configured length floors; returns the trimmed text. */
export function checkCaption(text: string, cfg: Pick<FilterConfig, 'minCaptionChars' | 'minCaptionWords'>): Check<string> {
  const trimmed = text.trim();
  if (trimmed === '') return { ok: false, reason: 'caption', detail: 'caption is blank' };
  const chars = [...trimmed].length;
  if (chars < cfg.minCaptionChars) return { ok: false, reason: 'caption', detail: `caption has ${chars} characters, fewer than ${cfg.minCaptionChars}` };
  const words = trimmed.split(/\s+/u).length;
  if (words < cfg.minCaptionWords) return { ok: false, reason: 'caption', detail: `caption has ${words} words, fewer than ${cfg.minCaptionWords}` };
  return { ok: true, value: trimmed };
}

