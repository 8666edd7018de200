// reconcile(): a TrainingRun → the objects that should exist. Pure, so tested directly; every object it
// returns is validated against the upstream Kubernetes schemas with unknown fields rejected.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parse as parseYaml } from 'yaml';
import { readFileSync } from 'node:fs';
import { reconcile, ownedNames, METRICS_PORT } from '../../src/operator/reconcile.ts';
import { parseRunConfig } from '../../src/trainer/config.ts';
import { CoordinatorConfig } from '../../src/coordinator/config.ts';
import type { TrainingRun } from '../../src/operator/spec.ts';
import { podSpecs, validateBuiltIn } from './k8s-validate.ts';

type Obj = Record<string, any>;

const example = parseYaml(readFileSync('k8s/overlays/example/trainingrun.yaml', 'utf8')) as TrainingRun;
const withUid = (run: TrainingRun, patch: (spec: Obj) => void = () => {}): TrainingRun => {
  const r = structuredClone(run);
  r.metadata.uid = '6c1f3f3e-0000-4000-8000-000000000001';
  r.metadata.generation = 3;
  patch(r.spec as Obj);
  return r;
};
const byKind = (objects: Obj[], kind: string) => objects.filter((o) => o.kind === kind);

function desired(run: TrainingRun): Obj[] {
  const d = reconcile(run);
  assert.ok(d.ok, d.ok ? '' : d.error);
  return d.objects;
}

test('a TrainingRun becomes a run-file ConfigMap, coordinator Deployment + Service + NetworkPolicy, and an Indexed trainer Job', () => {
  const objects = desired(withUid(example));
  assert.deepEqual(objects.map((o) => o.kind).sort(), ['ConfigMap', 'Deployment', 'Job', 'NetworkPolicy', 'Service']);
  for (const o of objects) validateBuiltIn(o);
  const names = ownedNames('laion-small');
  assert.equal(byKind(objects, 'Job')[0].metadata.name, names.trainers);
  assert.equal(byKind(objects, 'Deployment')[0].metadata.name, names.coordinator);
  for (const o of objects) assert.equal(o.metadata.namespace, 'ml');
});

test('every owned object has a controller owner reference to the TrainingRun, so deleting it deletes them', () => {
  for (const o of desired(withUid(example))) {
    assert.deepEqual(o.metadata.ownerReferences, [
      { apiVersion: 'easel.dev/v1alpha1', kind: 'TrainingRun', name: 'laion-small', uid: '6c1f3f3e-0000-4000-8000-000000000001', controller: true, blockOwnerDeletion: true },
    ]);
  }
});

test('the ConfigMap holds the run file validated and completed with defaults, its coordinator section set from spec.trainers', () => {
  const cm = byKind(desired(withUid(example)), 'ConfigMap')[0];
  const runFile = parseYaml(cm.data['run.yaml']);
  assert.deepEqual(parseRunConfig(runFile), runFile, 'the stored run file is a fixed point of the schema');
  assert.deepEqual(runFile.coordinator, { ...CoordinatorConfig.parse({}), minTrainers: 2, maxTrainers: 4, httpHost: '0.0.0.0', httpPort: METRICS_PORT });
  assert.equal(runFile.data.train, 's3://laion-filtered/train');
  assert.equal(runFile.stages.prior.steps, 20000);
  assert.equal(runFile.stages.prior.optimizer.lr, 3e-4, 'defaults are filled in');
});

test("spec.run.coordinator's timeouts reach the run file; its trainer bounds and HTTP address come from the cluster", () => {
  const run = withUid(example, (s) => (s.run.coordinator = { leaseMs: 120_000, epochs: 3, minTrainers: 9, httpPort: 1234 }));
  const coordinator = parseYaml(byKind(desired(run), 'ConfigMap')[0].data['run.yaml']).coordinator;
  assert.equal(coordinator.leaseMs, 120_000);
  assert.equal(coordinator.epochs, 3);
  assert.equal(coordinator.minTrainers, 2);
  assert.equal(coordinator.httpPort, METRICS_PORT);
});

test('trainers.min above trainers.max is refused naming the field', () => {
  const d = reconcile(withUid(example, (s) => (s.trainers = { ...s.trainers, min: 5, max: 4 })));
  assert.ok(!d.ok && /spec\.trainers\.min: must be at most trainers\.max/.test(d.error), d.ok ? '' : d.error);
});

test('trainers request the configured GPUs, min–max drive the Job, and the run name and NATS URL reach them', () => {
  const job = byKind(desired(withUid(example)), 'Job')[0];
  assert.equal(job.spec.completionMode, 'Indexed');
  assert.equal(job.spec.parallelism, 4);
  assert.equal(job.spec.completions, 4);
  const c = job.spec.template.spec.containers[0];
  assert.equal(c.resources.limits['nvidia.com/gpu'], '1');
  assert.equal(c.resources.requests.memory, '48Gi');
  assert.deepEqual(c.args, ['trainer', '--config', '/etc/easel/run.yaml', '--nats', 'nats://nats.easel-system.svc:4222', '--run', 'laion-small', '--resume', 'latest']);
  assert.deepEqual(job.spec.template.spec.tolerations, [{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }]);
  const cpu = byKind(desired(withUid(example, (s) => (s.trainers.gpus = 0))), 'Job')[0];
  assert.equal(cpu.spec.template.spec.containers[0].resources.limits?.['nvidia.com/gpu'], undefined);
  assert.equal(cpu.spec.template.spec.tolerations, undefined);
});

test('a run that brings its own NATS uses that URL instead of the managed one', () => {
  const objects = desired(withUid(example, (s) => (s.nats = { url: 'nats://nats.example.com:4222' })));
  for (const c of podSpecs(objects).flatMap((p) => p.spec.containers)) {
    assert.ok(c.args.includes('nats://nats.example.com:4222'), c.name);
    assert.deepEqual(c.env.find((e: Obj) => e.name === 'NATS_URL'), { name: 'NATS_URL', value: 'nats://nats.example.com:4222' });
  }
});

test('suspend scales the coordinator to zero and suspends the trainer Job, keeping the config', () => {
  const objects = desired(withUid(example, (s) => (s.suspend = true)));
  assert.equal(byKind(objects, 'Deployment')[0].spec.replicas, 0);
  assert.equal(byKind(objects, 'Job')[0].spec.suspend, true);
  assert.equal(byKind(objects, 'ConfigMap').length, 1);
});

test('resumePolicy Latest makes trainers resume from the newest checkpoint; Never starts fresh', () => {
  const args = (policy: string) => byKind(desired(withUid(example, (s) => (s.resumePolicy = policy))), 'Job')[0].spec.template.spec.containers[0].args;
  assert.deepEqual(args('Latest').slice(-2), ['--resume', 'latest']);
  assert.deepEqual(args('Never').slice(-2), ['--resume', 'none']);
});

test('the run id passed to trainers is the run file\'s name (what the coordinator uses), not the resource name', () => {
  const objects = desired(withUid(example, (s) => (s.run.name = 'other-id')));
  const args = byKind(objects, 'Job')[0].spec.template.spec.containers[0].args as string[];
  assert.equal(args[args.indexOf('--run') + 1], 'other-id');
  assert.equal(byKind(objects, 'Job')[0].metadata.name, 'laion-small-trainers');
});

test('credentials come only from Secrets: storageSecret as envFrom, NATS creds as a mounted Secret', () => {
  const objects = desired(withUid(example, (s) => (s.nats = { credentialsSecret: 'nats-creds' })));
  for (const { spec } of podSpecs(objects)) {
    const c = spec.containers[0];
    assert.deepEqual(c.envFrom, [{ secretRef: { name: 'easel-s3' } }]);
    assert.ok(spec.volumes.some((v: Obj) => v.secret?.secretName === 'nats-creds'));
    for (const e of c.env) assert.ok(!/SECRET|KEY|PASSWORD|TOKEN/.test(e.name) || e.valueFrom, e.name);
  }
});

test('every pod is non-root with a read-only root filesystem and a writable /tmp only', () => {
  for (const { owner, spec } of podSpecs(desired(withUid(example)))) {
    assert.equal(spec.securityContext.runAsNonRoot, true, owner);
    assert.equal(spec.automountServiceAccountToken, false, owner);
    for (const c of spec.containers) assert.equal(c.securityContext.readOnlyRootFilesystem, true, owner);
    const writable = spec.containers[0].volumeMounts.filter((m: Obj) => !m.readOnly).map((m: Obj) => m.mountPath);
    assert.deepEqual(writable, ['/tmp'], owner);
  }
});

test('changing the run file changes the pods\' config hash (so they restart); changing suspend does not', () => {
  const hash = (objects: Obj[]) => byKind(objects, 'Deployment')[0].spec.template.metadata.annotations['easel.dev/config-hash'];
  const a = hash(desired(withUid(example)));
  assert.notEqual(hash(desired(withUid(example, (s) => (s.run.stages.decoder.steps = 1)))), a);
  assert.equal(hash(desired(withUid(example, (s) => (s.suspend = true)))), a);
});

test('the coordinator Service, probes and NetworkPolicy use the coordinator\'s HTTP port', () => {
  const objects = desired(withUid(example));
  assert.equal(byKind(objects, 'Service')[0].spec.ports[0].port, METRICS_PORT);
  const c = byKind(objects, 'Deployment')[0].spec.template.spec.containers[0];
  assert.equal(c.ports[0].containerPort, METRICS_PORT);
  assert.equal(c.readinessProbe.httpGet.path, '/readyz');
  assert.equal(c.livenessProbe.httpGet.path, '/healthz');
  assert.equal(byKind(objects, 'NetworkPolicy')[0].spec.ingress[0].ports[0].port, METRICS_PORT);
});

test('an invalid spec creates nothing and the error names each bad field by its path', () => {
  const bad = withUid(example, (s) => {
    s.run.stages.clip.steps = -1;
    s.run.data.imageSize = 48; // disagrees with stages.clip.model.imageSize (64)
    s.trainers.gpus = 'one';
  });
  const d = reconcile(bad);
  assert.equal(d.ok, false);
  assert.deepEqual(d.objects, []);
  if (d.ok) return;
  assert.match(d.error, /spec\.run\.stages\.clip\.steps:/);
  assert.match(d.error, /spec\.trainers\.gpus:/);
  const missing = reconcile({ ...withUid(example), spec: {} });
  assert.ok(!missing.ok && /spec\.run:/.test(missing.error));
});

test('reconcile is pure: the same run gives deep-equal objects and the input is not modified', () => {
  const run = withUid(example);
  const before = structuredClone(run);
  assert.deepEqual(desired(run), desired(run));
  assert.deepEqual(run, before);
});
