// `easel filter --in <url> --out <url> […]`: keeps the samples DALL·E would train on and reports, in
// <out>/stats.json, how many were dropped for each reason. See docs/filter.md.
import { FilterConfig } from '../data/filter/config.ts';
import { DROP_REASONS } from '../data/filter/reasons.ts';
import { openStore } from '../data/store/index.ts';
import { logger } from '../util/log.ts';
import { numericFields, parseFlags, stringFlags, UsageError, validate } from './args.ts';

const HELP = `usage: easel filter --in <url> --out <url> [options]

Streams every NNNNN.tar shard under --in, keeps samples with an English (--lang) caption of at least
--min-caption-chars characters and an image that decodes with an aspect ratio in [--min-aspect, --max-aspect],
and writes the kept samples to --out as NNNNN.tar (same key as its input shard), NNNNN_stats.json per shard and
stats.json for the run. Re-running with the same arguments resumes: finished shards are skipped.
URLs: s3://bucket/prefix, file:///path or a plain path.

options:
  --in <url>                  input dataset (img2dataset layout)
  --out <url>                 output dataset (must be empty, or an earlier run with the same settings)
  --workers <n>               samples checked concurrently (default: 2 × CPU cores)
  --lang <code>               keep captions in this ISO 639-1 language (default en)
  --min-aspect <x>            smallest width/height kept, inclusive (default 0.5)
  --max-aspect <x>            largest width/height kept, inclusive (default 2)
  --min-caption-chars <n>     shortest caption kept, in characters after trimming (default 5)
  --min-caption-words <n>     fewest words a kept caption has (default 1)
  --max-pixels <n>            refuse images larger than this many pixels (default 67108864 = 8192²)

exit status: 0 when every shard was filtered, 1 when a shard failed (listed in stats.json's failed_shards;
a re-run retries only the failed shards), 2 for bad arguments.`;

const log = logger('filter');

const numberFlags = {
  workers: 'workers',
  'min-aspect': 'minAspect',
  'max-aspect': 'maxAspect',
  'min-caption-chars': 'minCaptionChars',
  'min-caption-words': 'minCaptionWords',
  'max-pixels': 'maxPixels',
} as const;

export async function run(argv: string[]): Promise<number> {
  const parsed = parseFlags(
    argv,
    {
      in: { type: 'string' },
      out: { type: 'string' },
      lang: { type: 'string' },
      ...stringFlags(Object.keys(numberFlags)),
    },
    HELP,
  );
  if (!parsed) return 0;
  const flags = parsed.values as Record<string, string | undefined>;
  if (!flags.in || !flags.out) throw new UsageError(`--in and --out are required\n\n${HELP}`);
  const raw: Record<string, unknown> = { lang: flags.lang, ...numericFields(flags, numberFlags) };
  const config = validate(FilterConfig, raw, 'filter settings');

  // Loaded only now, so --help and argument errors answer without loading sharp and the language models.
  const [{ filterDataset, STATS_KEY }, { progressDisplay }, { loadLanguageDetector }, { default: sharp }] = await Promise.all([
    import('../data/filter/run.ts'),
    import('../data/filter/progress.ts'),
    import('../data/language.ts'),
    import('sharp'),
  ]);
  // Every image is decoded once, so libvips' operation cache would only hold memory.
  sharp.cache(false);
  const [input, output, language] = await Promise.all([openStore(flags.in), openStore(flags.out), loadLanguageDetector()]);
  const display = progressDisplay(process.stderr, log);
  try {
    const stats = await filterDataset({ input, output, config, language, onProgress: (p) => display.update(p) });
    display.done();
    const dropped = DROP_REASONS.filter((r) => stats.dropped[r] > 0).map((r) => `${r} ${stats.dropped[r]}`);
    log.info(`kept ${stats.kept} of ${stats.input} samples${dropped.length ? ` (dropped: ${dropped.join(', ')})` : ''}`, { stats: `${output.url}/${STATS_KEY}` });
    console.log(JSON.stringify(stats));
    if (stats.failed_shards.length > 0) {
      log.error(`${stats.failed_shards.length} of ${stats.shards.total} shards failed; fix or remove them and re-run to finish`, {
        failed: stats.failed_shards.map((f) => f.shard),
      });
      return 1;
    }
    return 0;
  } finally {
    await Promise.all([input.close(), output.close()]);
  }
}
