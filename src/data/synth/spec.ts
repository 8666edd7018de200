// The synthetic dataset's vocabulary and the ground truth every sample records in its `.json`. The evaluator
// imports these (and render.ts) to judge generated images by the same palette the data was drawn with.

export const SHAPES = ['circle', 'square', 'triangle'] as const;
export const COLORS = ['red', 'green', 'blue', 'yellow'] as const;
export const BACKGROUNDS = ['white', 'black', 'gray'] as const;
export const SIZES = ['small', 'medium', 'large'] as const;

export type Shape = (typeof SHAPES)[number];
export type Color = (typeof COLORS)[number];
export type Background = (typeof BACKGROUNDS)[number];
export type SizeName = (typeof SIZES)[number];

export type Rgb = readonly [number, number, number];

/** Fill colours of the shapes: saturated and far apart, so a colour can be recognised by nearest neighbour. */
export const COLOR_RGB: Record<Color, Rgb> = {
  red: [230, 25, 25],
  green: [30, 170, 40],
  blue: [30, 60, 220],
  yellow: [245, 215, 20],
};

export const BACKGROUND_RGB: Record<Background, Rgb> = {
  white: [255, 255, 255],
  black: [0, 0, 0],
  gray: [128, 128, 128],
};

/** Side of a shape's bounding box as a fraction of the image's shorter side. */
export const SIZE_FRACTION: Record<SizeName, number> = { small: 0.3, medium: 0.5, large: 0.7 };

/** What to draw: everything the renderer needs, in pixels. */
export interface ShapeSpec {
  shape: Shape;
  color: Color;
  background: Background;
  size: SizeName;
  /** Canvas size in pixels. */
  width: number;
  height: number;
  /** Centre of the shape's bounding box, in pixels. */
  cx: number;
  cy: number;
  /** Side of the shape's bounding box, in pixels. */
  extent: number;
}

/** Why the filter must drop a sample (the filter's own reason names), absent for a good sample. */
export type DropReason = 'language' | 'aspect_ratio' | 'image' | 'caption';

/** How a sample meant to be dropped is broken. */
export type Defect =
  | 'foreign-caption'
  | 'too-wide'
  | 'too-tall'
  | 'truncated-jpeg'
  | 'not-an-image'
  | 'zero-bytes'
  | 'empty-caption'
  | 'blank-caption';

/** Recorded under `synth` in each sample's `.json`. */
export interface GroundTruth extends ShapeSpec {
  split: 'train' | 'eval';
  /** Language of the caption (ISO 639-1). */
  lang: string;
  drop?: DropReason;
  defect?: Defect;
}

export interface ColorShape {
  color: Color;
  shape: Shape;
}

/** Parses "green triangle, yellow square" into pairs; throws naming the word it does not know. */
export function parseColorShapePairs(text: string): ColorShape[] {
  return text
    .split(',')
    .map((p) => p.trim().toLowerCase())
    .filter(Boolean)
    .map((p) => {
      const [color, shape, ...rest] = p.split(/\s+/);
      if (rest.length || !(COLORS as readonly string[]).includes(color) || !(SHAPES as readonly string[]).includes(shape)) {
        throw new Error(`"${p}" is not a "<colour> <shape>" pair (colours: ${COLORS.join(', ')}; shapes: ${SHAPES.join(', ')})`);
      }
      return { color: color as Color, shape: shape as Shape };
    });
}

export function pairName(p: ColorShape): string {
  return `${p.color} ${p.shape}`;
}
