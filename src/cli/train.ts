// `easel train --config run.yaml [--resume latest|<url>] [--out <url>] [--stop-at <step>]`: one process trains
// CLIP → prior → decoder (→ upsampler) as the run file says. Ctrl-C (SIGINT) or SIGTERM finishes the current step, writes a
// checkpoint and exits; `--resume latest` continues from it exactly.
import { abortOnSignals, parseFlags, UsageError } from './args.ts';

const HELP = `usage: easel train --config <run.yaml> [--resume latest|<checkpoint url>] [--out <checkpoint url>] [--stop-at <step>]
       easel train --describe

  --describe lists every run-file key with its default and description
  --config   the run file (YAML; see examples/demo.yaml); every key is optional and has a default
  --resume   continue from the latest checkpoint under checkpoint.url ('latest'; starts fresh if there is none)
             or from one checkpoint URL (a folder with manifest.json, or a checkpoint root with latest.json)
  --out      where checkpoints go (overrides checkpoint.url): a path, file:// or s3:// URL
  --stop-at  pause after this many steps (over all stages), writing a checkpoint`;

export async function run(argv: string[]): Promise<number> {
  const parsed = parseFlags(
    argv,
    { config: { type: 'string' }, describe: { type: 'boolean' }, resume: { type: 'string' }, out: { type: 'string' }, 'stop-at': { type: 'string' } },
    HELP,
  );
  if (!parsed) return 0;
  const { values } = parsed;
  if (values.describe) {
    const { describeRunConfig } = await import('../trainer/config.ts');
    console.log(describeRunConfig());
    return 0;
  }
  if (!values.config) throw new UsageError(`--config is required\n\n${HELP}`);
  let stopAtStep: number | undefined;
  if (values['stop-at'] !== undefined) {
    stopAtStep = Number(values['stop-at']);
    if (!Number.isInteger(stopAtStep) || stopAtStep < 1) throw new UsageError(`--stop-at: expected a positive integer, got '${values['stop-at']}'`);
  }

  const { loadRunConfig, parseRunConfig } = await import('../trainer/config.ts');
  let config = await loadRunConfig(values.config);
  if (values.out) config = parseRunConfig({ ...config, checkpoint: { ...config.checkpoint, url: values.out } }, '--out');

  const { train } = await import('../trainer/train.ts');
  const stop = abortOnSignals('easel train');
  try {
    const result = await train(config, { resume: values.resume, stopAtStep, signal: stop.signal });
    const where = result.lastCheckpoint ?? '(no checkpoint written)';
    if (result.finished) console.log(`trained ${result.globalStep} steps; checkpoint ${where}`);
    else console.log(`stopped after step ${result.globalStep}; checkpoint ${where}; continue with --resume latest`);
    result.dispose();
    return 0;
  } finally {
    stop.release();
  }
}
