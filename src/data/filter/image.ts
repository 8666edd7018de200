// Image checks: the image must decode completely with sharp (refusing decompression bombs before any pixel
// is allocated), and its aspect ratio, measured after EXIF orientation, must be within the configured range.
import sharp from 'sharp';
import type { FilterConfig } from './config.ts';
import { headerSize } from './header.ts';
import type { Check } from './reasons.ts';

export interface DecodedImage {
  /** Width and height as displayed, i.e. after applying the EXIF orientation (a 90°-rotated photo swaps them). */
  width: number;
  height: number;
  /** The decoder that read it: jpeg, png, webp, gif, … */
  format: string;
}

// Decoding to a thumbnail this size proves every byte of the image decodes (JPEG still entropy-decodes the
// whole scan when it shrinks on load) at a fraction of the cost of a full-size decode.
const PROBE_SIZE = 32;

/** Decodes `bytes` fully and reports the oriented size; a refused or broken image is dropped as 'image'. */
export async function decodeImage(bytes: Uint8Array, cfg: Pick<FilterConfig, 'maxPixels'>): Promise<Check<DecodedImage>> {
  if (bytes.length === 0) return { ok: false, reason: 'image', detail: 'image file is empty (0 bytes)' };
  try {
    // The header alone gives the size, so a bomb is refused before any pixel memory is allocated. The decode
    // below enforces the same limit (limitInputPixels) in case a format reports its size only while decoding.
    // JPEG and PNG headers are read here (header.ts); other formats, and headers it cannot read, by sharp.
    let size = headerSize(bytes) ?? (await sharpSize(bytes));
    const { width, height } = size;
    if (width * height > cfg.maxPixels) {
      return { ok: false, reason: 'image', detail: `image is ${width}×${height} = ${width * height} pixels, over the ${cfg.maxPixels} pixel limit` };
    }
    // failOn 'warning' (sharp's advice for untrusted input): truncated or corrupt scans are errors, not grey bands.
    const img = sharp(bytes, { failOn: 'warning', limitInputPixels: cfg.maxPixels, autoOrient: true });
    const { info } = await img.resize({ width: PROBE_SIZE, height: PROBE_SIZE, fit: 'inside' }).raw().toBuffer({ resolveWithObject: true });
    // The decoder drew the thumbnail from what it read: a header read here that disagrees is not trusted.
    if (!thumbnailFits(size, info)) size = await sharpSize(bytes);
    return { ok: true, value: size };
  } catch (err) {
    return { ok: false, reason: 'image', detail: `image does not decode: ${(err as Error).message}` };
  }
}

async function sharpSize(bytes: Uint8Array): Promise<DecodedImage> {
  const meta = await sharp(bytes, { limitInputPixels: false, autoOrient: true }).metadata();
  return { width: meta.autoOrient.width, height: meta.autoOrient.height, format: meta.format };
}

/** Whether a PROBE_SIZE 'inside' thumbnail of w×h pixels could be `thumb` (each side within a pixel of exact). */
export function thumbnailFits(size: Pick<DecodedImage, 'width' | 'height'>, thumb: { width: number; height: number }): boolean {
  const scale = PROBE_SIZE / Math.max(size.width, size.height);
  return Math.abs(thumb.width - size.width * scale) <= 1 && Math.abs(thumb.height - size.height * scale) <= 1;
}

/** Checks width/height against [minAspect, maxAspect], both ends inclusive. */
export function checkAspect(img: Pick<DecodedImage, 'width' | 'height'>, cfg: Pick<FilterConfig, 'minAspect' | 'maxAspect'>): Check<number> {
  const aspect = img.width / img.height;
  if (aspect < cfg.minAspect || aspect > cfg.maxAspect) {
    return { ok: false, reason: 'aspect_ratio', detail: `aspect ratio ${img.width}×${img.height} = ${aspect.toFixed(3)} is outside [${cfg.minAspect}, ${cfg.maxAspect}]` };
  }
  return { ok: true, value: aspect };
}
