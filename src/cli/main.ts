// `easel <command>`: each command lives in its own module under src/cli and is loaded only when used,
// so `easel filter` never pays for TensorFlow.js and `easel train` never for the S3 SDK's cold start.
import { UsageError } from './args.ts';

type Command = { summary: string; load: () => Promise<{ run(argv: string[]): Promise<number> }> };

// Each helper-owned command registers one line here (name → lazily imported module exporting run(argv)).
const COMMANDS: Record<string, Command> = {
  data: { summary: 'write the synthetic shapes dataset (easel data synth)', load: () => import('./data.ts') },
  filter: { summary: 'keep the caption–image samples DALL·E would train on; count what was dropped and why', load: () => import('./filter.ts') },
  train: { summary: 'train CLIP → prior → decoder in one process from a run file (--resume latest continues)', load: () => import('./train.ts') },
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
