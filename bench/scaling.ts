// `npm run bench -- scaling [--shards N] [--per-shard S] [--batch B]`: samples/s of a distributed run with 1 trainer and with 2,
// on the same run config (tiny CLIP on the synthetic set, wasm backend), each a real nats-server + coordinator
// + `easel trainer` processes reading one epoch. samples/s = samples of the applied steps after the first
// (warm-up) divided by the time between the first and the last step, from the trainers' step traces.
// Last line: {"ratio": samples/s(2) / samples/s(1), …}. On a 2-core machine with nothing else running the goal is
// close to 2; other load on the machine lowers it (the load average is reported beside it).
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHarness } from '../test/trainer/distributed-harness.ts';

const args = process.argv.slice(2);
const flag = (name: string, dflt: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const shards = flag('shards', 8);
const perShard = flag('per-shard', 256);
const batch = flag('batch', 8);

async function samplesPerSecond(workers: number): Promise<{ samplesPerSecond: number; steps: number; seconds: number }> {
  const dir = await mkdtemp(join(tmpdir(), 'easel-bench-scaling-'));
  const h = await startHarness(dir, { steps: { clip: 10_000, prior: 0, decoder: 0 }, shards, perShard, minTrainers: workers, backend: 'wasm', batchSize: batch, heartbeatTimeoutMs: 30_000 });
  try {
    const ids = Array.from({ length: workers }, (_, i) => `w${i}`);
    const procs = ids.map((id) => h.spawnTrainer(id));
    const codes = await Promise.all(procs.map((p) => p.exited));
    if (codes.some((c) => c !== 0)) throw new Error(`a trainer failed:\n${procs.map((p) => p.log()).join('\n---\n')}`);
    const trace = await h.trace('w0');
    if (trace.length < 3) throw new Error(`only ${trace.length} steps: use more --shards`);
    const timed = trace.slice(1);
    const seconds = (timed[timed.length - 1].t - trace[0].t) / 1000;
    const samples = timed.reduce((n, r) => n + r.samples, 0);
    return { samplesPerSecond: samples / seconds, steps: trace.length, seconds };
  } finally {
    await h.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

const load = loadavg()[0];
const one = await samplesPerSecond(1);
console.log(`1 trainer: ${one.samplesPerSecond.toFixed(2)} samples/s (${one.steps} steps, ${one.seconds.toFixed(1)} s)`);
const two = await samplesPerSecond(2);
console.log(`2 trainers: ${two.samplesPerSecond.toFixed(2)} samples/s (${two.steps} steps, ${two.seconds.toFixed(1)} s)`);
console.log(
  JSON.stringify({
    ratio: +(two.samplesPerSecond / one.samplesPerSecond).toFixed(3),
    samples_per_s_1: +one.samplesPerSecond.toFixed(3),
    samples_per_s_2: +two.samplesPerSecond.toFixed(3),
    shards,
    samples_per_shard: perShard,
    batch_per_trainer: batch,
    note: 'batches never span shards: a shard smaller than the batch gives smaller batches',
    backend: 'wasm',
    loadavg_1m_before: +load.toFixed(2),
    loadavg_1m_after: +loadavg()[0].toFixed(2),
  }),
);
