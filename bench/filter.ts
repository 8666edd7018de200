// `npm run bench -- filter [--shards 4] [--per-shard 200] [--size 256] [--bad 0] [--workers N] [--resize 64] [--repeats 6]`
//
// Throughput of the dataset filter against the cheapest thing any consumer of these images must do: decode and
// resize them with sharp. Both run in this process on the same images (a synthetic dataset written to a temp
// dir first), with the same number of images in flight; each is timed `repeats` times, alternating, and the
// best run of each is kept (the machine may be shared). The filter's time covers everything: listing, streaming
// and parsing the tars, caption and language checks, the decode check, writing the filtered tars and stats.
// Last line: one JSON object; "ratio" = filter samples/s ÷ decode+resize samples/s (goal ≥ 0.9).
import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { FilterConfig } from '../src/data/filter/config.ts';
import { filterDataset } from '../src/data/filter/run.ts';
import { loadLanguageDetector } from '../src/data/language.ts';
import { FileStore } from '../src/data/store/file.ts';
import { writeSynthDataset } from '../src/data/synth/dataset.ts';
import { listShards, readShard } from '../src/data/webdataset/reader.ts';
import { mapOrdered } from '../src/data/webdataset/ordered.ts';

const { values } = parseArgs({
  options: {
    shards: { type: 'string', default: '4' },
    'per-shard': { type: 'string', default: '200' },
    size: { type: 'string', default: '256' },
    bad: { type: 'string', default: '0' },
    workers: { type: 'string' },
    resize: { type: 'string', default: '64' },
    repeats: { type: 'string', default: '6' },
  },
});
const shards = Number(values.shards);
const perShard = Number(values['per-shard']);
const size = Number(values.size);
const resize = Number(values.resize);
const repeats = Number(values.repeats);
const config = FilterConfig.parse(values.workers ? { workers: Number(values.workers) } : {});

sharp.cache(false); // as `easel filter` sets it; applies to both measurements

const dir = await mkdtemp(join(tmpdir(), 'easel-bench-filter-'));
try {
  const input = new FileStore(join(dir, 'in'));
  const t0 = performance.now();
  await writeSynthDataset(input, { shards, perShard, size, seed: 1, badFraction: Number(values.bad), evalPerPair: 0, format: 'jpg' });
  console.error(`wrote ${shards}×${perShard} samples of ${size}px in ${((performance.now() - t0) / 1000).toFixed(1)}s`);

  // The baseline's images: every image member of the input, in memory before the clock starts.
  const images: Buffer[] = [];
  for (const s of await listShards(input)) for await (const sample of readShard(input, s.key)) if (sample.image) images.push(sample.image.bytes);
  const imageBytes = images.reduce((n, b) => n + b.length, 0);

  const language = await loadLanguageDetector();
  language.is('warm up the language models', 'en');

  async function decodeResize(): Promise<number> {
    const t = performance.now();
    for await (const _ of mapOrdered(images, config.workers, (b) => sharp(b).resize(resize, resize).raw().toBuffer())) {
      // consume in order, as the filter does
    }
    return images.length / ((performance.now() - t) / 1000);
  }

  let run = 0;
  async function filter(): Promise<{ rate: number; kept: number; input: number }> {
    const output = new FileStore(join(dir, `out-${run++}`));
    const t = performance.now();
    const stats = await filterDataset({ input, output, config, language });
    const rate = stats.input / ((performance.now() - t) / 1000);
    await rm(output.root, { recursive: true, force: true });
    return { rate, kept: stats.kept, input: stats.input };
  }

  let bestBase = 0;
  let bestFilter = 0;
  let last = { kept: 0, input: 0 };
  for (let i = 0; i < repeats; i++) {
    const base = await decodeResize();
    const f = await filter();
    last = f;
    bestBase = Math.max(bestBase, base);
    bestFilter = Math.max(bestFilter, f.rate);
    console.error(`repeat ${i + 1}/${repeats}: decode+resize ${base.toFixed(0)} samples/s, filter ${f.rate.toFixed(0)} samples/s (kept ${f.kept}/${f.input})`);
  }

  console.log(
    JSON.stringify({
      bench: 'filter',
      ratio: Number((bestFilter / bestBase).toFixed(3)),
      filter_samples_per_s: Math.round(bestFilter),
      decode_resize_samples_per_s: Math.round(bestBase),
      samples: last.input,
      kept: last.kept,
      image_px: size,
      mean_image_bytes: Math.round(imageBytes / images.length),
      resize_px: resize,
      workers: config.workers,
      repeats,
      cpus: availableParallelism(),
      cpu: cpus()[0]?.model,
    }),
  );
} finally {
  await rm(dir, { recursive: true, force: true });
}
