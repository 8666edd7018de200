// `easel variations --checkpoint <url> --image <file> --out <dir>`: image → CLIP image embedding → decoder
// (→ upsampler) samples (EMA weights): n variations of one picture, as PNGs and grid.png.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseFlags, UsageError, validate } from './args.ts';
import { SAMPLE_OPTIONS, sampleFlags } from './generate.ts';

const HELP = `usage: easel variations --checkpoint <url> --image <file> --out <dir> [options]

  --checkpoint <url>     a checkpoint folder, or a run's checkpoint root (its latest checkpoint is used)
  --image <file>         the picture to vary (any format sharp reads; centre-cropped and resized like training data)
  --out <dir>            where the PNGs go: variation-<j>.png and grid.png
  --n <k>                variations (default 4)
  --guidance <g>         decoder classifier-free guidance (default 3; 1 = none)
  --steps <s>            decoder sampling steps (default 25)
  --sampler <ddim|ddpm>  decoder sampler (default ddim)
  --upsampler-steps <s>  upsampler sampling steps, for a checkpoint with a trained upsampler (default 25)
  --seed <n>             seed (default 0)`;

export async function run(argv: string[]): Promise<number> {
  const parsed = parseFlags(argv, { checkpoint: { type: 'string' }, image: { type: 'string' }, out: { type: 'string' }, ...SAMPLE_OPTIONS }, HELP);
  if (!parsed) return 0;
  const v = parsed.values;
  if (!v.checkpoint) throw new UsageError(`--checkpoint is required\n\n${HELP}`);
  if (!v.image) throw new UsageError(`--image is required\n\n${HELP}`);
  if (!v.out) throw new UsageError(`--out is required\n\n${HELP}`);
  const { SampleConfig, variations, writeGrid, writePng } = await import('../eval/generate.ts');
  const config = validate(SampleConfig, sampleFlags(v), 'sampling settings');
  let bytes: Buffer;
  try {
    bytes = await readFile(v.image);
  } catch (err) {
    throw new UsageError(`--image: cannot read ${v.image}: ${(err as Error).message}`);
  }
  const { decodeImage } = await import('../data/loader.ts');
  const { loadCheckpoint } = await import('../trainer/models.ts');
  const ckpt = await loadCheckpoint(v.checkpoint);
  try {
    let pixels: Float32Array;
    try {
      pixels = await decodeImage(bytes, ckpt.models.clip.config.imageSize);
    } catch (err) {
      throw new Error(`--image: ${v.image} is not an image sharp can decode: ${(err as Error).message}`, { cause: err });
    }
    const images = await variations(ckpt.models, pixels, config);
    const { mkdir } = await import('node:fs/promises');
    await mkdir(v.out, { recursive: true });
    for (let j = 0; j < images.length; j++) await writePng(images[j], join(v.out, `variation-${j}.png`));
    await writeGrid([images], join(v.out, 'grid.png'));
    console.log(`wrote ${images.length} variations and ${join(v.out, 'grid.png')} from ${ckpt.url}`);
    return 0;
  } finally {
    ckpt.dispose();
  }
}
