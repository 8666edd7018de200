// Who trains: trainers register and heartbeat; the coordinator groups the live ones into a generation (world
// size, ranks, ring order). A trainer whose heartbeats stop for `heartbeatTimeoutMs` is declared dead, which
// starts a new generation of the survivors; a trainer that registers while a generation runs waits and enters at
// the next one. Elastic between minTrainers and maxTrainers: below min the run waits; a trainer registering while
// maxTrainers are registered is refused (`register` answers `accepted: false`, the coordinator's reply `full`),
// not queued.

export interface Member {
  id: string;
  /** Registration order, kept for life: ranks follow it, so survivors keep their relative ring positions. */
  joinedSeq: number;
  lastHeartbeat: number;
}

export interface Generation {
  /** Starts at 1; 0 means no generation has formed yet. */
  number: number;
  /** Trainer ids in ring order; rank = index. */
  ring: string[];
  formedAt: number;
}

export interface MembershipOptions {
  heartbeatTimeoutMs: number;
  minTrainers: number;
  maxTrainers: number;
}

/** Plain-JSON state, persisted by the coordinator. */
export interface MembershipState {
  nextSeq: number;
  members: Member[];
  generation: Generation;
  changes: number;
}

export type Registration = { accepted: true; generation: number; waiting: boolean } | { accepted: false; reason: string };

/** What a trainer learns from a heartbeat: its rank in the current generation, or that it must wait/re-register. */
export type HeartbeatReply = { known: false } | { known: true; generation: number; rank: number | undefined; worldSize: number };

export interface TickResult {
  /** Trainers declared dead this tick. */
  dead: string[];
  /** The new generation, if one formed. */
  formed?: Generation;
}

export class Membership {
  private members = new Map<string, Member>();
  private nextSeq = 0;
  generation: Generation = { number: 0, ring: [], formedAt: 0 };
  /** Generations formed after the first (each one a change in the fleet). */
  changes = 0;

  constructor(readonly opts: MembershipOptions) {}

  /** A trainer announces itself. A known id re-registering (e.g. after a reconnect) just counts as a heartbeat. */
  register(id: string, now: number): Registration {
    const known = this.members.get(id);
    if (known) {
      known.lastHeartbeat = now;
      return { accepted: true, generation: this.generation.number, waiting: !this.generation.ring.includes(id) };
    }
    if (this.members.size >= this.opts.maxTrainers) {
      return { accepted: false, reason: `the run already has maxTrainers=${this.opts.maxTrainers} trainers` };
    }
    this.members.set(id, { id, joinedSeq: this.nextSeq++, lastHeartbeat: now });
    return { accepted: true, generation: this.generation.number, waiting: true };
  }

  heartbeat(id: string, now: number): HeartbeatReply {
    const m = this.members.get(id);
    if (!m) return { known: false };
    m.lastHeartbeat = now;
    const rank = this.generation.ring.indexOf(id);
    return { known: true, generation: this.generation.number, rank: rank < 0 ? undefined : rank, worldSize: this.generation.ring.length };
  }

  /** Counts every member as heard from at `now` (the coordinator was cut off, so its silence proves nothing). */
  refreshHeartbeats(now: number): void {
    for (const m of this.members.values()) m.lastHeartbeat = now;
  }

  /** The coordinator could not read heartbeats for `ms` (its process stalled): that time does not count as silence. */
  excuseStall(ms: number, now: number): void {
    for (const m of this.members.values()) m.lastHeartbeat = Math.min(now, m.lastHeartbeat + ms);
  }

  /** A trainer leaves cleanly; the next tick forms a generation without it. */
  leave(id: string): boolean {
    return this.members.delete(id);
  }

  rankOf(id: string): number | undefined {
    const r = this.generation.ring.indexOf(id);
    return r < 0 ? undefined : r;
  }

  /** Registered trainers (in the generation or waiting to enter). */
  ids(): string[] {
    return [...this.members.keys()];
  }

  get size(): number {
    return this.members.size;
  }

  /** True when a generation of at least minTrainers is running. */
  ready(): boolean {
    return this.generation.number > 0 && this.generation.ring.length >= this.opts.minTrainers && this.generation.ring.every((id) => this.members.has(id));
  }

  /**
   * Declares trainers without a heartbeat for heartbeatTimeoutMs dead; forms a new generation when the fleet
   * differs from the current generation's ring (a death, a departure, or a joiner) and at least minTrainers live.
   * With `admitJoiners: false` (mid-step), joiners alone do not form a generation: they enter at the next one a
   * death or departure forms, or at the next call with admitJoiners (at a step boundary).
   */
  tick(now: number, { admitJoiners = true }: { admitJoiners?: boolean } = {}): TickResult {
    const dead: string[] = [];
    for (const m of this.members.values()) {
      if (now - m.lastHeartbeat > this.opts.heartbeatTimeoutMs) dead.push(m.id);
    }
    for (const id of dead) this.members.delete(id);
    const live = [...this.members.values()].sort((a, b) => a.joinedSeq - b.joinedSeq).map((m) => m.id);
    const ring = this.generation.ring;
    const same = live.length === ring.length && live.every((id, i) => ring[i] === id);
    const lostSome = ring.some((id) => !this.members.has(id));
    if (!same && !lostSome && !admitJoiners && ring.length > 0) return { dead };
    if (same || live.length < this.opts.minTrainers) {
      if (!same && this.generation.ring.length > 0 && live.length < this.opts.minTrainers && lostSome) {
        // Too few left to train: the running generation is void; the next one forms when enough trainers are back.
        this.generation = { number: this.generation.number, ring: [], formedAt: now };
      }
      return { dead };
    }
    if (this.generation.number > 0) this.changes++;
    this.generation = { number: this.generation.number + 1, ring: live, formedAt: now };
    return { dead, formed: this.generation };
  }

  /**
   * A new generation of the same ring (after a NATS outage, whose collectives in flight are lost: the ranks meet
   * again and re-sync from rank 0). None while no generation runs.
   */
  reform(now: number): Generation | undefined {
    if (!this.ready()) return undefined;
    this.changes++;
    this.generation = { number: this.generation.number + 1, ring: [...this.generation.ring], formedAt: now };
    return this.generation;
  }

  toJSON(): MembershipState {
    return { nextSeq: this.nextSeq, members: [...this.members.values()].map((m) => ({ ...m })), generation: { ...this.generation, ring: [...this.generation.ring] }, changes: this.changes };
  }

  /** Rebuilds from persisted state. Heartbeats restart at `now`: a restarted coordinator gives every trainer a full timeout. */
  static fromJSON(s: MembershipState, opts: MembershipOptions, now: number): Membership {
    const m = new Membership(opts);
    m.nextSeq = s.nextSeq;
    for (const x of s.members) m.members.set(x.id, { ...x, lastHeartbeat: now });
    m.generation = { ...s.generation, ring: [...s.generation.ring] };
    m.changes = s.changes;
    return m;
  }
}
