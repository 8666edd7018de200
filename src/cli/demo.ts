// `easel demo [--out ./demo-out]`: the whole system on embedded defaults, in one process on local files:
// synthesize the shapes dataset → filter it → train CLIP, prior and decoder (examples/demo.yaml) → draw a grid
// for a few prompts, held-out colour–shape pairs included → eval. <out> receives synth/ (the raw dataset and its
// eval/ split), data/train (the filtered shards), checkpoints/, samples/grid.png and eval.json.
// EASEL_DEMO_SMOKE=1 (or --smoke) shrinks every step to seconds, for tests.
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { join, resolve } from 'node:path';
import { logger } from '../util/log.ts';
import { parseFlags, UsageError } from './args.ts';

const HELP = `usage: easel demo [--out ./demo-out] [--config examples/demo.yaml] [--smoke]

Runs synthesize → filter → train (CLIP, prior, decoder) → generate → eval on local files in one process.
  --out <dir>       where everything goes (default ./demo-out): synth/, data/train/, checkpoints/,
                    samples/grid.png, eval.json
  --config <file>   the run file (default examples/demo.yaml); its data and checkpoint URLs are replaced by <out>'s
  --smoke           a tiny run (a few steps per stage) that only shows the path works; also EASEL_DEMO_SMOKE=1`;

const log = logger('demo');

export const DEMO_CONFIG = fileURLToPath(new URL('../../examples/demo.yaml', import.meta.url));

/** The demo's dataset: 32×32 shapes, green triangles and yellow squares held out. */
export const DEMO_SYNTH = { shards: 4, perShard: 512, size: 32, seed: 0, holdout: 'green triangle,yellow square', evalPerPair: 32 };

/** Prompts of the sample grid: the two held-out pairs first, then pairs seen in training. */
export const DEMO_PROMPTS = [
  'a green triangle on a white background',
  'a yellow square on a black background',
  'a red circle on a gray background',
  'a blue square on a white background',
];

/** What a demo writes under <out>; a re-run replaces exactly these. */
const DEMO_ENTRIES = ['synth', 'data', 'checkpoints', 'samples', 'eval.json', 'demo.json'];

/** Makes <out> ready for a fresh run: refuses a folder holding anything else, removes an earlier demo's output. */
async function prepareOut(out: string): Promise<void> {
  let entries: string[] = [];
  try {
    entries = await readdir(out);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const foreign = entries.filter((e) => !DEMO_ENTRIES.includes(e));
  if (foreign.length) throw new UsageError(`--out ${out} holds files the demo did not write (${foreign.slice(0, 3).join(', ')}…): use an empty or new folder`);
  await Promise.all(entries.map((e) => rm(join(out, e), { recursive: true, force: true })));
  await mkdir(out, { recursive: true });
}

export async function run(argv: string[]): Promise<number> {
  const parsed = parseFlags(argv, { out: { type: 'string' }, config: { type: 'string' }, smoke: { type: 'boolean' } }, HELP);
  if (!parsed) return 0;
  const out = resolve(parsed.values.out ?? './demo-out');
  const smoke = parsed.values.smoke === true || process.env.EASEL_DEMO_SMOKE === '1';
  const configPath = parsed.values.config ?? DEMO_CONFIG;
  const t0 = Date.now();
  const cpu0 = process.cpuUsage();
  const timings: Record<string, { wall_s: number; cpu_s: number }> = {};
  const timed = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    const w = Date.now();
    const c = process.cpuUsage();
    log.info(`${name}…`);
    const r = await fn();
    const cu = process.cpuUsage(c);
    timings[name] = { wall_s: (Date.now() - w) / 1000, cpu_s: (cu.user + cu.system) / 1e6 };
    log.info(`${name} done`, timings[name]);
    return r;
  };

  const { loadRunConfig, parseRunConfig } = await import('../trainer/config.ts');
  let config = await loadRunConfig(configPath);
  const synthDir = join(out, 'synth');
  const trainDir = join(out, 'data', 'train');
  const evalDir = join(synthDir, 'eval');
  const ckptDir = join(out, 'checkpoints');
  const stages = config.stages;
  if (smoke) {
    // Two steps of every stage the run file trains (a stage it skips stays skipped).
    const tiny = Object.fromEntries(Object.entries(stages).map(([name, s]) => [name, { ...s, steps: Math.min(s.steps, 2) }]));
    config = parseRunConfig({ ...config, stages: tiny }, 'smoke config');
  }
  config = parseRunConfig({ ...config, data: { ...config.data, train: trainDir, eval: evalDir }, checkpoint: { ...config.checkpoint, url: ckptDir } }, `${configPath} with --out ${out}`);
  const synth = smoke ? { ...DEMO_SYNTH, shards: 1, perShard: 48, evalPerPair: 4 } : DEMO_SYNTH;
  await prepareOut(out);

  const { openStore } = await import('../data/store/index.ts');
  await timed('synth', async () => {
    const { writeSynthDataset } = await import('../data/synth/index.ts');
    const store = await openStore(synthDir);
    try {
      await writeSynthDataset(store, { ...synth, size: config.data.imageSize });
    } finally {
      await store.close();
    }
  });

  const filterStats = await timed('filter', async () => {
    const [{ filterDataset }, { FilterConfig }, { loadLanguageDetector }] = await Promise.all([
      import('../data/filter/index.ts'),
      import('../data/filter/config.ts'),
      import('../data/language.ts'),
    ]);
    const [input, output, language] = await Promise.all([openStore(synthDir), openStore(trainDir), loadLanguageDetector()]);
    try {
      return await filterDataset({ input, output, config: FilterConfig.parse({}), language });
    } finally {
      await Promise.all([input.close(), output.close()]);
    }
  });
  log.info(`filter kept ${filterStats.kept} of ${filterStats.input}`, { dropped: filterStats.dropped });

  const { train } = await import('../trainer/train.ts');
  const result = await timed('train', () => train(config));
  result.dispose();

  const { loadCheckpoint } = await import('../trainer/models.ts');
  const ckpt = await loadCheckpoint(ckptDir);
  try {
    const [{ generate, writeGenerated }, { evaluate, readEvalSamples }] = await Promise.all([import('../eval/generate.ts'), import('../eval/evaluate.ts')]);
    const sampleCfg = smoke ? { n: 2, steps: 2, priorSteps: 2 } : { n: 6, steps: 25, priorSteps: 25, rerank: 12 };
    const grid = await timed('generate', async () => (await writeGenerated(await generate(ckpt.models, DEMO_PROMPTS, sampleCfg), join(out, 'samples'))).grid);
    const evalCfg = smoke ? { samples: 8, generate: 4, steps: 2, priorSteps: 2 } : { samples: 64, generate: 64, steps: 25, priorSteps: 25 };
    const report = await timed('eval', async () => evaluate(ckpt.models, await readEvalSamples(evalDir, config.data.imageSize, evalCfg.samples), evalCfg));
    const evalPath = join(out, 'eval.json');
    await writeFile(evalPath, `${JSON.stringify(report, null, 2)}\n`);
    const cpu = process.cpuUsage(cpu0);
    const summary = {
      out,
      grid,
      eval: evalPath,
      clip: report.clip,
      prior: report.prior,
      decoder: report.decoder,
      decoder_from_image_embedding: report.decoder_from_image_embedding,
      wall_s: (Date.now() - t0) / 1000,
      cpu_s: (cpu.user + cpu.system) / 1e6,
      timings,
      smoke,
    };
    await writeFile(join(out, 'demo.json'), `${JSON.stringify(summary, null, 2)}\n`);
    console.log(JSON.stringify(summary));
    return 0;
  } finally {
    ckpt.dispose();
  }
}

