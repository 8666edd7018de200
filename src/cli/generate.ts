// `easel generate --checkpoint <url> --prompt "…" [--prompt "…"] --out <dir>`: text → frozen CLIP text
// embedding → prior → decoder (→ upsampler; EMA weights) → one PNG per image and grid.png (one row per prompt).
import { parseFlags, UsageError, validate } from './args.ts';

const HELP = `usage: easel generate --checkpoint <url> --prompt "<caption>" [--prompt …] --out <dir> [options]

  --checkpoint <url>     a checkpoint folder, or a run's checkpoint root (its latest checkpoint is used)
  --prompt <text>        a caption to draw (repeatable: one grid row per prompt)
  --out <dir>            where the PNGs go: <i>-<prompt>-<j>.png and grid.png
  --n <k>                images per prompt (default 4)
  --rerank <K>           draw K candidates per prompt, keep the n most similar to the prompt by CLIP (default off)
  --guidance <g>         decoder classifier-free guidance (default 3; 1 = none)
  --prior-guidance <g>   prior classifier-free guidance (default 1)
  --steps <s>            decoder sampling steps (default 25)
  --prior-steps <s>      prior sampling steps (default 25)
  --upsampler-steps <s>  upsampler sampling steps, for a checkpoint with a trained upsampler (default 25)
  --sampler <ddim|ddpm>  decoder sampler (default ddim)
  --seed <n>             seed (default 0)`;

export const SAMPLE_FLAGS = {
  n: 'n',
  rerank: 'rerank',
  guidance: 'guidance',
  'prior-guidance': 'priorGuidance',
  steps: 'steps',
  'prior-steps': 'priorSteps',
  'upsampler-steps': 'upsamplerSteps',
  seed: 'seed',
} as const;

/** Numeric sampling flags → SampleConfig fields (a non-number stays a string so zod names the field). */
export function sampleFlags(values: Record<string, unknown>): Record<string, unknown> {
  const raw: Record<string, unknown> = {};
  for (const [flag, field] of Object.entries(SAMPLE_FLAGS)) {
    const v = values[flag];
    if (typeof v === 'string') raw[field] = Number.isNaN(Number(v)) || v.trim() === '' ? v : Number(v);
  }
  if (typeof values.sampler === 'string') raw.sampler = values.sampler;
  return raw;
}

export const SAMPLE_OPTIONS = Object.fromEntries([...Object.keys(SAMPLE_FLAGS), 'sampler'].map((f) => [f, { type: 'string' as const }])) as Record<
  keyof typeof SAMPLE_FLAGS | 'sampler',
  { type: 'string' }
>;

export async function run(argv: string[]): Promise<number> {
  const parsed = parseFlags(argv, { checkpoint: { type: 'string' }, prompt: { type: 'string', multiple: true }, out: { type: 'string' }, ...SAMPLE_OPTIONS }, HELP);
  if (!parsed) return 0;
  const v = parsed.values;
  if (!v.checkpoint) throw new UsageError(`--checkpoint is required\n\n${HELP}`);
  if (!v.prompt?.length) throw new UsageError(`--prompt is required\n\n${HELP}`);
  if (v.prompt.some((p) => !p.trim())) throw new UsageError('--prompt: a prompt is empty');
  if (!v.out) throw new UsageError(`--out is required\n\n${HELP}`);
  const { SampleConfig, generate, writeGenerated } = await import('../eval/generate.ts');
  const config = validate(SampleConfig, sampleFlags(v), 'sampling settings');
  const { loadCheckpoint } = await import('../trainer/models.ts');
  const ckpt = await loadCheckpoint(v.checkpoint);
  try {
    const results = await generate(ckpt.models, v.prompt, config);
    const { files, grid } = await writeGenerated(results, v.out);
    for (const r of results) console.log(JSON.stringify({ prompt: r.prompt, clip_scores: r.scores.map((s) => Number(s.toFixed(4))) }));
    console.log(`wrote ${files.length} images and ${grid} from ${ckpt.url}`);
    return 0;
  } finally {
    ckpt.dispose();
  }
}
