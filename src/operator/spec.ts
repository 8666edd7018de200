// The TrainingRun custom resource: its spec is the run file (RunConfig, embedded unchanged under spec.run)
// plus what only a cluster needs — image, trainer count, GPUs, NATS, credentials. One zod schema validates it;
// the CRD's openAPIV3Schema is generated from this schema (src/operator/crd.ts), so the two cannot drift.
import { z } from 'zod';
import { RunConfig } from '../trainer/config.ts';

export const GROUP = 'easel.dev';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;
export const KIND = 'TrainingRun';
export const PLURAL = 'trainingruns';

const Quantity = z.union([z.string(), z.number()]);
const ResourceList = z.record(z.string(), Quantity);

const SecretKeyRef = z.strictObject({
  name: z.string().min(1).describe('Secret name (same namespace)'),
  key: z.string().min(1).describe('key inside the Secret'),
});

export const TrainingRunSpec = z.strictObject({
  run: RunConfig.describe(
    'the run file (same schema as `easel train --config`): data, stages with step budgets and model sizes, checkpoints, coordinator (its minTrainers/maxTrainers/httpHost/httpPort are set from spec.trainers and the Service)',
  ),
  image: z.string().min(1).default('ghcr.io/easel-dev/easel:0.1.0-gpu').describe('container image for the coordinator and the trainers'),
  imagePullPolicy: z.enum(['Always', 'IfNotPresent', 'Never']).default('IfNotPresent').describe('image pull policy'),
  trainers: z
    .strictObject({
      min: z.number().int().min(1).default(1).describe('fewest trainers the run keeps training with (elastic lower bound)'),
      max: z.number().int().min(1).default(1).describe('trainers started (elastic upper bound)'),
      gpus: z.number().int().min(0).default(1).describe('nvidia.com/gpu per trainer (0: CPU trainers)'),
      resources: z
        .strictObject({ requests: ResourceList.optional().describe('resource requests'), limits: ResourceList.optional().describe('resource limits') })
        .prefault({})
        .describe('CPU/memory requests and limits per trainer (GPUs come from trainers.gpus)'),
      nodeSelector: z.record(z.string(), z.string()).optional().describe('node labels trainers must run on'),
    })
    .refine((t) => t.min <= t.max, { path: ['min'], message: 'must be at most trainers.max' })
    .prefault({})
    .describe('the trainer fleet'),
  coordinator: z
    .strictObject({
      resources: z
        .strictObject({ requests: ResourceList.optional().describe('resource requests'), limits: ResourceList.optional().describe('resource limits') })
        .prefault({})
        .describe('CPU/memory requests and limits of the coordinator'),
    })
    .prefault({})
    .describe('the coordinator pod'),
  nats: z
    .strictObject({
      url: z.string().min(1).optional().describe('bring your own NATS (JetStream enabled); default: the managed one from the kustomize base'),
      managedUrl: z.string().min(1).default('nats://nats.easel-system.svc:4222').describe('URL of the managed NATS used when url is unset'),
      credentialsSecret: z.string().min(1).optional().describe('Secret holding a NATS creds file under key "nats.creds"'),
    })
    .prefault({})
    .describe('the NATS server trainers synchronise over'),
  storageSecret: z.string().min(1).optional().describe('Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_ENDPOINT_URL) for s3:// URLs'),
  resumePolicy: z.enum(['Latest', 'Never']).default('Latest').describe('Latest: trainers continue from the newest checkpoint in run.checkpoint.url; Never: start from fresh weights'),
  backoffLimit: z.number().int().min(0).default(6).describe('trainer pod restarts tolerated before the run fails'),
  statusIntervalSeconds: z.number().int().min(5).default(30).describe('how often the operator reads the coordinator /status'),
  suspend: z.boolean().default(false).describe('true: delete the pods and keep everything else (checkpoints, config); false: resume'),
  serviceAccountName: z.string().min(1).optional().describe('service account for the coordinator and trainers'),
  extraEnv: z.array(z.strictObject({ name: z.string().min(1), secretKeyRef: SecretKeyRef })).optional().describe('more environment variables, from Secrets only'),
});
export type TrainingRunSpec = z.infer<typeof TrainingRunSpec>;

export const PHASES = ['Pending', 'Starting', 'Running', 'Suspended', 'Succeeded', 'Failed'] as const;
export type Phase = (typeof PHASES)[number];

export const Condition = z.strictObject({
  type: z.string().describe('condition type: Ready, Progressing, Degraded or ConfigValid'),
  status: z.enum(['True', 'False', 'Unknown']).describe('whether the condition holds'),
  reason: z.string().describe('one CamelCase word saying why'),
  message: z.string().describe('human-readable detail'),
  lastTransitionTime: z.string().describe('RFC 3339 time the status last changed'),
});
export type Condition = z.infer<typeof Condition>;

export const TrainingRunStatus = z.strictObject({
  phase: z.enum(PHASES).describe('Pending, Starting, Running, Suspended, Succeeded or Failed'),
  stage: z.string().optional().describe('stage being trained: clip, prior, decoder or upsampler'),
  step: z.number().int().min(0).optional().describe('global optimiser step within the stage'),
  loss: z.number().nullable().optional().describe('latest loss reported by the coordinator (null when not finite)'),
  readyTrainers: z.number().int().min(0).describe('trainers in the current generation'),
  generation: z.number().int().min(0).optional().describe('membership generation (changes when trainers join or leave)'),
  lastCheckpoint: z.string().optional().describe('key of the newest checkpoint'),
  observedGeneration: z.number().int().min(0).optional().describe('metadata.generation this status describes'),
  conditions: z.array(Condition).describe('Ready, Progressing, Degraded, ConfigValid'),
});
export type TrainingRunStatus = z.infer<typeof TrainingRunStatus>;

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  generation?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

/** A TrainingRun as read from the API server (spec not yet validated). */
export interface TrainingRun {
  apiVersion: typeof API_VERSION;
  kind: typeof KIND;
  metadata: ObjectMeta;
  spec: unknown;
  status?: Partial<TrainingRunStatus>;
}
