// `npm run bench -- scaling [--shards N] [--per-shard S] [--batch B] [--heavy-batch B2] [--heavy-shards N2]
//                           [--checkpoint-every K]` (rank 0 checkpoints every K steps; default 2, 0 = at the end only):
// samples/s of a distributed run with 1 trainer and with 2, on the same run config (tiny CLIP on the synthetic set,
// wasm backend), each a real nats-server + coordinator + `easel trainer` processes reading one epoch.
// samples/s = samples of the applied steps after the first (warm-up) divided by the time between the first and the
// last step, from the trainers' step traces.
//
// Two configurations, each measured with 1 and with 2 trainers:
//   default: --batch (8) samples per trainer per step on --shards × --per-shard samples — the configuration whose
//            ratio this benchmark has always reported (the last line's "ratio");
//   heavy:   the same model with --heavy-batch (32) samples per trainer per step on --heavy-shards (16) shards, so
//            that the per-step compute outweighs the per-step fixed costs (all-reduce and all-gather latency,
//            coordinator round trips, rank 0's checkpoints); reported beside it as "heavy" (--heavy-batch 0 skips it).
// Every run also reports where a step's time goes, per trainer and step (from the coordinator's metrics, the
// traces and the trainers' debug logs, so the trainers run here with EASEL_LOG=debug): the step period (trace);
// the trainer-reported step seconds (batch request → progress reports, without the trace line and the checkpoint)
// and within them the wait for data, the CLIP embeddings' all-gather and the gradient's all-reduce (the ring's own
// timings, which include waiting for the slower peer); rank 0's checkpoint seconds; the coordinator's own time
// per request verb; and the CPU seconds all trainer processes used per sample between the first and the last step
// (user + system, sampled from /proc every 100 ms, so start-up is left out), which other load on a shared machine
// inflates far less than wall time: cpu_efficiency = CPU per sample with 1 trainer ÷ with 2.
// Last line: {"ratio": samples/s(2) / samples/s(1) of the default configuration, …}. On a 2-core machine with
// nothing else running the goal is close to 2; other load on the machine lowers it (the load average is reported
// beside it).
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
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
const heavyBatch = flag('heavy-batch', 32);
const heavyShards = flag('heavy-shards', 16);
/** Rank 0's checkpoint cadence in steps: 2 (the test fixtures', this benchmark's history) or 0 = only at the stage's end. */
const checkpointEvery = flag('checkpoint-every', 2);

const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;

/** CPU seconds (user + system, all threads) a live process has used, or undefined once it is gone. */
function cpuSeconds(pid: number): number | undefined {
  try {
    // /proc/<pid>/stat fields 14 and 15 (utime, stime) in clock ticks; the command name (field 2) may hold spaces.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return undefined;
  }
}

/** A trainer as the test harness starts one, but logging at debug level (the ring's per-collective timings). */
function spawnTrainer(h: Awaited<ReturnType<typeof startHarness>>, id: string, backend: string) {
  const args = ['bin/easel.js', 'trainer', '--nats', h.nats.url, '--run', h.run, '--config', h.configPath, '--id', id, '--resume', 'none', '--heartbeat-ms', '300', '--collective-timeout-ms', '6000', '--trace', join(h.dir, `${id}.trace`)];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, EASEL_LOG: 'debug', EASEL_BACKEND: backend } });
  let log = '';
  child.stdout.on('data', (d) => (log += d));
  child.stderr.on('data', (d) => (log += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  // CPU samples (time, seconds) every 100 ms while it runs.
  const cpu: { t: number; s: number }[] = [];
  const timer = setInterval(() => {
    const s = cpuSeconds(child.pid!);
    if (s !== undefined) cpu.push({ t: Date.now(), s });
  }, 100);
  void exited.then(() => clearInterval(timer));
  return { child, exited, log: () => log, cpu };
}

/** CPU seconds between two times, from samples taken every 100 ms (the last sample before `from`, the first after `to`). */
function cpuBetween(samples: { t: number; s: number }[], from: number, to: number): number {
  const before = samples.filter((x) => x.t <= from).at(-1) ?? samples[0];
  const after = samples.find((x) => x.t >= to) ?? samples.at(-1)!;
  return after.s - before.s;
}

const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0);

interface Metric {
  name: string;
  values: { value: number; labels: Record<string, string>; metricName?: string }[];
}

function metricSum(metrics: Metric[], name: string, suffix = ''): number {
  const m = metrics.find((x) => x.name === name);
  return (m?.values ?? []).filter((v) => (suffix ? v.metricName === name + suffix : true)).reduce((a, v) => a + v.value, 0);
}

async function measure(workers: number, cfg: { shards: number; batch: number }) {
  const dir = await mkdtemp(join(tmpdir(), 'easel-bench-scaling-'));
  const h = await startHarness(dir, { steps: { clip: 10_000, prior: 0, decoder: 0 }, shards: cfg.shards, perShard, minTrainers: workers, backend: 'wasm', batchSize: cfg.batch, heartbeatTimeoutMs: 30_000, checkpointEverySteps: checkpointEvery });
  try {
    const ids = Array.from({ length: workers }, (_, i) => `w${i}`);
    const procs = ids.map((id) => spawnTrainer(h, id, 'wasm'));
    const codes = await Promise.all(procs.map((p) => p.exited));
    if (codes.some((c) => c !== 0)) throw new Error(`a trainer failed:\n${procs.map((p) => p.log()).join('\n---\n')}`);
    const trace = await h.trace('w0');
    if (trace.length < 3) throw new Error(`only ${trace.length} steps: use more --shards`);
    const timed = trace.slice(1);
    const seconds = (timed[timed.length - 1].t - trace[0].t) / 1000;
    const samples = timed.reduce((n, r) => n + r.samples, 0);
    const cpu = procs.reduce((a, p) => a + cpuBetween(p.cpu, trace[0].t, timed[timed.length - 1].t), 0);
    // Where the time goes. Step reports: one per trainer per step (seconds from the batch request to the progress
    // reports, without the trace line and the checkpoint); the period: the trace's time between steps.
    const metrics = (await h.coordinator.metrics.registry.getMetricsAsJSON()) as unknown as Metric[];
    const reports = metricSum(metrics, 'easel_step_seconds', '_count');
    const perReport = (x: number) => round((1000 * x) / reports, 1);
    const requests = metrics.find((m) => m.name === 'easel_coordinator_request_seconds');
    const verbs: Record<string, { n: number; ms_mean: number }> = {};
    for (const v of requests?.values ?? []) {
      const verb = v.labels.verb;
      if (v.metricName?.endsWith('_count')) verbs[verb] = { ...(verbs[verb] ?? { ms_mean: 0 }), n: v.value };
      if (v.metricName?.endsWith('_sum')) verbs[verb] = { ...(verbs[verb] ?? { n: 0 }), ms_mean: v.value };
    }
    for (const v of Object.values(verbs)) v.ms_mean = round((1000 * v.ms_mean) / Math.max(1, v.n), 2);
    const logs = procs.map((p) => p.log());
    const checkpoints = logs.flatMap((l) => [...l.matchAll(/\[trainer\] checkpoint written .* seconds=([\d.]+)/g)].map((m) => Number(m[1])));
    // The ring's timing of each collective (debug log): per step one all-gather (CLIP embeddings), one all-reduce.
    const collective = (kind: string) => mean(logs.flatMap((l) => [...l.matchAll(new RegExp(`collective done kind=${kind} step=\\d+ seq=\\d+ ms=(\\d+)`, 'g'))].map((m) => Number(m[1]))));
    const breakdown = {
      step_period_ms: round((1000 * seconds) / timed.length, 1),
      step_reported_ms: perReport(metricSum(metrics, 'easel_step_seconds', '_sum')),
      data_wait_ms: perReport(metricSum(metrics, 'easel_data_wait_seconds_total')),
      allgather_ms: round(collective('AllGather'), 1),
      allreduce_ms: perReport(metricSum(metrics, 'easel_allreduce_seconds_total')),
      checkpoints: checkpoints.length,
      checkpoint_ms_mean: checkpoints.length ? round((1000 * checkpoints.reduce((a, b) => a + b, 0)) / checkpoints.length, 1) : 0,
      coordinator_requests: verbs,
    };
    return { samplesPerSecond: samples / seconds, steps: trace.length, seconds, cpuSecondsPerSample: cpu / samples, breakdown };
  } finally {
    await h.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

async function compare(name: string, cfg: { shards: number; batch: number }) {
  const load = loadavg()[0];
  const one = await measure(1, cfg);
  console.log(`${name}: 1 trainer: ${one.samplesPerSecond.toFixed(2)} samples/s (${one.steps} steps, ${one.seconds.toFixed(1)} s) ${JSON.stringify(one.breakdown)}`);
  const two = await measure(2, cfg);
  console.log(`${name}: 2 trainers: ${two.samplesPerSecond.toFixed(2)} samples/s (${two.steps} steps, ${two.seconds.toFixed(1)} s) ${JSON.stringify(two.breakdown)}`);
  return {
    ratio: round(two.samplesPerSecond / one.samplesPerSecond),
    samples_per_s_1: round(one.samplesPerSecond),
    samples_per_s_2: round(two.samplesPerSecond),
    cpu_ms_per_sample_1: round(1000 * one.cpuSecondsPerSample, 2),
    cpu_ms_per_sample_2: round(1000 * two.cpuSecondsPerSample, 2),
    cpu_efficiency: round(one.cpuSecondsPerSample / two.cpuSecondsPerSample),
    shards: cfg.shards,
    samples_per_shard: perShard,
    batch_per_trainer: cfg.batch,
    breakdown_1: one.breakdown,
    breakdown_2: two.breakdown,
    loadavg_1m_before: round(load, 2),
    loadavg_1m_after: round(loadavg()[0], 2),
  };
}

const main = await compare('default', { shards, batch });
const heavy = heavyBatch > 0 ? await compare('heavy', { shards: heavyShards, batch: heavyBatch }) : undefined;
console.log(
  JSON.stringify({
    ...main,
    heavy,
    checkpoint_every_steps: checkpointEvery,
    note: 'batches never span shards: a shard smaller than the batch gives smaller batches; ratio and the figures beside it are the default configuration, heavy the larger batch per trainer',
    backend: 'wasm',
  }),
);
