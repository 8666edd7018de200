// Draws a ShapeSpec. rasterize() is pure arithmetic (4×4 supersampled coverage, so edges are anti-aliased
// the same way on every machine); renderImage() encodes the pixels with sharp.
import sharp from 'sharp';
import { BACKGROUND_RGB, COLOR_RGB, type ShapeSpec } from './spec.ts';

const SUBSAMPLES = 4;

/** Whether point (x, y) (pixel units, y down) lies inside the spec's shape. */
export function insideShape(spec: ShapeSpec, x: number, y: number): boolean {
  const half = spec.extent / 2;
  const dx = x - spec.cx;
  const dy = y - spec.cy;
  switch (spec.shape) {
    case 'circle':
      return dx * dx + dy * dy <= half * half;
    case 'square':
      return Math.abs(dx) <= half && Math.abs(dy) <= half;
    case 'triangle': {
      // Apex at the top centre, base along the bottom edge of the bounding box: half-width grows from 0 to half.
      const fromTop = dy + half;
      return fromTop >= 0 && fromTop <= spec.extent && Math.abs(dx) <= fromTop / 2;
    }
  }
}

/** The spec as RGB pixels (height × width × 3, row-major). */
export function rasterize(spec: ShapeSpec): Uint8Array {
  const { width, height } = spec;
  const fg = COLOR_RGB[spec.color];
  const bg = BACKGROUND_RGB[spec.background];
  const out = new Uint8Array(width * height * 3);
  const n = SUBSAMPLES * SUBSAMPLES;
  for (let py = 0; py < height; py++) {
    for (let px = 0; px < width; px++) {
      let hits = 0;
      for (let i = 0; i < SUBSAMPLES; i++) {
        for (let j = 0; j < SUBSAMPLES; j++) {
          if (insideShape(spec, px + (j + 0.5) / SUBSAMPLES, py + (i + 0.5) / SUBSAMPLES)) hits++;
        }
      }
      const a = hits / n;
      const o = (py * width + px) * 3;
      for (let c = 0; c < 3; c++) out[o + c] = Math.round(bg[c] * (1 - a) + fg[c] * a);
    }
  }
  return out;
}

export type ImageFormat = 'png' | 'jpg' | 'webp';

/** The spec encoded as an image file (JPEG quality 90; PNG and WebP lossless). */
export async function renderImage(spec: ShapeSpec, format: ImageFormat = 'png'): Promise<Buffer> {
  const img = sharp(rasterize(spec), { raw: { width: spec.width, height: spec.height, channels: 3 } });
  switch (format) {
    case 'png':
      return img.png({ compressionLevel: 9 }).toBuffer();
    case 'jpg':
      return img.jpeg({ quality: 90 }).toBuffer();
    case 'webp':
      return img.webp({ lossless: true }).toBuffer();
  }
}
