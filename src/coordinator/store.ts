// The coordinator's state in a JetStream KV bucket (one per run), written through before every reply so a
// coordinator killed at any point restarts exactly where the last acknowledged request left it:
//
//   run                   RunRecord: phase, stage, steps, epoch, last loss, latest checkpoint
//   members               MembershipState: registered trainers, the current generation
//   shards.meta           { epoch, count, expectedSamples }: which lease table the shard records belong to
//   shards.<epoch>.<i>    ShardRecord of shard i, once it left its initial pending state this epoch
//   config                the validated run file the coordinator was last started with (a restart compares)
//   leader                { id, term, at }: the coordinator that owns the run now (the last one started)
//
// Per-shard keys (not one snapshot) keep every write small: a lease, progress or completion rewrites one key.
import type { KV, NatsConnection } from 'nats';
import type { ShardRecord } from './leases.ts';
import type { MembershipState } from './membership.ts';
import type { Phase, Stage } from './stages.ts';
import { stateBucket } from './subjects.ts';

export interface CheckpointRecord {
  step: number;
  key: string;
  /** Epoch-ms when the coordinator heard of it. */
  at: number;
  seconds?: number;
}

export interface RunRecord {
  phase: Phase;
  stage: Stage;
  stageStep: number;
  step: number;
  epoch: number;
  loss?: number;
  checkpoint?: CheckpointRecord;
}

export interface ShardsMeta {
  epoch: number;
  count: number;
  expectedSamples: number;
}

/** The coordinator that owns the run: each one started claims it with the next term (compare-and-set). */
export interface LeaderRecord {
  id: string;
  term: number;
  /** Epoch-ms of the claim. */
  at: number;
}

export interface PersistedState {
  run?: RunRecord;
  members?: MembershipState;
  meta?: ShardsMeta;
  shards: ShardRecord[];
}

const enc = new TextEncoder();
const dec = new TextDecoder();

export class StateStore {
  private constructor(private readonly kv: KV) {}

  /** Opens (creating if needed) the run's bucket. */
  static async open(nc: NatsConnection, run: string, { retryMs = 15_000 } = {}): Promise<StateStore> {
    const kv = await whileStarting(() => nc.jetstream().views.kv(stateBucket(run), { history: 1 }), retryMs);
    return new StateStore(kv);
  }

  /** Reads the whole state (retrying while JetStream is still starting up). */
  load(retryMs = 15_000): Promise<PersistedState> {
    return whileStarting(() => this.loadOnce(), retryMs);
  }

  private async loadOnce(): Promise<PersistedState> {
    const run = await this.getJson<RunRecord>('run');
    const members = await this.getJson<MembershipState>('members');
    const meta = await this.getJson<ShardsMeta>('shards.meta');
    const shards = meta ? await this.loadShards(meta.epoch) : [];
    return { run, members, meta, shards };
  }

  /** The run file the run was last started with, if any (retrying while JetStream is still starting up). */
  runConfig(retryMs = 15_000): Promise<unknown> {
    return whileStarting(() => this.getJson<unknown>('config'), retryMs);
  }

  /**
   * Makes `id` the run's coordinator with the next term. The write is a compare-and-set on the record read, so of two
   * coordinators claiming at once each gets its own term and the later one wins. Returns the claim and the one it
   * replaced.
   */
  async claimLeader(id: string, now: number): Promise<{ claim: LeaderRecord; previous?: LeaderRecord }> {
    for (let attempt = 0; ; attempt++) {
      const e = await whileStarting(() => this.kv.get('leader'), 15_000);
      const previous = e && e.operation === 'PUT' && e.value.length > 0 ? (JSON.parse(dec.decode(e.value)) as LeaderRecord) : undefined;
      const claim: LeaderRecord = { id, term: (previous?.term ?? 0) + 1, at: now };
      try {
        const data = enc.encode(JSON.stringify(claim));
        if (e) await this.kv.update('leader', data, e.revision);
        else await this.kv.create('leader', data);
        return { claim, previous };
      } catch (err) {
        if (attempt >= 5) throw new Error(`could not claim the run's leadership in JetStream KV: ${(err as Error).message}`, { cause: err });
      }
    }
  }

  /** The coordinator that owns the run now, if any claimed it. */
  leader(): Promise<LeaderRecord | undefined> {
    return this.getJson<LeaderRecord>('leader');
  }

  putRunConfig(config: unknown): Promise<unknown> {
    return this.putJson('config', config);
  }

  /** The run's BPE merges (a TokenizerJson), learnt once when the run was first started with them. */
  tokenizer(): Promise<unknown> {
    return this.getJson<unknown>('tokenizer');
  }

  putTokenizer(tokenizer: unknown): Promise<unknown> {
    return this.putJson('tokenizer', tokenizer);
  }

  putRun(r: RunRecord): Promise<unknown> {
    return this.putJson('run', r);
  }

  putMembers(m: MembershipState): Promise<unknown> {
    return this.putJson('members', m);
  }

  putMeta(m: ShardsMeta): Promise<unknown> {
    return this.putJson('shards.meta', m);
  }

  async putShards(epoch: number, records: ShardRecord[]): Promise<void> {
    await Promise.all(records.map((r) => this.putJson(`shards.${epoch}.${r.shard}`, r)));
  }

  /** Deletes the shard records of a finished epoch. */
  async dropEpoch(epoch: number): Promise<void> {
    const keys = await this.kv.keys(`shards.${epoch}.>`);
    const all: string[] = [];
    for await (const k of keys) all.push(k);
    await Promise.all(all.map((k) => this.kv.purge(k)));
  }

  private async loadShards(epoch: number): Promise<ShardRecord[]> {
    const out: ShardRecord[] = [];
    // One watch delivers every current value in a single pass (no request per key).
    // initializedFn may run before watch() returns (an empty bucket), hence the flag.
    let initialized = false;
    let iter: Awaited<ReturnType<KV['watch']>> | undefined = undefined;
    iter = await this.kv.watch({
      key: `shards.${epoch}.>`,
      ignoreDeletes: true,
      initializedFn: () => {
        initialized = true;
        iter?.stop();
      },
    });
    if (initialized) iter.stop();
    for await (const e of iter) {
      if (e.operation === 'PUT' && e.value.length > 0) out.push(JSON.parse(dec.decode(e.value)) as ShardRecord);
    }
    return out;
  }

  private async getJson<T>(key: string): Promise<T | undefined> {
    const e = await this.kv.get(key);
    if (!e || e.operation !== 'PUT' || e.value.length === 0) return undefined;
    return JSON.parse(dec.decode(e.value)) as T;
  }

  private putJson(key: string, value: unknown): Promise<number> {
    return this.kv.put(key, enc.encode(JSON.stringify(value)));
  }
}

/** Runs `fn`, trying again while JetStream does not answer yet (a server just restarted: 503 / timeout), up to `ms`. */
async function whileStarting<T>(fn: () => Promise<T>, ms: number): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      const code = String((err as { code?: unknown }).code ?? '');
      const transient = code === '503' || code === 'TIMEOUT' || /no responders|timeout|disconnect/i.test((err as Error).message);
      if (!transient || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}
