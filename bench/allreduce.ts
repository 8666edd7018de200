// `npm run bench -- allreduce [--sizes 4,16,64] [--worlds 2,3] [--iters 5] [--warmup 2] [--max-payload 1048576] [--wire f32]
//                              [--window <bytes>] [--checksum true|false]`  (the ring's credit window and checksum32 of
//                              chunk bodies; defaults: CollectiveOptions' defaults)
//                              [--modes ring,raw-burst,raw-paced]  (a subset, e.g. `--modes ring` to profile one side;
//                              the ratio needs ring and at least one raw way; add ring-nocrc to time the ring
//                              without chunk checksums in the same run: nocrc_* fields)
//
// Bus bandwidth of easel's ring all-reduce over NATS against raw NATS pub/sub in the same run, ranks as separate
// processes on one nats-server (started here on a loopback port).
//
// Definitions (as in NCCL's tests, doc/PERFORMANCE.md there):
//   algbw = S / t          S = bytes of the float32 vector, t = seconds per all-reduce (slowest rank)
//   busbw = algbw × 2(N−1)/N   (the bytes each rank must send, and receive, per all-reduce, over t)
// Baseline ("raw"): the same N processes and connections, the same ring pattern and message size, bare NATS: each
// rank publishes 2(N−1)/N × S bytes in (max_payload − header)-sized messages to its successor and stops its clock
// when it has received as many bytes from its predecessor. Best effort: the messages are pre-built once and
// reused, there is no header, checksum, arithmetic or acknowledgement, and the receiver only counts bytes. Two
// ways of publishing are timed and the faster (lower median) is the baseline:
//   raw-burst: every message published at once (nats.js copies each into its outbound buffer, the socket queues
//              them; nothing is waited for);
//   raw-paced: a flush (PING/PONG) every 4 MB and at most 16 MB published beyond the last completed flush (the
//              ring's default window), so the sender yields to its own socket and receive path — at large sizes
//              this beats the burst, whose tens of MB of queued writes cost memory and GC.
// raw busbw = 2(N−1)/N × S / t_raw.
//
// Method: per (N, size) one job; each rank runs `warmup` untimed repetitions of each side, then the timed ones
// interleaved ring, raw-burst, raw-paced, raw-paced, raw-burst, ring, ring, … (order reversed every round: slow
// drift of the shared machine's load hits all sides alike, and none always goes first). Every repetition starts
// at a barrier (an allGather of one float). A repetition's time is its slowest rank's. Per case: median, min and
// max of each side; ratio = raw median time / ring median time (= busbw / raw busbw at the medians). Sizes under
// 16 MB get proportionally more repetitions (4 MB: 4 × iters), being cheap and the noisiest. CPU seconds (user +
// system of all rank processes, not the server) are reported the same way: cpu_ratio = CPU median of the chosen
// raw way / ring's, a comparison that other load on a shared machine inflates far less than wall time.
// Last line: {"ratio": worst ratio over sizes and N, …}. Goal ≥ 0.8.
import { spawn, type ChildProcess } from 'node:child_process';
import { parseArgs } from 'node:util';
import { loadavg } from 'node:os';
import type { NatsConnection } from 'nats';
import { startNats } from '../test/helpers/nats.ts';
import { closeNats, maxPayload, openNats } from '../src/transport/connection.ts';
import { CollectiveOptions, openRing } from '../src/transport/allreduce.ts';
import { HEADER_BYTES } from '../src/transport/chunks.ts';

type Mode = 'ring' | 'raw-burst' | 'raw-paced' | 'ring-nocrc';
const MODES: Mode[] = ['ring', 'raw-burst', 'raw-paced'];
/** Opt-in sides (--modes): the ring without chunk checksums, to measure what they cost in the same run. */
const EXTRA_MODES: Mode[] = ['ring-nocrc'];
interface Job {
  id: number;
  bytes: number;
  world: number;
  wire: 'f32' | 'bf16' | 'f16';
  windowBytes?: number;
  checksum: boolean;
  /** What each repetition runs, in order (warm-ups first). */
  schedule: Mode[];
}
interface JobResult {
  id: number;
  rank: number;
  /** Wall seconds of each repetition of the schedule, on this rank. */
  seconds: number[];
  /** This process's CPU seconds (user + system) during each repetition. */
  cpu: number[];
  /** This process's minor page faults during each repetition (first touches of fresh memory). */
  faults: number[];
}

const MB = 1024 * 1024;
/** raw-paced: a flush every PACE_FLUSH bytes, at most PACE_WINDOW published beyond the last completed flush. */
const PACE_FLUSH = 4 * MB;
const PACE_WINDOW = 16 * MB;
const DEFINITION =
  'busbw = S/t × 2(N−1)/N (NCCL tests), t = slowest rank; ratio = raw median time / ring median time = busbw / busbw of raw NATS pub/sub moving the same bytes per rank in the same ring pattern and message size';
const BASELINE =
  'raw: same processes and connections; each rank publishes 2(N−1)/N × S bytes to its successor in (max_payload − 56 B) messages, pre-built and reused (no header, checksum, arithmetic or acknowledgement), and stops when it has counted as many bytes from its predecessor; timed two ways, the faster median is the baseline: raw-burst (all published at once) and raw-paced (a flush every 4 MB, at most 16 MB beyond the last completed flush)';
const METHOD = 'warm-up repetitions of every side, then timed repetitions interleaved ring/raw-burst/raw-paced, order reversed every round, each from a barrier; slowest rank per repetition; median per side';

// ---------------------------------------------------------------------------------------------------------------
// Conductor

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      sizes: { type: 'string', default: '4,16,64' },
      worlds: { type: 'string', default: '2,3' },
      iters: { type: 'string', default: '5' },
      warmup: { type: 'string', default: '2' },
      'max-payload': { type: 'string', default: String(MB) },
      wire: { type: 'string', default: 'f32' },
      window: { type: 'string' },
      checksum: { type: 'string', default: 'true' },
      modes: { type: 'string', default: MODES.join(',') },
    },
  });
  const sizes = values.sizes!.split(',').map(Number);
  const worlds = values.worlds!.split(',').map(Number);
  const iters = Number(values.iters);
  const warmup = Number(values.warmup);
  const wire = values.wire as Job['wire'];
  const windowBytes = values.window === undefined ? undefined : Number(values.window);
  const checksum = values.checksum !== 'false';
  const modes = values.modes!.split(',') as Mode[];
  const unknown = modes.filter((m) => !MODES.includes(m) && !EXTRA_MODES.includes(m));
  if (unknown.length || modes.length === 0) throw new Error(`--modes: unknown ${unknown.join(',') || '(none)'}; choose from ${[...MODES, ...EXTRA_MODES].join(',')}`);
  const started = performance.now();
  const nats = await startNats({ jetstream: false, maxPayload: Number(values['max-payload']) });
  const ctl = await openNats({ servers: nats.url, name: 'bench-conductor' });
  const loadBefore = loadavg();
  const rows: Record<string, number | string | number[]>[] = [];
  let jobId = 0;
  try {
    for (const world of worlds) {
      const procs = await startWorkers(nats.url, world, ctl);
      try {
        for (const size of sizes) {
          const bytes = size * MB;
          const reps = Math.max(iters, Math.round((iters * 16) / size));
          const job: Job = { id: ++jobId, bytes, world, wire, windowBytes, checksum, schedule: schedule(modes, warmup, reps) };
          const results = await runJob(ctl, job);
          const ring = summarise(job, results, 'ring', warmup);
          const [burst, paced] = [summarise(job, results, 'raw-burst', warmup), summarise(job, results, 'raw-paced', warmup)];
          // A side left out by --modes has NaN statistics (and so does the ratio).
          const raw = paced.wall.median < burst.wall.median || Number.isNaN(burst.wall.median) ? paced : burst;
          const moved = (2 * (world - 1)) / world;
          const busbw = (t: number) => round((bytes * moved) / t / MB, 1);
          const row = {
            N: world,
            MB: size,
            reps,
            seconds: round(ring.wall.median, 4),
            seconds_min_max: [round(ring.wall.min, 4), round(ring.wall.max, 4)],
            algbw_MBps: round(bytes / ring.wall.median / MB, 1),
            busbw_MBps: busbw(ring.wall.median),
            busbw_min_max_MBps: [busbw(ring.wall.max), busbw(ring.wall.min)],
            raw_seconds: round(raw.wall.median, 4),
            raw_seconds_min_max: [round(raw.wall.min, 4), round(raw.wall.max, 4)],
            raw_busbw_MBps: busbw(raw.wall.median),
            raw_busbw_min_max_MBps: [busbw(raw.wall.max), busbw(raw.wall.min)],
            raw_way: raw === paced ? 'paced' : 'burst',
            raw_burst_busbw_MBps: busbw(burst.wall.median),
            raw_paced_busbw_MBps: busbw(paced.wall.median),
            ratio: round(raw.wall.median / ring.wall.median, 3),
            // Diagnostics on a shared machine: CPU seconds of all ranks' processes (not the server), ring and raw.
            cpu_s: round(ring.cpu.median, 3),
            raw_cpu_s: round(raw.cpu.median, 3),
            cpu_ratio: round(raw.cpu.median / ring.cpu.median, 3),
            // Minor page faults of all ranks (first touches of fresh memory: expensive on the development VM).
            faults: ring.faults.median,
            raw_faults: raw.faults.median,
            ...(modes.includes('ring-nocrc') ? nocrcRow(summarise(job, results, 'ring-nocrc', warmup), raw, busbw) : {}),
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
      worst_cpu_ratio: Math.min(...rows.map((r) => r.cpu_ratio as number)),
      load_average_before: loadBefore.map((x) => round(x, 2)),
      load_average_after: loadavg().map((x) => round(x, 2)),
      bench_seconds: round((performance.now() - started) / 1000, 1),
      definition: DEFINITION,
      baseline: BASELINE,
      method: METHOD,
      wire,
      window_bytes: windowBytes ?? CollectiveOptions.parse({}).windowBytes,
      checksum,
      max_payload: nats.maxPayload,
      iters,
      warmup,
      results: rows,
    }),
  );
}

const round = (x: number, d: number) => Math.round(x * 10 ** d) / 10 ** d;

/** The ring without checksums (--modes …,ring-nocrc), against the same raw baseline. */
function nocrcRow(nocrc: { wall: Stats; cpu: Stats }, raw: { wall: Stats; cpu: Stats }, busbw: (t: number) => number) {
  return {
    nocrc_busbw_MBps: busbw(nocrc.wall.median),
    nocrc_ratio: round(raw.wall.median / nocrc.wall.median, 3),
    nocrc_cpu_s: round(nocrc.cpu.median, 3),
    nocrc_cpu_ratio: round(raw.cpu.median / nocrc.cpu.median, 3),
  };
}

/** `warmup` of each side, then `reps` of each interleaved, the order reversed every round: ABC CBA ABC … */
function schedule(modes: Mode[], warmup: number, reps: number): Mode[] {
  const out: Mode[] = [];
  for (let i = 0; i < warmup; i++) out.push(...modes);
  for (let i = 0; i < reps; i++) out.push(...(i % 2 ? [...modes].reverse() : modes));
  return out;
}

interface Stats {
  median: number;
  min: number;
  max: number;
}
function stats(xs: number[]): Stats {
  if (xs.length === 0) return { median: NaN, min: NaN, max: NaN };
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return { median: s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2, min: s[0], max: s[s.length - 1] };
}

/** One side's timed repetitions: each repetition's slowest rank (wall) and all ranks' CPU seconds together. */
function summarise(job: Job, results: JobResult[], mode: Mode, warmup: number): { wall: Stats; cpu: Stats; faults: Stats } {
  const walls: number[] = [];
  const cpus: number[] = [];
  const faults: number[] = [];
  let seen = 0;
  job.schedule.forEach((m, i) => {
    if (m !== mode || seen++ < warmup) return;
    walls.push(Math.max(...results.map((r) => r.seconds[i])));
    cpus.push(results.reduce((a, r) => a + r.cpu[i], 0));
    faults.push(results.reduce((a, r) => a + r.faults[i], 0));
  });
  return { wall: stats(walls), cpu: stats(cpus), faults: stats(faults) };
}

async function startWorkers(url: string, world: number, ctl: NatsConnection): Promise<ChildProcess[]> {
  const ready = ctl.subscribe('bench.ready', { max: world });
  await ctl.flush();
  const procs = Array.from({ length: world }, (_, rank) =>
    // The conductor's node flags (--import tsx, and e.g. --cpu-prof when profiling the ranks).
    spawn(process.execPath, [...process.execArgv, 'bench/allreduce.ts', '--worker', url, String(rank)], { stdio: ['ignore', 'inherit', 'inherit'] }),
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
      const { seconds, cpu, faults } = await runSchedule(nc, job, rank);
      nc.publish(`bench.result.${job.id}`, JSON.stringify({ id: job.id, rank, seconds, cpu, faults }));
    } catch (err) {
      nc.publish(`bench.result.${job.id}`, JSON.stringify({ id: job.id, rank, error: (err as Error).stack }));
    }
  }
  quit.unsubscribe();
  await closeNats(nc);
}

/** Wall, CPU and page-fault stopwatch. */
function stopwatch(): () => { seconds: number; cpu: number; faults: number } {
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const f0 = process.resourceUsage().minorPageFault;
  return () => {
    const c = process.cpuUsage(c0);
    return { seconds: (performance.now() - t0) / 1000, cpu: (c.user + c.system) / 1e6, faults: process.resourceUsage().minorPageFault - f0 };
  };
}

/** Runs the job's repetitions in order on one ring (its own generation), each from a barrier. */
async function runSchedule(nc: NatsConnection, job: Job, rank: number): Promise<Omit<JobResult, 'id' | 'rank'>> {
  const ring = openRing(nc, { run: 'bench', generation: job.id, rank, world: job.world }, { wire: job.wire, windowBytes: job.windowBytes, checksum: job.checksum, timeoutMs: 120_000 });
  const go = nc.subscribe(`bench.go.${job.id}`, { max: 1 });
  await nc.flush();
  nc.publish(`bench.subscribed.${job.id}`);
  for await (const _ of go) {
    // the conductor saw every rank subscribed
  }
  let step = 0;
  const barrier = () => ring.allGather(new Float32Array(1), { step: step++ });
  const values = new Float32Array(job.bytes / 4);
  for (let i = 0; i < values.length; i++) values[i] = ((i * 2654435761 + rank) % 1000) / 1000 - 0.5;
  const raw = rawSender(nc, job, rank);
  // Its own run id, so neither ring counts the other's chunks as foreign.
  const nocrc = job.schedule.includes('ring-nocrc')
    ? openRing(nc, { run: 'bench-nocrc', generation: job.id, rank, world: job.world }, { wire: job.wire, windowBytes: job.windowBytes, checksum: false, timeoutMs: 120_000 })
    : undefined;
  const seconds: number[] = [];
  const cpu: number[] = [];
  const faults: number[] = [];
  try {
    for (const [i, mode] of job.schedule.entries()) {
      const receiving = mode.startsWith('raw') ? await raw.subscribe(i) : undefined;
      await barrier(); // everyone is ready (and subscribed): start together
      const stop = stopwatch();
      if (mode === 'ring') await ring.allReduce(values, { step: step++, inPlace: true });
      else if (mode === 'ring-nocrc') await nocrc!.allReduce(values, { step: step++, inPlace: true });
      else await raw.send(i, receiving!, mode === 'raw-paced');
      const t = stop();
      seconds.push(t.seconds);
      cpu.push(t.cpu);
      faults.push(t.faults);
    }
  } finally {
    ring.close();
    nocrc?.close();
  }
  return { seconds, cpu, faults };
}

/** The baseline: this rank's share of the ring's bytes as bare NATS messages to its successor. */
function rawSender(nc: NatsConnection, job: Job, rank: number) {
  const succ = (rank + 1) % job.world;
  const perRank = Math.floor((job.bytes * 2 * (job.world - 1)) / job.world);
  const msgBytes = maxPayload(nc) - HEADER_BYTES; // the ring's chunks carry a header; keep the same message size
  const msg = new Uint8Array(msgBytes).fill(rank);
  const tail = msg.subarray(0, perRank % msgBytes);
  const subject = (rep: number, to: number) => `bench.raw.${job.id}.${rep}.${to}`;
  return {
    /** Subscribes for repetition `rep`; `all` resolves once all its bytes arrived (wrapped: an async function would flatten it). */
    async subscribe(rep: number): Promise<{ all: Promise<void> }> {
      let received = 0;
      let done!: () => void;
      const all = new Promise<void>((r) => (done = r));
      const sub = nc.subscribe(subject(rep, rank), {
        callback: (_e, m) => {
          received += m.data.byteLength;
          if (received < perRank) return;
          sub.unsubscribe();
          done();
        },
      });
      await nc.flush();
      return { all };
    },
    async send(rep: number, receiving: { all: Promise<void> }, paced: boolean): Promise<void> {
      const to = subject(rep, succ);
      const flushes: { at: number; done: Promise<void> }[] = [];
      let flushedAt = 0;
      for (let sent = 0; sent < perRank; ) {
        const part = sent + msgBytes <= perRank ? msg : tail;
        if (paced) {
          while (flushes.length && sent - flushes[0].at >= PACE_WINDOW - PACE_FLUSH) await flushes.shift()!.done;
          if (sent - flushedAt >= PACE_FLUSH) flushes.push({ at: (flushedAt = sent), done: nc.flush() });
        }
        nc.publish(to, part);
        sent += part.byteLength;
      }
      await receiving.all;
    },
  };
}

if (process.argv[2] === '--worker') {
  await worker(process.argv[3], Number(process.argv[4]));
} else {
  await main();
}
