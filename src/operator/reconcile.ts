// The operator's logic as pure functions: a TrainingRun → the objects that should exist (reconcile), and the
// coordinator's /status → the TrainingRun's status (deriveStatus). The watch loop (controller.ts) only applies
// what these return, so everything that decides anything is tested directly, without an API server.
import { stringify as toYaml } from 'yaml';
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { formatZodError } from '../cli/args.ts';
import { API_VERSION, KIND, TrainingRunSpec, type Condition, type Phase, type TrainingRun, type TrainingRunStatus } from './spec.ts';

/** The coordinator's HTTP port (its CoordinatorConfig.httpPort default, listening on 0.0.0.0). */
export const METRICS_PORT = 9464;
const RUN_FILE_DIR = '/etc/easel';

type Obj = Record<string, any>;

export type DesiredObjects =
  | { ok: true; spec: TrainingRunSpec; objects: Obj[] }
  | { ok: false; error: string; objects: [] };

/** Names of the objects a run owns (the coordinator's Service and NetworkPolicy share its name). */
export function ownedNames(runName: string) {
  return { config: `${runName}-run`, coordinator: `${runName}-coordinator`, trainers: `${runName}-trainers` };
}

/** Validates the spec with the same zod schema as the run file; the error names each bad field (spec.run.…). */
export function parseSpec(spec: unknown): { ok: true; spec: TrainingRunSpec } | { ok: false; error: string } {
  const r = TrainingRunSpec.safeParse(spec ?? {});
  return r.success ? { ok: true, spec: r.data } : { ok: false, error: formatZodError(r.error, 'spec') };
}

/** Everything that should exist for this run: run-file ConfigMap, coordinator Deployment + Service + NetworkPolicy, trainer Job. */
export function reconcile(run: TrainingRun): DesiredObjects {
  const parsed = parseSpec(run.spec);
  if (!parsed.ok) return { ok: false, error: parsed.error, objects: [] };
  const spec = parsed.spec;
  const name = run.metadata.name;
  const namespace = run.metadata.namespace ?? 'default';
  const names = ownedNames(name);
  // The run file both `easel coordinator` and `easel trainer` read: the validated run, its `coordinator` section
  // overridden where the cluster decides (elastic bounds from spec.trainers; HTTP on all interfaces so the Service
  // and Prometheus reach it).
  const coordinatorSection = { ...spec.run.coordinator, minTrainers: spec.trainers.min, maxTrainers: spec.trainers.max, httpHost: '0.0.0.0', httpPort: METRICS_PORT };
  const runFile = toYaml({ ...spec.run, coordinator: coordinatorSection }, { sortMapEntries: false });
  const runId = spec.run.name; // the coordinator names the run after the run file's name
  const configHash = createHash('sha256').update(runFile).digest('hex').slice(0, 16);
  const natsUrl = spec.nats.url ?? spec.nats.managedUrl;

  const meta = (objName: string, component: string) => ({
    name: objName,
    namespace,
    labels: labels(name, component),
    ownerReferences: [{ apiVersion: API_VERSION, kind: KIND, name, uid: run.metadata.uid ?? '', controller: true, blockOwnerDeletion: true }],
  });

  const configMap = {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: meta(names.config, 'config'),
    data: { 'run.yaml': runFile },
  };

  const volumes: Obj[] = [
    { name: 'run', configMap: { name: names.config } },
    { name: 'tmp', emptyDir: {} },
  ];
  const mounts: Obj[] = [
    { name: 'run', mountPath: RUN_FILE_DIR, readOnly: true },
    { name: 'tmp', mountPath: '/tmp' },
  ];
  if (spec.nats.credentialsSecret) {
    volumes.push({ name: 'nats-creds', secret: { secretName: spec.nats.credentialsSecret } });
    mounts.push({ name: 'nats-creds', mountPath: '/var/run/secrets/nats', readOnly: true });
  }
  const env: Obj[] = [
    { name: 'NATS_URL', value: natsUrl },
    { name: 'EASEL_RUN', value: runId },
    ...(spec.nats.credentialsSecret ? [{ name: 'NATS_CREDS', value: '/var/run/secrets/nats/nats.creds' }] : []),
    ...(spec.extraEnv ?? []).map((e) => ({ name: e.name, valueFrom: { secretKeyRef: e.secretKeyRef } })),
  ];
  const envFrom = spec.storageSecret ? [{ secretRef: { name: spec.storageSecret } }] : undefined;

  const container = (cname: string, args: string[], resources: Obj, ports?: Obj[]) => ({
    name: cname,
    image: spec.image,
    imagePullPolicy: spec.imagePullPolicy,
    args,
    env,
    ...(envFrom ? { envFrom } : {}),
    ...(ports ? { ports } : {}),
    resources,
    volumeMounts: mounts,
    securityContext: CONTAINER_SECURITY,
  });

  const coordinatorLabels = labels(name, 'coordinator');
  // The coordinator resumes by itself from its JetStream state; the weights come from checkpoints via the trainers.
  const coordinatorArgs = ['coordinator', '--config', `${RUN_FILE_DIR}/run.yaml`, '--nats', natsUrl];
  const trainerArgs = ['trainer', '--config', `${RUN_FILE_DIR}/run.yaml`, '--nats', natsUrl, '--run', runId, '--resume', spec.resumePolicy === 'Latest' ? 'latest' : 'none'];
  const coordinator = {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: meta(names.coordinator, 'coordinator'),
    spec: {
      replicas: spec.suspend ? 0 : 1,
      strategy: { type: 'Recreate' }, // never two coordinators for one run
      selector: { matchLabels: coordinatorLabels },
      template: {
        metadata: { labels: coordinatorLabels, annotations: { 'easel.dev/config-hash': configHash } },
        spec: {
          ...podBasics(spec),
          volumes,
          containers: [
            {
              ...container('coordinator', coordinatorArgs, compact(spec.coordinator.resources), [{ name: 'http-metrics', containerPort: METRICS_PORT, protocol: 'TCP' }]),
              readinessProbe: { httpGet: { path: '/readyz', port: 'http-metrics' }, periodSeconds: 10 },
              livenessProbe: { httpGet: { path: '/healthz', port: 'http-metrics' }, periodSeconds: 20, failureThreshold: 6 },
            },
          ],
        },
      },
    },
  };

  const service = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: meta(names.coordinator, 'coordinator'),
    spec: { selector: coordinatorLabels, ports: [{ name: 'http-metrics', port: METRICS_PORT, targetPort: 'http-metrics', protocol: 'TCP' }] },
  };

  const gpu = spec.trainers.gpus;
  const trainerResources = compact({
    requests: { ...spec.trainers.resources.requests, ...(gpu ? { 'nvidia.com/gpu': String(gpu) } : {}) },
    limits: { ...spec.trainers.resources.limits, ...(gpu ? { 'nvidia.com/gpu': String(gpu) } : {}) },
  });
  const trainerLabels = labels(name, 'trainer');
  const trainers = {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: meta(names.trainers, 'trainer'),
    spec: {
      // Indexed: each pod gets JOB_COMPLETION_INDEX (its stable slot); ranks themselves come from the
      // coordinator's generation, so fewer than max running pods is fine down to trainers.min.
      completionMode: 'Indexed',
      completions: spec.trainers.max,
      parallelism: spec.trainers.max,
      backoffLimit: spec.backoffLimit,
      suspend: spec.suspend,
      template: {
        metadata: { labels: trainerLabels, annotations: { 'easel.dev/config-hash': configHash } },
        spec: {
          ...podBasics(spec),
          restartPolicy: 'OnFailure',
          volumes,
          ...(spec.trainers.nodeSelector ? { nodeSelector: spec.trainers.nodeSelector } : {}),
          ...(gpu ? { tolerations: [{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }] } : {}),
          containers: [
            // Trainers report their counters to the coordinator, which exports them; they serve no port.
            container('trainer', trainerArgs, trainerResources),
          ],
        },
      },
    },
  };

  // Only the operator (reading /status) and Prometheus (monitoring namespace) may reach the coordinator's port;
  // trainers talk to it over NATS, not HTTP.
  const networkPolicy = {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: meta(names.coordinator, 'coordinator'),
    spec: {
      podSelector: { matchLabels: coordinatorLabels },
      policyTypes: ['Ingress'],
      ingress: [
        {
          from: [
            { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'easel-system' } }, podSelector: { matchLabels: { 'app.kubernetes.io/name': 'easel-operator' } } },
            { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } },
          ],
          ports: [{ port: METRICS_PORT, protocol: 'TCP' }],
        },
      ],
    },
  };

  return { ok: true, spec, objects: [configMap, service, coordinator, trainers, networkPolicy] };
}

const CONTAINER_SECURITY = {
  runAsNonRoot: true,
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  capabilities: { drop: ['ALL'] },
};

function podBasics(spec: TrainingRunSpec): Obj {
  return {
    ...(spec.serviceAccountName ? { serviceAccountName: spec.serviceAccountName } : {}),
    automountServiceAccountToken: false, // the run's pods never talk to the API server
    securityContext: { runAsNonRoot: true, runAsUser: 10001, runAsGroup: 10001, fsGroup: 10001, seccompProfile: { type: 'RuntimeDefault' } },
  };
}

function labels(run: string, component: string): Record<string, string> {
  return { 'app.kubernetes.io/name': 'easel', 'app.kubernetes.io/instance': run, 'app.kubernetes.io/component': component, 'easel.dev/run': run };
}

/** Drops empty request/limit maps so the output carries no `{}` noise. */
function compact(r: { requests?: Record<string, unknown>; limits?: Record<string, unknown> }): Obj {
  const out: Obj = {};
  if (r.requests && Object.keys(r.requests).length) out.requests = r.requests;
  if (r.limits && Object.keys(r.limits).length) out.limits = r.limits;
  return out;
}

// ---- status ------------------------------------------------------------------------------------------

/** The part of the coordinator's /status (src/coordinator/service.ts) the operator reads; other fields are ignored. */
export const CoordinatorStatus = z.looseObject({
  phase: z.string(),
  stage: z.string().optional(),
  step: z.number().int().min(0).optional(),
  loss: z.number().nullable().optional(),
  generation: z.number().int().min(0).optional(),
  members: z.array(z.string()).optional(),
  checkpoint: z.looseObject({ key: z.string(), step: z.number().optional() }).nullable().optional(),
});
export type CoordinatorStatus = z.infer<typeof CoordinatorStatus>;

/** What the controller observed this round. */
export interface Observation {
  /** The coordinator's /status body, or the reason it could not be read. */
  coordinator: { ok: true; body: unknown } | { ok: false; reason: string };
  /** The trainer Job's status (failed > backoffLimit ends the run). */
  trainersJob?: { active?: number; failed?: number; succeeded?: number; conditions?: { type: string; status: string }[] };
  now: Date;
}


/** The TrainingRun's status from the spec's validity and what was observed; pure. */
export function deriveStatus(run: TrainingRun, desired: DesiredObjects, obs: Observation): TrainingRunStatus {
  const prev = run.status ?? {};
  const conds: Condition[] = [];
  const cond = (type: string, ok: boolean | 'Unknown', reason: string, message: string) => {
    const status = ok === 'Unknown' ? 'Unknown' : ok ? 'True' : 'False';
    const before = prev.conditions?.find((c) => c.type === type);
    const lastTransitionTime = before && before.status === status ? before.lastTransitionTime : obs.now.toISOString();
    conds.push({ type, status, reason, message, lastTransitionTime });
  };
  const base = { observedGeneration: run.metadata.generation, readyTrainers: 0 };

  if (!desired.ok) {
    cond('ConfigValid', false, 'InvalidSpec', desired.error);
    cond('Ready', false, 'InvalidSpec', 'fix the spec; nothing was created');
    return { ...base, phase: 'Failed', conditions: conds };
  }
  cond('ConfigValid', true, 'Valid', 'spec.run validated against the run-file schema');
  const spec = desired.spec;

  if (spec.suspend) {
    cond('Ready', false, 'Suspended', 'spec.suspend is true; pods are stopped, checkpoints kept');
    return { ...keepProgress(prev), ...base, phase: 'Suspended', conditions: conds };
  }

  const job = obs.trainersJob;
  const jobFailed = job?.conditions?.some((c) => c.type === 'Failed' && c.status === 'True') ?? false;
  if (jobFailed) {
    cond('Ready', false, 'TrainersFailed', `trainer pods failed more than spec.backoffLimit (${spec.backoffLimit}) times`);
    return { ...keepProgress(prev), ...base, phase: 'Failed', conditions: conds };
  }

  if (!obs.coordinator.ok) {
    const started = prev.phase === 'Running';
    cond('Ready', false, 'CoordinatorUnreachable', obs.coordinator.reason);
    if (started) cond('Degraded', true, 'CoordinatorUnreachable', obs.coordinator.reason);
    return { ...keepProgress(prev), ...base, phase: started ? 'Running' : 'Starting', conditions: conds };
  }
  const parsed = CoordinatorStatus.safeParse(obs.coordinator.body);
  if (!parsed.success) {
    const reason = `coordinator /status is malformed: ${formatZodError(parsed.error)}`;
    cond('Ready', false, 'BadCoordinatorStatus', reason);
    return { ...keepProgress(prev), ...base, phase: prev.phase === 'Running' ? 'Running' : 'Starting', conditions: conds };
  }
  const s = parsed.data;
  const members = s.members?.length ?? 0;
  // The coordinator's phases: waiting (for enough trainers), training, done.
  const phase: Phase = s.phase === 'done' ? 'Succeeded' : 'Running';
  const lastCheckpoint = s.checkpoint?.key ?? prev.lastCheckpoint;
  const enough = members >= spec.trainers.min;
  if (phase === 'Running') {
    cond('Ready', enough, enough ? 'Training' : 'TooFewTrainers', `${members} of ${spec.trainers.min}–${spec.trainers.max} trainers in generation ${s.generation ?? '?'}`);
  } else {
    cond('Ready', false, 'Finished', 'every stage reached its step budget');
  }
  return {
    ...base,
    phase,
    ...(s.stage !== undefined ? { stage: s.stage } : {}),
    ...(s.step !== undefined ? { step: s.step } : {}),
    ...(s.loss !== undefined ? { loss: s.loss !== null && Number.isFinite(s.loss) ? s.loss : null } : {}),
    readyTrainers: members,
    ...(s.generation !== undefined ? { generation: s.generation } : {}),
    ...(lastCheckpoint ? { lastCheckpoint } : {}),
    conditions: conds,
  };
}

/** Progress fields carried over when the coordinator cannot be asked. */
function keepProgress(prev: Partial<TrainingRunStatus>): Partial<TrainingRunStatus> {
  const out: Partial<TrainingRunStatus> = {};
  if (prev.stage !== undefined) out.stage = prev.stage;
  if (prev.step !== undefined) out.step = prev.step;
  if (prev.loss !== undefined) out.loss = prev.loss;
  if (prev.generation !== undefined) out.generation = prev.generation;
  if (prev.lastCheckpoint !== undefined) out.lastCheckpoint = prev.lastCheckpoint;
  return out;
}
