// deriveStatus(): the coordinator's /status (or its absence) → the TrainingRun's status. Pure; every status it
// returns is validated against the CRD's status schema (ajv) and the zod TrainingRunStatus.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { deriveStatus, reconcile, type Observation } from '../../src/operator/reconcile.ts';
import { TrainingRunStatus, type TrainingRun } from '../../src/operator/spec.ts';
import { trainingRunCrd } from '../../src/operator/crd.ts';
import { crdValidator } from './k8s-validate.ts';

const example = parseYaml(readFileSync('k8s/overlays/example/trainingrun.yaml', 'utf8')) as TrainingRun;
example.metadata.generation = 2;
const validateRun = crdValidator(trainingRunCrd());
const now = new Date('2026-01-02T03:04:05Z');

// Shaped like src/coordinator/service.ts's CoordinatorStatus.
const coordinatorBody = {
  run: 'laion-small',
  phase: 'training',
  stage: 'prior',
  stage_step: 120,
  step: 20120,
  epoch: 0,
  epochs: 1,
  loss: 0.0831,
  generation: 4,
  members: ['t-0', 't-1', 't-3'],
  registered: 3,
  shards: { done: 10, leased: 3, pending: 40 },
  samples_seen: 1000,
  expected_samples: 5000,
  checkpoint: { step: 20000, key: 'ckpt/00020000', at: 0, age_seconds: 12 },
};

function status(run: TrainingRun, obs: Partial<Observation>) {
  const s = deriveStatus(run, reconcile(run), { coordinator: { ok: true, body: coordinatorBody }, now, ...obs });
  // The status must be storable: valid for the CRD's status schema and for the zod one.
  assert.deepEqual(validateRun({ ...example, status: s }), []);
  TrainingRunStatus.parse(s);
  return s;
}
const cond = (s: TrainingRunStatus, type: string) => s.conditions.find((c) => c.type === type);

test('a training coordinator gives phase Running with its stage, step, loss, trainers, generation and checkpoint', () => {
  const s = status(example, {});
  assert.equal(s.phase, 'Running');
  assert.equal(s.stage, 'prior');
  assert.equal(s.step, 20120);
  assert.equal(s.loss, 0.0831);
  assert.equal(s.readyTrainers, 3);
  assert.equal(s.generation, 4);
  assert.equal(s.lastCheckpoint, 'ckpt/00020000');
  assert.equal(s.observedGeneration, 2);
  assert.equal(cond(s, 'Ready')?.status, 'True');
  assert.equal(cond(s, 'ConfigValid')?.status, 'True');
});

test('fewer trainers than trainers.min is Running but not Ready (TooFewTrainers)', () => {
  const s = status(example, { coordinator: { ok: true, body: { ...coordinatorBody, members: ['t-0'] } } });
  assert.equal(s.phase, 'Running');
  assert.equal(cond(s, 'Ready')?.status, 'False');
  assert.equal(cond(s, 'Ready')?.reason, 'TooFewTrainers');
});

test('a coordinator that says done gives Succeeded', () => {
  assert.equal(status(example, { coordinator: { ok: true, body: { ...coordinatorBody, phase: 'done' } } }).phase, 'Succeeded');
});

test('a non-finite loss is stored as null (the CRD field is a number)', () => {
  assert.equal(status(example, { coordinator: { ok: true, body: { ...coordinatorBody, loss: null } } }).loss, null);
});

test('an unreachable coordinator before the run started is Starting; after, Running and Degraded with progress kept', () => {
  const first = status(example, { coordinator: { ok: false, reason: 'connect ECONNREFUSED' } });
  assert.equal(first.phase, 'Starting');
  assert.equal(cond(first, 'Ready')?.message, 'connect ECONNREFUSED');
  const running = { ...example, status: status(example, {}) };
  const later = status(running, { coordinator: { ok: false, reason: 'timeout' } });
  assert.equal(later.phase, 'Running');
  assert.equal(later.step, 20120);
  assert.equal(later.lastCheckpoint, 'ckpt/00020000');
  assert.equal(cond(later, 'Degraded')?.reason, 'CoordinatorUnreachable');
});

test('a malformed /status body is reported, not trusted', () => {
  const s = status(example, { coordinator: { ok: true, body: { phase: 7, step: -3 } } });
  assert.equal(s.phase, 'Starting');
  assert.equal(cond(s, 'Ready')?.reason, 'BadCoordinatorStatus');
  assert.match(cond(s, 'Ready')!.message, /phase/);
});

test('a failed trainer Job fails the run; suspend gives Suspended', () => {
  const failed = status(example, { trainersJob: { failed: 7, conditions: [{ type: 'Failed', status: 'True' }] } });
  assert.equal(failed.phase, 'Failed');
  assert.equal(cond(failed, 'Ready')?.reason, 'TrainersFailed');
  const suspended = { ...example, spec: { ...(example.spec as object), suspend: true } };
  assert.equal(status(suspended, {}).phase, 'Suspended');
});

test('an invalid spec gives Failed with ConfigValid False naming the field', () => {
  const bad = structuredClone(example);
  (bad.spec as any).run.stages.clip.steps = 'many';
  const s = status(bad, {});
  assert.equal(s.phase, 'Failed');
  assert.equal(cond(s, 'ConfigValid')?.status, 'False');
  assert.match(cond(s, 'ConfigValid')!.message, /spec\.run\.stages\.clip\.steps/);
});

test('a condition keeps its lastTransitionTime while its status does not change', () => {
  const before = status(example, {});
  const later = new Date(now.getTime() + 60_000);
  const again = status({ ...example, status: before }, { now: later });
  assert.equal(cond(again, 'Ready')?.lastTransitionTime, now.toISOString());
  const flipped = status({ ...example, status: before }, { now: later, coordinator: { ok: true, body: { ...coordinatorBody, members: [] } } });
  assert.equal(cond(flipped, 'Ready')?.lastTransitionTime, later.toISOString());
});
