// The coordinator's Prometheus metrics, one registry per coordinator. Names are stable (dashboards and alerts use
// them) and listed in docs/coordinator.md; units by convention: _seconds, _bytes, _total for counters.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export type CoordinatorMetrics = ReturnType<typeof createMetrics>;

/** `checkpointAgeSeconds` is read at each scrape (undefined: no checkpoint yet). */
export function createMetrics(run: string, checkpointAgeSeconds: () => number | undefined) {
  const registry = new Registry();
  registry.setDefaultLabels({ run });
  collectDefaultMetrics({ register: registry, prefix: 'easel_coordinator_' });
  const r = [registry];
  return {
    registry,
    stepSeconds: new Histogram({ name: 'easel_step_seconds', help: 'wall time of one training step as reported by each trainer', labelNames: ['stage'], buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60], registers: r }),
    samplesPerSecond: new Gauge({ name: 'easel_samples_per_second', help: 'samples per second over the fleet (every rank\'s samples of the last completed step / its first reporter\'s step time)', labelNames: ['stage'], registers: r }),
    loss: new Gauge({ name: 'easel_loss', help: 'loss of the last completed step (rank 0)', labelNames: ['stage'], registers: r }),
    validationLoss: new Gauge({ name: 'easel_validation_loss', help: 'held-out loss of the stage at its last validation (rank 0; validation.every in the run file)', labelNames: ['stage'], registers: r }),
    gradNorm: new Gauge({ name: 'easel_grad_norm', help: 'global gradient norm of the last completed step, before clipping (rank 0)', labelNames: ['stage'], registers: r }),
    step: new Gauge({ name: 'easel_step', help: 'optimiser steps completed over the whole run', registers: r }),
    stepsTotal: new Counter({ name: 'easel_steps_total', help: 'steps completed, by stage', labelNames: ['stage'], registers: r }),
    stepsSkipped: new Counter({ name: 'easel_steps_skipped_total', help: 'steps every rank skipped together because the all-reduced gradient was not finite (NaN/Inf), by stage', labelNames: ['stage'], registers: r }),
    allreduceBytes: new Counter({ name: 'easel_allreduce_bytes_total', help: 'bytes the trainers\' rings sent for gradient all-reduces and CLIP embedding all-gathers (chunk headers included), summed over trainers', registers: r }),
    allreduceSeconds: new Counter({ name: 'easel_allreduce_seconds_total', help: 'time trainers spent in all-reduces, summed over trainers', registers: r }),
    dataWaitSeconds: new Counter({ name: 'easel_data_wait_seconds_total', help: 'time trainers waited for batches, summed over trainers', registers: r }),
    members: new Gauge({ name: 'easel_members', help: 'trainers in the current generation', registers: r }),
    registered: new Gauge({ name: 'easel_registered_trainers', help: 'registered trainers, including those waiting for the next generation', registers: r }),
    generation: new Gauge({ name: 'easel_generation', help: 'number of the current generation', registers: r }),
    generationChanges: new Counter({ name: 'easel_generation_changes_total', help: 'generations formed after the first (a trainer died, left or joined)', registers: r }),
    superseded: new Gauge({ name: 'easel_coordinator_superseded', help: '1 once another coordinator claimed this run (this one stopped answering)', registers: r }),
    leaderTerm: new Gauge({ name: 'easel_coordinator_term', help: 'leadership term of this coordinator (each coordinator started for the run claims the next)', registers: r }),
    trainerDeaths: new Counter({ name: 'easel_trainer_deaths_total', help: 'trainers declared dead for missing heartbeats', registers: r }),
    shards: new Gauge({ name: 'easel_shards', help: 'shards of the current epoch by state', labelNames: ['state'], registers: r }),
    samplesSeen: new Gauge({ name: 'easel_samples_seen', help: 'samples consumed this epoch (gradients applied), each counted once', registers: r }),
    expectedSamples: new Gauge({ name: 'easel_expected_samples', help: 'samples the run applies if it ends normally: its step budgets or epochs, whichever ends it first (at the current world size)', registers: r }),
    epoch: new Gauge({ name: 'easel_epoch', help: 'current epoch (0-based)', registers: r }),
    leasesGranted: new Counter({ name: 'easel_leases_total', help: 'shard leases granted', registers: r }),
    leasesReclaimed: new Counter({ name: 'easel_leases_reclaimed_total', help: 'leases returned to pending, by cause', labelNames: ['cause'], registers: r }),
    refusals: new Counter({ name: 'easel_lease_refusals_total', help: 'progress/complete reports refused, by reason', labelNames: ['reason'], registers: r }),
    requests: new Counter({ name: 'easel_coordinator_requests_total', help: 'requests handled, by verb and outcome', labelNames: ['verb', 'outcome'], registers: r }),
    requestSeconds: new Histogram({ name: 'easel_coordinator_request_seconds', help: 'time to handle one request, state write included', labelNames: ['verb'], buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1], registers: r }),
    checkpointSeconds: new Histogram({ name: 'easel_checkpoint_seconds', help: 'time rank 0 took to write a checkpoint', buckets: [0.1, 0.5, 1, 2, 5, 10, 30, 60, 300], registers: r }),
    checkpointAge: new Gauge({ name: 'easel_checkpoint_age_seconds', help: 'seconds since the latest checkpoint was reported (absent before the first)', registers: r,
      collect() {
        const age = checkpointAgeSeconds();
        if (age !== undefined) this.set(age);
      },
    }),
    checkpointStep: new Gauge({ name: 'easel_checkpoint_step', help: 'step of the latest checkpoint', registers: r }),
    resumedStep: new Gauge({ name: 'easel_coordinator_resumed_step', help: 'run step this coordinator resumed at from JetStream KV (absent when it started a fresh run)', registers: r }),
    natsDisconnects: new Counter({ name: 'easel_coordinator_nats_disconnects_total', help: 'times the coordinator lost its NATS connection (heartbeat timeouts pause until it is back)', registers: r }),
    natsReconnects: new Counter({ name: 'easel_coordinator_nats_reconnects_total', help: 'times the coordinator reconnected to NATS (every trainer then gets a full heartbeat timeout)', registers: r }),
    stateWriteFailures: new Counter({ name: 'easel_coordinator_state_write_failures_total', help: 'writes of the run state to JetStream KV that failed (the request is answered unavailable and retried)', registers: r }),
    filterDropped: new Gauge({ name: 'easel_filter_dropped_samples', help: 'samples the filter dropped from this run\'s dataset, by reason (from its stats.json)', labelNames: ['reason'], registers: r }),
  };
}
