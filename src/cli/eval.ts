// `easel eval --checkpoint <url> --data <url> [--out eval.json]`: scores a checkpoint on held-out caption–image
// pairs (CLIP retrieval, prior cosine vs the text baseline, CLIP score of generated images) and, on the synthetic
// dataset's held-out colour–shape pairs, the decoder's colour and shape accuracy too.
import { writeFile } from 'node:fs/promises';
import { parseFlags, UsageError, validate } from './args.ts';
import { SAMPLE_FLAGS } from './generate.ts';

const HELP = `usage: easel eval --checkpoint <url> --data <url> [--out eval.json] [options]

  --checkpoint <url>     a checkpoint folder, or a run's checkpoint root (its latest checkpoint is used)
  --data <url>           held-out shards (NNNNN.tar, filtered): any caption–image split, or the synthetic
                         dataset's eval/ split, which also scores colour and shape accuracy
  --out <file>           where the JSON report goes (default: stdout only)
  --samples <n>          held-out samples used at most (default 64)
  --generate <n>         of those, captions the decoder draws an image for (default 32)
  --steps <s>            decoder sampling steps (default 25)
  --prior-steps <s>      prior sampling steps (default 25)
  --guidance <g>         decoder classifier-free guidance (default 3)
  --prior-guidance <g>   prior classifier-free guidance (default 1)
  --sampler <s>          decoder sampler: ddim or ddpm (default ddim)
  --upsampler-steps <s>  upsampler sampling steps, for a checkpoint with a trained upsampler (default 25)
  --rerank <K>           also score decoder_reranked: the best of K candidates per caption by CLIP (default off)
  --seed <n>             seed (default 0)`;

// generate's sampling flags (one draw per caption: no --n), and which held-out samples to score.
const { n: _n, ...SAMPLING_FLAGS } = SAMPLE_FLAGS;
const FLAGS = { samples: 'samples', generate: 'generate', ...SAMPLING_FLAGS, sampler: 'sampler' } as const;

export async function run(argv: string[]): Promise<number> {
  const parsed = parseFlags(
    argv,
    { checkpoint: { type: 'string' }, data: { type: 'string' }, out: { type: 'string' }, ...Object.fromEntries(Object.keys(FLAGS).map((f) => [f, { type: 'string' as const }])) },
    HELP,
  );
  if (!parsed) return 0;
  const v = parsed.values as Record<string, string | undefined>;
  if (!v.checkpoint) throw new UsageError(`--checkpoint is required\n\n${HELP}`);
  if (!v.data) throw new UsageError(`--data is required\n\n${HELP}`);
  const raw: Record<string, unknown> = {};
  for (const [flag, field] of Object.entries(FLAGS)) if (v[flag] !== undefined) raw[field] = Number.isNaN(Number(v[flag])) ? v[flag] : Number(v[flag]);
  const { EvalConfig, evaluate, readEvalSamples } = await import('../eval/evaluate.ts');
  const config = validate(EvalConfig, raw, 'eval settings');
  const { loadCheckpoint } = await import('../trainer/models.ts');
  const ckpt = await loadCheckpoint(v.checkpoint);
  try {
    const samples = await readEvalSamples(v.data, ckpt.models.clip.config.imageSize, config.samples);
    const report = await evaluate(ckpt.models, samples, config);
    const text = JSON.stringify(report, null, 2);
    if (v.out) await writeFile(v.out, `${text}\n`);
    console.log(text);
    return 0;
  } finally {
    ckpt.dispose();
  }
}
