// `easel <command>`: each command lives in its own module under src/cli and is loaded only when used,
// so `easel filter` never pays for TensorFlow.js and `easel train` never for the S3 SDK's cold start.
import { UsageError } from './args.ts';

type Command = { summary: string; load: () => Promise<{ run(argv: string[]): Promise<number> }> };

// Each helper-owned command registers one line here (name → lazily imported module exporting run(argv)).
const COMMANDS: Record<string, Command> = {
  coordinator: { summary: 'own one distributed run: shard leases, membership, stages, metrics (state in NATS JetStream)', load: () => import('./coordinator.ts') },
  data: { summary: 'write the synthetic shapes dataset (easel data synth)', load: () => import('./data.ts') },
  filter: { summary: 'keep the caption–image samples DALL·E would train on; count what was dropped and why', load: () => import('./filter.ts') },
  trainer: { summary: 'one data-parallel trainer of a coordinated run over NATS (easel trainer --nats <url> --run <id> --config <run.yaml>)', load: () => import('./trainer.ts') },
  run: { summary: 'a distributed run on this machine: nats-server, coordinator and N trainers (easel run --config run.yaml --workers N)', load: () => import('./run.ts') },
  operator: { summary: 'Kubernetes operator: reconcile TrainingRuns into coordinator + trainer pods and keep their status (easel operator)', load: () => import('./operator.ts') },
  train: { summary: 'train CLIP → prior → decoder (→ upsampler) in one process from a run file (--resume latest continues)', load: () => import('./train.ts') },
  generate: { summary: 'draw images for captions from a checkpoint (text → CLIP → prior → decoder → upsampler), PNGs and a grid', load: () => import('./generate.ts') },
  variations: { summary: 'draw variations of an image from a checkpoint (image → CLIP → decoder)', load: () => import('./variations.ts') },
  eval: { summary: 'score a checkpoint on held-out colour–shape pairs (retrieval, prior cosine, decoder colour/shape accuracy)', load: () => import('./eval.ts') },
  demo: { summary: 'synthesize → filter → train → generate → eval on local files in one process (npm run demo)', load: () => import('./demo.ts') },
};

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((k) => k.length));
  return [
    'usage: easel <command> [options]   (easel <command> --help for its options)',
    '',
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`),
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(usage());
    return name ? 0 : 2;
  }
  const cmd = COMMANDS[name];
  if (!cmd) {
    console.error(`easel: unknown command '${name}'\n\n${usage()}`);
    return 2;
  }
  try {
    const mod = await cmd.load();
    return await mod.run(rest);
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`easel ${name}: ${err.message}`);
      return 2;
    }
    console.error(`easel ${name}: ${err instanceof Error ? err.message : String(err)}`);
    if (process.env.EASEL_LOG === 'debug' && err instanceof Error) console.error(err.stack);
    return 1;
  }
}
