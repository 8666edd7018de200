// A WebDataset sample: the tar members that share one key, sorted into image, caption, metadata and the rest.
import { CAPTION_EXTENSION, JSON_EXTENSION, isImageExtension } from './names.ts';

export interface Sample {
  /** The members' shared name stem, e.g. `000000012`. */
  key: string;
  /** The first image member; `ext` keeps its original spelling (`jpg`, `JPEG`, `webp`…). */
  image?: { ext: string; bytes: Buffer };
  /** The `.txt` member as raw bytes, so a caption that is not valid UTF-8 can be detected downstream. */
  caption?: Buffer;
  /** The `.json` member as raw bytes (img2dataset's per-sample metadata); may be broken JSON. */
  json?: Buffer;
  /** Every other member by extension (a second image, `.cls`, …), passed through unchanged. */
  extra: Record<string, Buffer>;
}

/** Files a member under its role in the sample. Returns false when that role was already taken. */
export function addMember(sample: Sample, ext: string, bytes: Buffer): boolean {
  if (isImageExtension(ext) && !sample.image) {
    sample.image = { ext, bytes };
    return true;
  }
  if (ext === CAPTION_EXTENSION) {
    if (sample.caption) return false;
    sample.caption = bytes;
    return true;
  }
  if (ext === JSON_EXTENSION) {
    if (sample.json) return false;
    sample.json = bytes;
    return true;
  }
  if (ext in sample.extra || sample.image?.ext === ext) return false;
  sample.extra[ext] = bytes;
  return true;
}

/** The sample as tar members `[name, bytes]`: image, caption, metadata, then the extras in insertion order. */
export function sampleMembers(sample: Sample): Array<[string, Buffer]> {
  const out: Array<[string, Buffer]> = [];
  if (sample.image) out.push([`${sample.key}.${sample.image.ext}`, sample.image.bytes]);
  if (sample.caption) out.push([`${sample.key}.${CAPTION_EXTENSION}`, sample.caption]);
  if (sample.json) out.push([`${sample.key}.${JSON_EXTENSION}`, sample.json]);
  for (const [ext, bytes] of Object.entries(sample.extra)) out.push([`${sample.key}.${ext}`, bytes]);
  return out;
}
