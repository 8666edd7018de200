// The TrainingRun CustomResourceDefinition, built from the zod schemas in spec.ts. `scripts/gen-crd.ts` writes
// it to k8s/base/crd.yaml and a test checks the committed file equals this, so schema and CRD cannot drift.
import { z } from 'zod';
import { GROUP, KIND, PLURAL, TrainingRunSpec, TrainingRunStatus, VERSION } from './spec.ts';

type Schema = Record<string, unknown>;

/**
 * Rewrites a JSON Schema (OpenAPI 3.0 flavour, as zod emits it) into a Kubernetes *structural* schema:
 * no additionalProperties:false (the API server prunes unknown fields; kubectl's strict field validation
 * rejects them), no propertyNames, no JavaScript-only integer bounds, and string|number unions become
 * int-or-string (resource quantities).
 */
export function toStructural(schema: Schema): Schema {
  const out: Schema = {};
  for (const [key, value] of Object.entries(schema)) {
    if (key === '$schema' || key === 'propertyNames') continue;
    if (key === 'additionalProperties' && value === false) continue;
    if ((key === 'maximum' && value === Number.MAX_SAFE_INTEGER) || (key === 'minimum' && value === Number.MIN_SAFE_INTEGER)) continue;
    if (key === 'anyOf' && isStringOrNumber(value as Schema[])) {
      out['x-kubernetes-int-or-string'] = true;
      continue;
    }
    if (key === 'properties') {
      out.properties = Object.fromEntries(Object.entries(value as Record<string, Schema>).map(([k, v]) => [k, toStructural(v)]));
    } else if ((key === 'items' || key === 'additionalProperties') && typeof value === 'object') {
      out[key] = toStructural(value as Schema);
    } else if (key === 'anyOf' || key === 'oneOf' || key === 'allOf') {
      throw new Error(`the CRD schema cannot express ${key} here (${JSON.stringify(value).slice(0, 80)}); change the zod schema`);
    } else {
      out[key] = value;
    }
  }
  return out;
}

function isStringOrNumber(options: Schema[]): boolean {
  const types = options.map((o) => o.type).sort();
  return options.length === 2 && types[0] === 'number' && types[1] === 'string';
}

function jsonSchema(schema: z.ZodType): Schema {
  return toStructural(z.toJSONSchema(schema, { io: 'input', target: 'openapi-3.0', unrepresentable: 'throw' }) as Schema);
}

/** The openAPIV3Schema of the TrainingRun resource. */
export function trainingRunSchema(): Schema {
  return {
    type: 'object',
    description: 'A DALL·E 2-style (unCLIP) training run: CLIP → prior → decoder (→ upsampler) across a fleet of trainers.',
    required: ['spec'],
    properties: {
      apiVersion: { type: 'string' },
      kind: { type: 'string' },
      metadata: { type: 'object' },
      spec: jsonSchema(TrainingRunSpec),
      status: jsonSchema(TrainingRunStatus),
    },
  };
}

/** The whole CustomResourceDefinition object. */
export function trainingRunCrd(): Record<string, any> {
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${PLURAL}.${GROUP}`, labels: { 'app.kubernetes.io/part-of': 'easel' } },
    spec: {
      group: GROUP,
      scope: 'Namespaced',
      names: { kind: KIND, listKind: `${KIND}List`, plural: PLURAL, singular: 'trainingrun', shortNames: ['tr'], categories: ['easel'] },
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: [
            { name: 'Phase', type: 'string', jsonPath: '.status.phase' },
            { name: 'Stage', type: 'string', jsonPath: '.status.stage' },
            { name: 'Step', type: 'integer', jsonPath: '.status.step' },
            { name: 'Loss', type: 'number', jsonPath: '.status.loss' },
            { name: 'Trainers', type: 'integer', jsonPath: '.status.readyTrainers', priority: 1 },
            { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
          ],
          schema: { openAPIV3Schema: trainingRunSchema() },
        },
      ],
    },
  };
}

