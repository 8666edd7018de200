// A deterministic judge of rendered shapes: reads an RGB image of one shape on a plain background and names the
// background, the shape's colour and its shape. It is how `easel eval` scores the decoder's samples, so it is
// deliberately simple geometry — border pixels give the background, distance from it gives a soft foreground
// mask, a per-pixel vote gives the colour, and the mask's fill of its bounding box (≈1 square, ≈π/4 circle,
// ≈½ triangle) plus how its width grows from top to bottom gives the shape.
import { insideShape } from '../data/synth/render.ts';
import { BACKGROUND_RGB, BACKGROUNDS, COLOR_RGB, COLORS, SHAPES, type Background, type Color, type Rgb, type Shape, type ShapeSpec } from '../data/synth/spec.ts';

export interface ShapeReading {
  background: Background;
  color: Color;
  shape: Shape;
  /** Foreground coverage as a fraction of the image (0 = nothing found: colour and shape are guesses). */
  coverage: number;
}

const dist2 = (a: ArrayLike<number>, b: ArrayLike<number>) => (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2 + (a[2] - b[2]) ** 2;

function nearest<K extends string>(names: readonly K[], table: Record<K, Rgb>, rgb: ArrayLike<number>): K {
  let best = names[0];
  for (const n of names) if (dist2(table[n], rgb) < dist2(table[best], rgb)) best = n;
  return best;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

/** Background = nearest named background to the per-channel median of the border pixels. */
export function readBackground(rgb: Uint8Array, width: number, height: number): Background {
  const ch: number[][] = [[], [], []];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (x !== 0 && y !== 0 && x !== width - 1 && y !== height - 1) continue;
      const o = (y * width + x) * 3;
      for (let c = 0; c < 3; c++) ch[c].push(rgb[o + c]);
    }
  }
  return nearest(BACKGROUNDS, BACKGROUND_RGB, ch.map(median));
}

/** Coverage (0..1) of each pixel by the shape, 4×4 supersampled exactly as the synthetic renderer draws it. */
function coverageOf(spec: ShapeSpec): Float32Array {
  const out = new Float32Array(spec.width * spec.height);
  const n = 4;
  for (let py = 0; py < spec.height; py++) {
    for (let px = 0; px < spec.width; px++) {
      let hits = 0;
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) if (insideShape(spec, px + (j + 0.5) / n, py + (i + 0.5) / n)) hits++;
      out[py * spec.width + px] = hits / (n * n);
    }
  }
  return out;
}

/**
 * Shape from a soft mask (coverage 0..1 per pixel) by template fitting: for each shape, the extent that gives
 * the mask's area and the centre that gives its centroid place a template, drawn with the renderer's own
 * geometry, in a small neighbourhood of scales and offsets; the shape whose best template differs least from
 * the mask (sum of absolute differences) wins. Deterministic, and exact on clean renders up to anti-aliasing.
 */
export function classifyMask(mask: Float32Array, width: number, height: number): Shape {
  let area = 0, mx = 0, my = 0;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const a = mask[y * width + x];
      area += a; mx += a * (x + 0.5); my += a * (y + 0.5);
    }
  }
  if (area < 1) return 'circle';
  mx /= area; my /= area;
  const base: Record<Shape, { extent: number; dy: number }> = {
    square: { extent: Math.sqrt(area), dy: 0 },
    circle: { extent: 2 * Math.sqrt(area / Math.PI), dy: 0 },
    // Apex up: the centroid lies a sixth of the extent below the bounding box's centre.
    triangle: { extent: Math.sqrt(2 * area), dy: 1 / 6 },
  };
  let best: Shape = 'circle';
  let bestErr = Infinity;
  for (const shape of SHAPES) {
    for (const scale of [0.92, 1, 1.08]) {
      const extent = base[shape].extent * scale;
      for (const ox of [-0.35, 0, 0.35]) {
        for (const oy of [-0.35, 0, 0.35]) {
          const spec: ShapeSpec = { shape, color: 'red', background: 'white', size: 'medium', width, height, extent, cx: mx + ox, cy: my - base[shape].dy * extent + oy };
          const t = coverageOf(spec);
          let err = 0;
          for (let i = 0; i < t.length; i++) err += Math.abs(t[i] - mask[i]);
          if (err < bestErr) { bestErr = err; best = shape; }
        }
      }
    }
  }
  return best;
}

/** Reads one H×W RGB image (row-major, 3 bytes per pixel). */
export function analyseShape(rgb: Uint8Array, width: number, height: number): ShapeReading {
  const background = readBackground(rgb, width, height);
  const bg = BACKGROUND_RGB[background];
  // Colour: every pixel clearly away from the background votes for its nearest shape colour.
  const votes = new Map<Color, number>();
  const px = new Float32Array(3);
  for (let i = 0; i < width * height; i++) {
    for (let c = 0; c < 3; c++) px[c] = rgb[i * 3 + c];
    if (dist2(px, bg) < 60 ** 2) continue;
    const col = nearest(COLORS, COLOR_RGB, px);
    votes.set(col, (votes.get(col) ?? 0) + 1);
  }
  let color: Color = COLORS[0];
  for (const [c, n] of votes) if (n > (votes.get(color) ?? 0)) color = c;
  // Soft mask: how far each pixel has moved from the background towards the shape's colour.
  const fg = COLOR_RGB[color];
  const span = Math.sqrt(dist2(fg, bg));
  const mask = new Float32Array(width * height);
  let coverage = 0;
  for (let i = 0; i < width * height; i++) {
    for (let c = 0; c < 3; c++) px[c] = rgb[i * 3 + c];
    const toBg = Math.sqrt(dist2(px, bg));
    const toFg = Math.sqrt(dist2(px, fg));
    // Project onto the bg→fg segment; pixels nearer another colour than the shape's count as background.
    const a = Math.min(1, Math.max(0, (span * span + toBg * toBg - toFg * toFg) / (2 * span * span)));
    mask[i] = toFg < toBg || a >= 0.5 ? a : a * 0.5;
    coverage += mask[i];
  }
  return { background, color, shape: classifyMask(mask, width, height), coverage: coverage / (width * height) };
}

/** Converts a tensor's [-1, 1] float pixels (H×W×3) into bytes for analyseShape. */
export function toBytes(pixels: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(pixels.length);
  for (let i = 0; i < pixels.length; i++) out[i] = Math.max(0, Math.min(255, Math.round((pixels[i] + 1) * 127.5)));
  return out;
}
