// `easel data synth --out <url> […]`: writes the synthetic shapes dataset (the embedded default data).
import { SynthConfig, writeSynthDataset } from '../data/synth/index.ts';
import { openStore } from '../data/store/index.ts';
import { logger } from '../util/log.ts';
import { numericFields, parseFlags, stringFlags, UsageError, validate } from './args.ts';

const HELP = `usage: easel data synth --out <url> [options]

Writes an img2dataset-layout dataset of rendered shapes with English captions to --out:
NNNNN.tar (+ NNNNN_stats.json) training shards, eval/NNNNN.tar with the held-out colour–shape pairs, and
synth.json (config, vocabulary, held-out pairs, counts). Every sample's .json records its ground truth under
"synth" (shape, color, background, size, position, and why the filter must drop it, if it must).
The same options and seed give byte-identical shards. URLs: s3://bucket/prefix, file:///path or a plain path.

options:
  --out <url>              where to write the dataset (required)
  --shards <n>             training shards (default 4)
  --per-shard <n>          samples per shard, at most 10000 (default 256)
  --size <px>              side of the square images (default 64)
  --seed <n>               seed (default 0)
  --bad-fraction <f>       share of training samples the filter must drop (default 0.1)
  --holdout <pairs>        comma-separated colour–shape pairs kept out of training and written to eval/
                           (default "green triangle,yellow square"; "" holds out none)
  --eval-per-pair <n>      eval samples per held-out pair (default 16)
  --format <jpg|png|webp>  image encoding (default jpg)
  --jitter <f>             how far shapes may sit from the centre, as a share of the free room
                           (default 1 = anywhere; 0 = always centred)`;

const log = logger('data');

const numberFlags = {
  shards: 'shards',
  'per-shard': 'perShard',
  size: 'size',
  seed: 'seed',
  'bad-fraction': 'badFraction',
  'eval-per-pair': 'evalPerPair',
  jitter: 'jitter',
} as const;

export async function run(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (!sub || sub === '--help' || sub === '-h') {
    console.log(HELP);
    return sub ? 0 : 2;
  }
  if (sub !== 'synth') throw new UsageError(`unknown subcommand '${sub}'\n\n${HELP}`);
  const parsed = parseFlags(
    rest,
    {
      out: { type: 'string' },
      holdout: { type: 'string' },
      format: { type: 'string' },
      ...stringFlags(Object.keys(numberFlags)),
    },
    HELP,
  );
  if (!parsed) return 0;
  const flags = parsed.values as Record<string, string | undefined>;
  if (!flags.out) throw new UsageError(`--out is required\n\n${HELP}`);
  const raw: Record<string, unknown> = { holdout: flags.holdout, format: flags.format, ...numericFields(flags, numberFlags) };
  const config = validate(SynthConfig, raw, 'synth settings');

  const store = await openStore(flags.out);
  try {
    const manifest = await writeSynthDataset(store, config, '', (key) => log.info('wrote shard', { shard: `${store.url}/${key}` }));
    log.info(`wrote ${manifest.train.samples} training samples (${manifest.train.good} good) and ${manifest.eval.samples} eval samples`, {
      dropped: manifest.train.dropped,
      holdout: manifest.holdout.map((p) => `${p.color} ${p.shape}`),
    });
    console.log(JSON.stringify({ train: manifest.train, eval: manifest.eval }));
    return 0;
  } finally {
    await store.close();
  }
}
