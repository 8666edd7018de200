// The kustomize base and example overlay, rendered by the real `kubectl kustomize` and validated offline
// against the upstream Kubernetes schemas (unknown fields rejected); the example TrainingRun against the
// generated CRD. No API server can run here, so this is as far as the manifests can be tested.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { parseAllDocuments } from 'yaml';
import { crdValidator, isBuiltIn, podSpecs, unknownFields, validateBuiltIn } from './k8s-validate.ts';
import { parseSpec } from '../../src/operator/reconcile.ts';
import { trainingRunCrd } from '../../src/operator/crd.ts';

type Obj = Record<string, any>;

function kustomize(dir: string): Obj[] {
  const out = execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8' });
  return parseAllDocuments(out).map((d) => d.toJS() as Obj);
}

const base = kustomize('k8s/base');
const validateRun = crdValidator(trainingRunCrd());
const example = kustomize('k8s/overlays/example');

test('the kustomize base renders the CRD, operator, RBAC, NATS with JetStream, monitoring and network policies', () => {
  const kinds = base.map((o) => `${o.kind}/${o.metadata.name}`).sort();
  for (const want of [
    'CustomResourceDefinition/trainingruns.easel.dev',
    'Deployment/easel-operator',
    'ClusterRole/easel-operator',
    'ClusterRoleBinding/easel-operator',
    'ServiceAccount/easel-operator',
    'StatefulSet/nats',
    'ConfigMap/nats-config',
    'PodMonitor/easel-coordinator',
    'PrometheusRule/easel',
    'ConfigMap/easel-grafana-dashboard',
    'NetworkPolicy/nats',
  ]) {
    assert.ok(kinds.includes(want), `${want} missing from ${kinds.join(', ')}`);
  }
  const natsConf = base.find((o) => o.metadata.name === 'nats-config')!.data['nats.conf'] as string;
  assert.match(natsConf, /jetstream\s*\{/);
});

test('every built-in object of the base and the example validates against the upstream Kubernetes schema', () => {
  const builtIn = example.filter(isBuiltIn);
  assert.ok(builtIn.length >= 12, `only ${builtIn.length} built-in objects`);
  for (const obj of builtIn) validateBuiltIn(obj);
  // What is not built in is exactly the custom resources (no upstream schema for Prometheus Operator's here).
  assert.deepEqual(example.filter((o) => !isBuiltIn(o)).map((o) => o.kind).sort(), ['PodMonitor', 'PrometheusRule', 'TrainingRun']);
});

test('the validator rejects an unknown field and a wrong type, so the check above can fail', () => {
  const deployment = structuredClone(base.find((o) => o.kind === 'Deployment')!);
  deployment.spec.template.spec.containers[0].imagePullPolicyy = 'Always';
  assert.throws(() => validateBuiltIn(deployment), /unknown fields .*containers\[0\]\.imagePullPolicyy/);
  const typo = structuredClone(base.find((o) => o.kind === 'StatefulSet')!);
  typo.spec.replicas = 'one';
  assert.throws(() => validateBuiltIn(typo));
  assert.deepEqual(unknownFields({ metadata: { name: 'x', lables: {} } }, 'V1ConfigMap'), ['.metadata.lables']);
});

test('the CRD that kustomize renders is the one generated from the zod schema', () => {
  const crd = base.find((o) => o.kind === 'CustomResourceDefinition')!;
  assert.deepEqual(crd, trainingRunCrd());
  const columns = crd.spec.versions[0].additionalPrinterColumns.map((c: Obj) => c.name.toUpperCase());
  for (const c of ['PHASE', 'STAGE', 'STEP', 'LOSS', 'AGE']) assert.ok(columns.includes(c), c);
  assert.deepEqual(crd.spec.versions[0].subresources, { status: {} });
});

test('the example TrainingRun validates against the CRD schema and against the run-file schema', () => {
  const run = example.find((o) => o.kind === 'TrainingRun')!;
  assert.deepEqual(validateRun(run), []);
  const parsed = parseSpec(run.spec);
  assert.ok(parsed.ok, parsed.ok ? '' : parsed.error);
});

test('a TrainingRun with a misspelt or mistyped field is rejected by the CRD schema, naming it', () => {
  const run = structuredClone(example.find((o) => o.kind === 'TrainingRun')!);
  run.spec.run.stages.prior.stepz = 5;
  run.spec.trainers.gpus = 'two';
  const errors = validateRun(run);
  assert.ok(errors.some((e) => e.includes('/spec/run/stages/prior') && e.includes('stepz')), errors.join('\n'));
  assert.ok(errors.some((e) => e.startsWith('/spec/trainers/gpus')), errors.join('\n'));
});

test('every pod runs as non-root with a read-only root filesystem and no privilege escalation', () => {
  const pods = podSpecs(example);
  assert.ok(pods.length >= 2);
  for (const { owner, spec } of pods) {
    assert.equal(spec.securityContext?.runAsNonRoot, true, owner);
    for (const c of spec.containers) {
      assert.equal(c.securityContext?.readOnlyRootFilesystem, true, `${owner} ${c.name}`);
      assert.equal(c.securityContext?.allowPrivilegeEscalation, false, `${owner} ${c.name}`);
      assert.deepEqual(c.securityContext?.capabilities?.drop, ['ALL'], `${owner} ${c.name}`);
    }
  }
});

test('no manifest carries a credential: no Secret objects, no literal values for secret-looking variables', () => {
  assert.deepEqual(example.filter((o) => o.kind === 'Secret'), []);
  for (const { owner, spec } of podSpecs(example)) {
    for (const c of spec.containers) {
      for (const e of c.env ?? []) {
        if (/SECRET|PASSWORD|TOKEN|KEY/i.test(e.name)) assert.equal(e.value, undefined, `${owner}: ${e.name} set literally`);
      }
    }
  }
});

test('the operator may read TrainingRuns and write only their status, and never reads Secrets', () => {
  const role = base.find((o) => o.kind === 'ClusterRole')!;
  const rules = role.rules as { apiGroups: string[]; resources: string[]; verbs: string[] }[];
  for (const r of rules) assert.ok(!r.resources.includes('*') && !r.verbs.includes('*') && !r.apiGroups.includes('*'), JSON.stringify(r));
  assert.ok(!rules.some((r) => r.resources.includes('secrets')));
  const runs = rules.find((r) => r.resources.includes('trainingruns'))!;
  assert.deepEqual([...runs.verbs].sort(), ['get', 'list', 'watch']);
  assert.ok(rules.some((r) => r.resources.includes('trainingruns/status') && r.verbs.includes('patch')));
});
