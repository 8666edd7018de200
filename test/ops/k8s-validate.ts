// Offline validation of Kubernetes objects against the upstream API schemas (no API server can run here):
// kubernetes-models (generated from the Kubernetes OpenAPI spec) checks types, enums and required fields;
// since its validators accept unknown fields, @kubernetes/client-node's generated model metadata (same
// upstream spec) is walked to reject any field the API does not define — what `kubectl apply --validate=strict`
// would refuse. Custom resources are checked with ajv against their CRD's openAPIV3Schema.
import * as k8s from '@kubernetes/client-node';
import { Ajv } from 'ajv';
import { ConfigMap, Namespace, Service, ServiceAccount } from 'kubernetes-models/v1';
import { Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { Job } from 'kubernetes-models/batch/v1';
import { ClusterRole, ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { CustomResourceDefinition } from 'kubernetes-models/apiextensions.k8s.io/v1';

type Obj = Record<string, any>;
type Model = { new (data: any): { validate(): void } };

const MODELS: Record<string, Model> = {
  'v1/ConfigMap': ConfigMap,
  'v1/Namespace': Namespace,
  'v1/Service': Service,
  'v1/ServiceAccount': ServiceAccount,
  'apps/v1/Deployment': Deployment,
  'apps/v1/StatefulSet': StatefulSet,
  'batch/v1/Job': Job,
  'rbac.authorization.k8s.io/v1/ClusterRole': ClusterRole,
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': ClusterRoleBinding,
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy,
  'apiextensions.k8s.io/v1/CustomResourceDefinition': CustomResourceDefinition,
};

const typeMaps = k8s as unknown as Record<string, { attributeTypeMap?: { baseName: string; type: string }[] } | undefined>;
const LEAVES = new Set(['string', 'number', 'boolean', 'Date', 'any', 'object', 'IntOrString']);

/** Paths of fields that the Kubernetes API type `type` (client-node model name) does not define. */
export function unknownFields(value: unknown, type: string, path = ''): string[] {
  if (value === null || value === undefined || LEAVES.has(type)) return [];
  const array = /^Array<(.+)>$/.exec(type);
  if (array) return Array.isArray(value) ? value.flatMap((v, i) => unknownFields(v, array[1], `${path}[${i}]`)) : [];
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) return Object.entries(value as Obj).flatMap(([k, v]) => unknownFields(v, map[1], `${path}.${k}`));
  const model = typeMaps[type];
  if (!model?.attributeTypeMap) throw new Error(`no upstream model for ${type} at ${path || '(root)'}`);
  const fields = new Map(model.attributeTypeMap.map((a) => [a.baseName, a.type]));
  return Object.entries(value as Obj).flatMap(([k, v]) => {
    const t = fields.get(k);
    return t === undefined ? [`${path}.${k}`] : unknownFields(v, t, `${path}.${k}`);
  });
}

/** Whether a built-in kind can be validated here. */
export function isBuiltIn(obj: Obj): boolean {
  return `${obj.apiVersion}/${obj.kind}` in MODELS;
}

/** Throws naming the object and every problem: schema errors and unknown fields. */
export function validateBuiltIn(obj: Obj): void {
  const key = `${obj.apiVersion}/${obj.kind}`;
  const Model = MODELS[key];
  const what = `${obj.kind} ${obj.metadata?.name}`;
  if (!Model) throw new Error(`${what}: no upstream schema for ${key}`);
  new Model(obj).validate();
  const version = String(obj.apiVersion).split('/').pop()!;
  const typeName = `${version.charAt(0).toUpperCase()}${version.slice(1)}${obj.kind}`;
  const unknown = unknownFields(obj, typeName);
  if (unknown.length) throw new Error(`${what}: unknown fields ${unknown.join(', ')}`);
}

/**
 * The CRD schema for ajv: additionalProperties:false on every object that lists properties (strict field
 * validation), OpenAPI 3.0 keywords translated to draft 7.
 */
export function strictSchema(schema: Obj): Obj {
  const out: Obj = { ...schema };
  if (out.properties) {
    out.properties = Object.fromEntries(Object.entries(out.properties as Obj).map(([k, v]) => [k, strictSchema(v as Obj)]));
    if (out.additionalProperties === undefined && !out['x-kubernetes-preserve-unknown-fields'] && !isMetadata(out)) out.additionalProperties = false;
  }
  if (out.items) out.items = strictSchema(out.items as Obj);
  if (out.additionalProperties && typeof out.additionalProperties === 'object') out.additionalProperties = strictSchema(out.additionalProperties as Obj);
  // OpenAPI 3.0's boolean exclusive bounds → JSON Schema draft 7's numeric ones (what ajv speaks).
  if (out.exclusiveMinimum === true) {
    out.exclusiveMinimum = out.minimum;
    delete out.minimum;
  }
  if (out.exclusiveMaximum === true) {
    out.exclusiveMaximum = out.maximum;
    delete out.maximum;
  }
  if (out['x-kubernetes-int-or-string']) {
    delete out['x-kubernetes-int-or-string'];
    out.anyOf = [{ type: 'integer' }, { type: 'string' }];
  }
  return out;
}

function isMetadata(s: Obj): boolean {
  return s.type === 'object' && Object.keys(s.properties ?? {}).length === 0;
}

/** An ajv validator for a CRD version's openAPIV3Schema, in strict-field mode. */
export function crdValidator(crd: Obj): (obj: unknown) => string[] {
  const ajv = new Ajv({ allErrors: true, strict: false });
  const v = ajv.compile(strictSchema(crd.spec.versions[0].schema.openAPIV3Schema));
  return (obj) => (v(obj) ? [] : (v.errors ?? []).map((e) => `${e.instancePath || '(root)'} ${e.message}${e.params && 'additionalProperty' in e.params ? `: ${e.params.additionalProperty}` : ''}`));
}

/** Every pod template (Deployment, StatefulSet, Job) in a list of objects. */
export function podSpecs(objects: Obj[]): { owner: string; spec: Obj }[] {
  return objects.filter((o) => o.spec?.template?.spec).map((o) => ({ owner: `${o.kind} ${o.metadata.name}`, spec: o.spec.template.spec }));
}
