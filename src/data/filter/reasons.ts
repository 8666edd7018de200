// Why a sample was dropped. Every sample the filter reads ends up either kept or under exactly one of
// these reasons (the first check it fails, in the order listed), so stats.json always adds up.
export const DROP_REASONS = [
  'missing_image', // the sample has no image member (.jpg/.png/.webp/…)
  'missing_caption', // the sample has no .txt member
  'json', // the .json member is not a JSON object
  'caption_encoding', // the .txt bytes are not valid UTF-8
  'caption', // blank, or shorter than --min-caption-chars / --min-caption-words
  'language', // the caption is not in --lang
  'image', // the image does not decode: corrupt, truncated, not an image, or over --max-pixels
  'aspect_ratio', // width/height of the decoded, EXIF-oriented image is outside [--min-aspect, --max-aspect]
] as const;

export type DropReason = (typeof DROP_REASONS)[number];

/** A check's verdict: a value to carry on with, or a reason to drop the sample and a human-readable detail. */
export type Check<T> = { ok: true; value: T } | { ok: false; reason: DropReason; detail: string };
