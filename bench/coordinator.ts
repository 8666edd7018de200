// `npm run bench -- coordinator [--shards N] [--trainers N] [--nats-requests N]`: a LAION-5B-sized coordinator
// simulation. 585,000 shards (10,000 samples each) and 1,024 simulated trainers lease, report progress, complete,
// heartbeat, and some die (their leases return to pending) until the whole epoch is consumed — in process, against
// the lease table and membership. Leases follow the coordinator's plan (shard i to rank i mod W); every death and
// every replacement re-deals the plan, as the generation changes they cause do in the coordinator (plan rebuild
// time is reported). Reports lease latency p50/p99, memory held by the new table (JS heap + typed arrays, after GC), the process RSS, and checks exactly-once.
//
// Baseline, in the same run: the naive lease table one would write first — pending shards in a JS array read with
// a moving head index (no Array.shift), leases in a Map<shard, trainer> — doing the same lease/complete sequence
// with no expiry, offsets, plan or accounting. Ratio = easel's ops/s (lease + complete pairs) / the naive table's ops/s (higher is
// better; < 1 means easel's bookkeeping costs that much throughput).
//
// With nats-server on PATH, a slice also goes through NATS: a real Coordinator (state written through to
// JetStream KV) answering lease+complete requests; its request latency p50/p99 is reported beside.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { LeaseTable } from '../src/coordinator/leases.ts';
import { Membership } from '../src/coordinator/membership.ts';
import { Rng } from '../src/util/rng.ts';

const args = process.argv.slice(2);
const flag = (name: string, dflt: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const SHARDS = flag('shards', 585_000);
const TRAINERS = flag('trainers', 1024);
const NATS_REQUESTS = flag('nats-requests', 2000);
const SAMPLES_PER_SHARD = 10_000;
const STEP_SAMPLES = 2_500; // each trainer reports progress every 2,500 samples: 3 progress reports per shard

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const heapUsed = () => {
  gc();
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers; // typed arrays live outside the JS heap
};
const quantile = (xs: Float64Array, q: number) => {
  const s = Float64Array.from(xs).sort();
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
};
const round = (x: number, d = 3) => +x.toFixed(d);

function simulate() {
  const heap0 = heapUsed();
  const table = new LeaseTable(new Array<number>(SHARDS).fill(SAMPLES_PER_SHARD), { leaseMs: 60_000 });
  const members = new Membership({ heartbeatTimeoutMs: 10_000, minTrainers: 1, maxTrainers: TRAINERS * 2 });
  const heapTable = heapUsed() - heap0;
  const rng = new Rng(1);
  let now = 0;
  let nextId = 0;
  const live: string[] = [];
  for (let i = 0; i < TRAINERS; i++) {
    const id = `trainer-${nextId++}`;
    members.register(id, now);
    live.push(id);
  }
  members.tick(now);
  table.setPlan(live.length);
  const planMs: number[] = [];
  const replan = (world: number) => {
    const a = performance.now();
    table.setPlan(world);
    planMs.push(performance.now() - a);
  };
  const held = new Map<string, { shard: number; at: number; from: number }>();
  const leaseNs = new Float64Array(SHARDS * 2);
  let leases = 0;
  let deaths = 0;
  let ops = 0;
  const t0 = performance.now();
  while (!table.finished()) {
    now += 100;
    for (let k = 0; k < live.length; k++) {
      const id = live[k]!;
      let h = held.get(id);
      if (!h) {
        const a = process.hrtime.bigint();
        const l = table.lease(id, now, k);
        leaseNs[leases++] = Number(process.hrtime.bigint() - a);
        ops++;
        if (!l) continue;
        h = { shard: l.shard, at: l.fromSample, from: l.fromSample };
        held.set(id, h);
      }
      if (rng.float() < 0.0005) {
        // a death: its lease returns to pending at its last reported offset; a fresh trainer takes its place
        table.release(id);
        members.leave(id);
        held.delete(id);
        replan(live.length - 1); // the generation without it
        replan(live.length); // and the one its replacement joins
        const fresh = `trainer-${nextId++}`;
        members.register(fresh, now);
        live[k] = fresh;
        deaths++;
        ops += 2;
        continue;
      }
      h.at += STEP_SAMPLES;
      ops++;
      if (h.at >= SAMPLES_PER_SHARD) {
        const r = table.complete(h.shard, id, SAMPLES_PER_SHARD - h.from);
        if (!r.ok) throw new Error(r.message);
        held.delete(id);
      } else {
        const r = table.progress(h.shard, id, h.at);
        if (!r.ok) throw new Error(r.message);
      }
    }
    // heartbeats of the whole fleet once per simulated second, and a membership tick
    if (now % 1000 === 0) {
      for (const id of live) {
        members.heartbeat(id, now);
        table.renew(id, now);
      }
      ops += live.length;
      members.tick(now);
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  const s = table.stats();
  if (s.samplesSeen !== s.expectedSamples || s.done !== SHARDS) throw new Error(`exactly-once violated: ${JSON.stringify(s)}`);
  const lat = leaseNs.subarray(0, leases);
  return {
    seconds,
    ops,
    leases,
    deaths,
    generations: members.generation.number,
    lease_p50_us: round(quantile(lat, 0.5) / 1000),
    lease_p99_us: round(quantile(lat, 0.99) / 1000),
    lease_max_us: round(quantile(lat, 1) / 1000),
    plan_rebuilds: planMs.length,
    plan_rebuild_p50_ms: planMs.length ? round(quantile(Float64Array.from(planMs), 0.5)) : 0,
    plan_rebuild_max_ms: planMs.length ? round(Math.max(...planMs)) : 0,
    memory_table_mib: round(heapTable / 2 ** 20, 1),
    rss_mib: round(process.memoryUsage().rss / 2 ** 20, 1),
    samples_seen: s.samplesSeen,
    expected_samples: s.expectedSamples,
  };
}

/** easel's lease table vs the naive one, same lease+complete sequence, alternating rounds; best of each. */
function throughput(rounds: number) {
  const n = SHARDS;
  const easel = () => {
    const t = new LeaseTable(new Array<number>(n).fill(1), { leaseMs: 60_000 });
    t.setPlan(TRAINERS);
    const a = performance.now();
    for (let i = 0; i < n; i++) {
      const id = `t${i % TRAINERS}`;
      const l = t.lease(id, i, i % TRAINERS)!;
      t.complete(l.shard, id, 1);
    }
    return n / ((performance.now() - a) / 1000);
  };
  const naive = () => {
    const pending: number[] = [];
    for (let i = 0; i < n; i++) pending.push(i);
    const leased = new Map<number, string>();
    let done = 0;
    let head = 0;
    const a = performance.now();
    for (let i = 0; i < n; i++) {
      const id = `t${i % TRAINERS}`;
      const s = pending[head++]!;
      leased.set(s, id);
      if (leased.get(s) === id) {
        leased.delete(s);
        done++;
      }
    }
    if (done !== n) throw new Error('naive table lost shards');
    return n / ((performance.now() - a) / 1000);
  };
  let best = { easel: 0, naive: 0 };
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? (['easel', 'naive'] as const) : (['naive', 'easel'] as const);
    for (const side of order) best = { ...best, [side]: Math.max(best[side], side === 'easel' ? easel() : naive()) };
  }
  return best;
}

async function natsSlice(requests: number) {
  let helpers;
  try {
    helpers = await import('../test/helpers/nats.ts');
  } catch {
    return undefined;
  }
  let nats;
  try {
    nats = await helpers.startNats();
  } catch (err) {
    console.error(`skipping the NATS slice: ${(err as Error).message.split('\n')[0]}`);
    return undefined;
  }
  const { connect } = await import('nats');
  const { Coordinator } = await import('../src/coordinator/service.ts');
  const { CoordinatorClient } = await import('../src/coordinator/client.ts');
  const { CoordinatorConfig } = await import('../src/coordinator/config.ts');
  const nc = await connect({ servers: nats.url });
  try {
    const shards = Array.from({ length: SHARDS }, (_, i) => ({ key: `${String(i).padStart(6, '0')}.tar`, samples: SAMPLES_PER_SHARD }));
    const c = await Coordinator.start({
      nc,
      run: 'bench',
      config: CoordinatorConfig.parse({ maxTrainers: 64, httpPort: 0 }),
      budgets: { clip: 1, prior: 1, decoder: 1, upsampler: 0 },
      shards,
      ticking: false,
    });
    const clients = Array.from({ length: 16 }, (_, i) => new CoordinatorClient(nc, 'bench', `t${i}`));
    for (const cl of clients) await cl.request('register');
    const lat = new Float64Array(requests);
    // 16 trainers in parallel, each lease → complete in turn
    let i = 0;
    await Promise.all(
      clients.map(async (cl) => {
        while (i < requests) {
          const mine = i++;
          const a = performance.now();
          const r = await cl.request<{ lease: { shard: number; samples: number } }>('lease');
          lat[mine] = performance.now() - a;
          await cl.request('complete', { shard: r.lease.shard, samples: r.lease.samples });
        }
      }),
    );
    await c.stop();
    return { nats_lease_requests: requests, nats_trainers: clients.length, nats_lease_p50_ms: round(quantile(lat, 0.5)), nats_lease_p99_ms: round(quantile(lat, 0.99)) };
  } finally {
    await nc.close();
    await nats.stop();
  }
}

async function main() {
  const sim = simulate();
  console.log(JSON.stringify({ part: 'simulation', shards: SHARDS, trainers: TRAINERS, ...sim }));
  const tp = throughput(3);
  console.log(JSON.stringify({ part: 'throughput', easel_ops_per_s: Math.round(tp.easel), naive_ops_per_s: Math.round(tp.naive) }));
  const slice = NATS_REQUESTS > 0 ? await natsSlice(NATS_REQUESTS) : undefined;
  if (slice) console.log(JSON.stringify({ part: 'nats', ...slice }));
  console.log(
    JSON.stringify({
      ratio: round(tp.easel / tp.naive),
      ratio_is: "easel lease table's lease+complete pairs/s (under a plan of W = trainers) over a naive array-queue + Map table's, same sequence, same run (higher is better; < 1 = the cost of expiry, offsets, plan and accounting)",
      shards: SHARDS,
      trainers: TRAINERS,
      lease_p50_us: sim.lease_p50_us,
      lease_p99_us: sim.lease_p99_us,
      memory_table_mib: sim.memory_table_mib,
      rss_mib: sim.rss_mib,
      simulated_ops: sim.ops,
      deaths: sim.deaths,
      plan_rebuild_p50_ms: sim.plan_rebuild_p50_ms,
      plan_rebuild_max_ms: sim.plan_rebuild_max_ms,
      exactly_once: sim.samples_seen === sim.expected_samples,
      sim_seconds: round(sim.seconds, 1),
      easel_ops_per_s: Math.round(tp.easel),
      naive_ops_per_s: Math.round(tp.naive),
      ...slice,
    }),
  );
}

await main();
