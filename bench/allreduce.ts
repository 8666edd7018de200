// `npm run bench -- allreduce [--sizes 4,16,64] [--worlds 2,3] [--iters 3] [--max-payload 1048576] [--wire f32]`
//
// Bus bandwidth of easel's ring all-reduce over NATS against raw NATS pub/sub in the same run, ranks as separate
// processes on one nats-server (started here on a loopback port).
//
// Definitions (as in NCCL's tests, doc/PERFORMANCE.md there):
//   algbw = S / t          S = bytes of the float32 vector, t = seconds per all-reduce
//   busbw = algbw × 2(N−1)/N   (the bytes each rank must send, and receive, per all-reduce, over t)
// Baseline ("raw"): the same N processes, the same ring pattern and message size, but bare NATS: each rank publishes
// 2(N−1)/N × S bytes in max_payload-sized messages to its successor (pre-built buffers, no headers, no reduction,
// no flow control) and stops its clock when it has received as many bytes from its predecessor. raw busbw =
// 2(N−1)/N × S / t_raw. ratio = busbw / raw busbw (= t_raw / t). Each figure is the best of `iters` repetitions,
// after 2 untimed ones.
// Last line: {"ratio": worst ratio over sizes and N, …}. Goal ≥ 0.8.
import { spawn, type ChildProcess } from 'node:child_process';
import { parseArgs } from 'node:util';
import { loadavg } from 'node:os';
import type { NatsConnection } from 'nats';
import { startNats } from '../test/helpers/nats.ts';
import { closeNats, maxPayload, openNats } from '../src/transport/connection.ts';
import { openRing, type Ring } from '../src/transport/allreduce.ts';
import { HEADER_BYTES } from '../src/transport/chunks.ts';

interface Job {
  id: number;
  mode: 'ring' | 'raw';
  bytes: number;
  iters: number;
  world: number;
  wire: 'f32' | 'bf16' | 'f16';
}
interface JobResult {
  id: number;
  rank: number;
  seconds: number[];
  /** This process's CPU seconds (user + system) during each repetition. */
  cpu: number[];
}

const MB = 1024 * 1024;
/**
 * Untimed repetitions first, on both sides: the ring's two send arenas (and any buffer) are touched once, so
 * page faults of fresh memory (~0.3 s per 16 MB on the loaded development machine) are not what is measured.
 */
const WARMUP = 2;

// ---------------------------------------------------------------------------------------------------------------
// Conductor

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      sizes: { type: 'string', default: '4,16,64' },
      worlds: { type: 'string', default: '2,3' },
      iters: { type: 'string', default: '3' },
      'max-payload': { type: 'string', default: String(MB) },
      wire: { type: 'string', default: 'f32' },
    },
  });
  const sizes = values.sizes!.split(',').map(Number);
  const worlds = values.worlds!.split(',').map(Number);
  const iters = Number(values.iters);
  const wire = values.wire as Job['wire'];
  const nats = await startNats({ jetstream: false, maxPayload: Number(values['max-payload']) });
  const ctl = await openNats({ servers: nats.url, name: 'bench-conductor' });
  const rows: Record<string, number | string>[] = [];
  let jobId = 0;
  try {
    for (const world of worlds) {
      const procs = await startWorkers(nats.url, world, ctl);
      try {
        for (const size of sizes) {
          const bytes = size * MB;
          const run = async (mode: Job['mode']) => best(await runJob(ctl, { id: ++jobId, mode, bytes, iters, world, wire }));
          // Alternate which goes first, so drift in machine load hits both alike.
          const [raw, ring] = jobId % 2 ? [await run('raw'), await run('ring')] : ((r) => [r[1], r[0]])([await run('ring'), await run('raw')]);
          const [tRaw, tRing] = [raw.wall, ring.wall];
          const moved = (2 * (world - 1)) / world;
          const busbw = (bytes * moved) / tRing / MB;
          const rawBusbw = (bytes * moved) / tRaw / MB;
          const row = {
            N: world,
            MB: size,
            seconds: round(tRing, 4),
            algbw_MBps: round(bytes / tRing / MB, 1),
            busbw_MBps: round(busbw, 1),
            raw_seconds: round(tRaw, 4),
            raw_busbw_MBps: round(rawBusbw, 1),
            ratio: round(busbw / rawBusbw, 3),
            // Diagnostic on a shared machine: CPU seconds of all ranks' processes (not the server), raw / ring.
            cpu_s: round(ring.cpu, 3),
            raw_cpu_s: round(raw.cpu, 3),
            cpu_ratio: round(raw.cpu / ring.cpu, 3),
          };
          rows.push(row);
          console.log(JSON.stringify(row));
        }
      } finally {
        await stopWorkers(procs, ctl);
      }
    }
  } finally {
    await closeNats(ctl);
    await nats.stop();
  }
  const worst = Math.min(...rows.map((r) => r.ratio as number));
  console.log(
    JSON.stringify({
      ratio: worst,
      goal: 0.8,
      load_average: loadavg().map((x) => round(x, 1)),
      definition: 'busbw = S/t × 2(N−1)/N (NCCL tests); ratio = busbw / busbw of raw NATS pub/sub moving the same bytes in the same ring pattern and message size',
      wire,
      max_payload: nats.maxPayload,
      iters,
      results: rows,
    }),
  );
}

const round = (x: number, d: number) => Math.round(x * 10 ** d) / 10 ** d;

/** Slowest rank's wall time per repetition, best repetition; and the CPU seconds of all ranks, median repetition. */
function best(results: JobResult[]): { wall: number; cpu: number } {
  const iters = results[0].seconds.length;
  let wall = Infinity;
  for (let i = 0; i < iters; i++) wall = Math.min(wall, Math.max(...results.map((r) => r.seconds[i])));
  const cpus = Array.from({ length: iters }, (_, i) => results.reduce((a, r) => a + r.cpu[i], 0)).sort((a, b) => a - b);
  return { wall, cpu: cpus[Math.floor(iters / 2)] };
}

async function startWorkers(url: string, world: number, ctl: NatsConnection): Promise<ChildProcess[]> {
  const ready = ctl.subscribe('bench.ready', { max: world });
  await ctl.flush();
  const procs = Array.from({ length: world }, (_, rank) =>
    spawn(process.execPath, ['--import', 'tsx', 'bench/allreduce.ts', '--worker', url, String(rank)], { stdio: ['ignore', 'inherit', 'inherit'] }),
  );
  for await (const _ of ready) {
    // one message per worker
  }
  return procs;
}

async function stopWorkers(procs: ChildProcess[], ctl: NatsConnection): Promise<void> {
  const exited = procs.map((p) => new Promise((r) => (p.exitCode !== null ? r(null) : p.once('exit', r))));
  ctl.publish('bench.quit');
  await ctl.flush();
  await Promise.all(exited);
}

async function runJob(ctl: NatsConnection, job: Job): Promise<JobResult[]> {
  const sub = ctl.subscribe(`bench.result.${job.id}`, { max: job.world });
  const subscribed = ctl.subscribe(`bench.subscribed.${job.id}`, { max: job.world });
  await ctl.flush();
  ctl.publish('bench.job', JSON.stringify(job));
  for await (const _ of subscribed) {
    // one per rank
  }
  ctl.publish(`bench.go.${job.id}`);
  const results: JobResult[] = [];
  for await (const m of sub) {
    const r = m.json<JobResult & { error?: string }>();
    if (r.error) throw new Error(`rank ${r.rank}: ${r.error}`);
    results.push(r);
  }
  return results;
}

// ---------------------------------------------------------------------------------------------------------------
// Worker: one rank, one process

async function worker(url: string, rank: number): Promise<void> {
  const nc = await openNats({ servers: url, name: `bench-rank-${rank}` });
  const jobs = nc.subscribe('bench.job');
  const quit = nc.subscribe('bench.quit', { max: 1, callback: () => jobs.unsubscribe() });
  await nc.flush();
  nc.publish('bench.ready');
  for await (const m of jobs) {
    const job = m.json<Job>();
    try {
      const { seconds, cpu } = job.mode === 'ring' ? await ringJob(nc, job, rank) : await rawJob(nc, job, rank);
      nc.publish(`bench.result.${job.id}`, JSON.stringify({ id: job.id, rank, seconds, cpu }));
    } catch (err) {
      nc.publish(`bench.result.${job.id}`, JSON.stringify({ id: job.id, rank, error: (err as Error).stack }));
    }
  }
  quit.unsubscribe();
  await closeNats(nc);
}

/** A ring for this job (its own generation); returns once every rank's ring is subscribed. */
async function jobRing(nc: NatsConnection, job: Job, rank: number): Promise<{ ring: Ring; step: () => number }> {
  const ring = openRing(nc, { run: 'bench', generation: job.id, rank, world: job.world }, { wire: job.wire, timeoutMs: 120_000 });
  const go = nc.subscribe(`bench.go.${job.id}`, { max: 1 });
  await nc.flush();
  nc.publish(`bench.subscribed.${job.id}`);
  for await (const _ of go) {
    // the conductor saw every rank subscribed
  }
  let step = 0;
  return { ring, step: () => step++ };
}

interface Timings {
  seconds: number[];
  cpu: number[];
}

/** Wall and CPU stopwatch. */
function stopwatch(): () => { seconds: number; cpu: number } {
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  return () => {
    const c = process.cpuUsage(c0);
    return { seconds: (performance.now() - t0) / 1000, cpu: (c.user + c.system) / 1e6 };
  };
}

async function ringJob(nc: NatsConnection, job: Job, rank: number): Promise<Timings> {
  const { ring, step } = await jobRing(nc, job, rank);
  const values = new Float32Array(job.bytes / 4);
  for (let i = 0; i < values.length; i++) values[i] = ((i * 2654435761 + rank) % 1000) / 1000 - 0.5;
  const t: Timings = { seconds: [], cpu: [] };
  try {
    for (let i = -WARMUP; i < job.iters; i++) {
      await ring.allGather(new Float32Array(1), { step: step() }); // start together
      const stop = stopwatch();
      await ring.allReduce(values, { step: step(), inPlace: true });
      const { seconds, cpu } = stop();
      if (i < 0) continue;
      t.seconds.push(seconds);
      t.cpu.push(cpu);
    }
  } finally {
    ring.close();
  }
  return t;
}

async function rawJob(nc: NatsConnection, job: Job, rank: number): Promise<Timings> {
  const { ring, step } = await jobRing(nc, job, rank);
  const succ = (rank + 1) % job.world;
  const perRank = Math.floor((job.bytes * 2 * (job.world - 1)) / job.world);
  const msgBytes = maxPayload(nc) - HEADER_BYTES; // the ring's chunks carry a header too; keep the same message size
  const msg = new Uint8Array(msgBytes).fill(rank);
  const t: Timings = { seconds: [], cpu: [] };
  try {
    for (let i = -WARMUP; i < job.iters; i++) {
      let received = 0;
      let done!: () => void;
      const all = new Promise<void>((r) => (done = r));
      const sub = nc.subscribe(`bench.raw.${job.id}.${i}.${rank}`, {
        callback: (_e, m) => {
          received += m.data.byteLength;
          if (received >= perRank) done();
        },
      });
      await nc.flush();
      await ring.allGather(new Float32Array(1), { step: step() }); // everyone subscribed: start together
      const stop = stopwatch();
      for (let sent = 0; sent < perRank; sent += msgBytes) {
        nc.publish(`bench.raw.${job.id}.${i}.${succ}`, sent + msgBytes <= perRank ? msg : msg.subarray(0, perRank - sent));
      }
      await all;
      const { seconds, cpu } = stop();
      sub.unsubscribe();
      if (i < 0) continue;
      t.seconds.push(seconds);
      t.cpu.push(cpu);
    }
  } finally {
    ring.close();
  }
  return t;
}

if (process.argv[2] === '--worker') {
  await worker(process.argv[3], Number(process.argv[4]));
} else {
  await main();
}
