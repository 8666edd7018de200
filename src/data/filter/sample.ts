// One sample's verdict: keep it, or drop it for the first reason (in DROP_REASONS order) it fails. The cheap
// checks run first, so a sample with a German caption never pays for an image decode.
import type { Sample } from '../webdataset/sample.ts';
import { checkCaption, decodeCaption, decodeUtf8 } from './caption.ts';
import type { FilterConfig } from './config.ts';
import { checkAspect, decodeImage } from './image.ts';
import type { DropReason } from './reasons.ts';

/** The part of the language detector (src/data/language.ts) the filter uses. */
export interface LanguageCheck {
  is(text: string, lang: string): boolean;
}

export type Verdict = { keep: true } | { keep: false; reason: DropReason; detail: string };

export async function checkSample(sample: Sample, cfg: FilterConfig, language: LanguageCheck): Promise<Verdict> {
  if (!sample.image) return { keep: false, reason: 'missing_image', detail: 'sample has no image member' };
  if (!sample.caption) return { keep: false, reason: 'missing_caption', detail: 'sample has no .txt member' };
  if (sample.json) {
    const json = checkJson(sample.json);
    if (!json.keep) return json;
  }
  const decoded = decodeCaption(sample.caption);
  if (!decoded.ok) return { keep: false, reason: decoded.reason, detail: decoded.detail };
  const caption = checkCaption(decoded.value, cfg);
  if (!caption.ok) return { keep: false, reason: caption.reason, detail: caption.detail };
  if (!language.is(caption.value, cfg.lang)) return { keep: false, reason: 'language', detail: `caption is not in language '${cfg.lang}'` };
  const image = await decodeImage(sample.image.bytes, cfg);
  if (!image.ok) return { keep: false, reason: image.reason, detail: image.detail };
  const aspect = checkAspect(image.value, cfg);
  if (!aspect.ok) return { keep: false, reason: aspect.reason, detail: aspect.detail };
  return { keep: true };
}

/** img2dataset's per-sample metadata must be a UTF-8 JSON object; anything else marks a damaged sample. */
export function checkJson(bytes: Uint8Array): Verdict {
  const text = decodeUtf8(bytes);
  if (text === undefined) return { keep: false, reason: 'json', detail: '.json member is not valid UTF-8' };
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return { keep: false, reason: 'json', detail: `.json member does not parse: ${(err as Error).message}` };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { keep: false, reason: 'json', detail: '.json member is not a JSON object' };
  }
  return { keep: true };
}
