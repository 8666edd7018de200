// The operator's watch loop, kept thin: every decision is in reconcile.ts (pure, tested). This file only
// lists/watches TrainingRuns, server-side-applies what reconcile() returns, asks each run's coordinator for
// /status at spec.statusIntervalSeconds (not every step), and writes the derived status.
// Not integration-tested: no Kubernetes API server can run on the CI machine (see docs/operations.md).
import * as k8s from '@kubernetes/client-node';
import { logger } from '../util/log.ts';
import { deriveStatus, METRICS_PORT, ownedNames, reconcile, type Observation } from './reconcile.ts';
import { GROUP, PLURAL, VERSION, type TrainingRun } from './spec.ts';

const log = logger('operator');
const FIELD_MANAGER = 'easel-operator';

export interface ControllerOptions {
  /** Only this namespace (default: all namespaces). */
  namespace?: string;
  /** Full resync of every run this often, besides reacting to watch events. */
  resyncSeconds: number;
  /** Reads a coordinator's /status (tests or out-of-cluster runs may override how it is reached). */
  statusUrl?: (run: TrainingRun) => string;
}

export class Controller {
  private readonly objects: k8s.KubernetesObjectApi;
  private readonly custom: k8s.CustomObjectsApi;
  private readonly batch: k8s.BatchV1Api;
  private readonly lastStatusRead = new Map<string, number>();
  private readonly busy = new Set<string>();
  private timer?: NodeJS.Timeout;
  private watchAbort?: AbortController;
  private stopped = false;

  constructor(
    private readonly kc: k8s.KubeConfig,
    private readonly opts: ControllerOptions,
  ) {
    this.objects = k8s.KubernetesObjectApi.makeApiClient(kc);
    this.custom = kc.makeApiClient(k8s.CustomObjectsApi);
    this.batch = kc.makeApiClient(k8s.BatchV1Api);
  }

  async start(): Promise<void> {
    await this.resync();
    this.timer = setInterval(() => void this.resync(), this.opts.resyncSeconds * 1000);
    await this.watch();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.watchAbort?.abort();
  }

  private async watch(): Promise<void> {
    const path = this.opts.namespace ? `/apis/${GROUP}/${VERSION}/namespaces/${this.opts.namespace}/${PLURAL}` : `/apis/${GROUP}/${VERSION}/${PLURAL}`;
    this.watchAbort = await new k8s.Watch(this.kc).watch(
      path,
      {},
      (type, obj: TrainingRun) => {
        if (type === 'ADDED' || type === 'MODIFIED') void this.sync(obj, false);
        if (type === 'DELETED') this.lastStatusRead.delete(key(obj)); // owned objects go with it (owner references)
      },
      (err) => {
        if (this.stopped) return;
        log.warn(`watch ended (${err ? String(err) : 'closed'}); restarting in 5 s`);
        setTimeout(() => void this.watch(), 5000);
      },
    );
  }

  private async resync(): Promise<void> {
    try {
      const list = this.opts.namespace
        ? await this.custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: this.opts.namespace, plural: PLURAL })
        : await this.custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL });
      for (const run of (list as { items: TrainingRun[] }).items) await this.sync(run, true);
    } catch (err) {
      log.error(`listing TrainingRuns failed: ${String(err)}`);
    }
  }

  /** Applies the desired objects, then (at most every statusIntervalSeconds) refreshes the status. */
  private async sync(run: TrainingRun, periodic: boolean): Promise<void> {
    const k = key(run);
    if (this.busy.has(k)) return;
    this.busy.add(k);
    try {
      const desired = reconcile(run);
      for (const obj of desired.objects) await this.apply(obj as k8s.KubernetesObject);
      const interval = desired.ok ? desired.spec.statusIntervalSeconds : 60;
      const due = Date.now() - (this.lastStatusRead.get(k) ?? 0) >= interval * 1000;
      if (!due && periodic) return;
      if (!due && run.status?.observedGeneration === run.metadata.generation) return;
      this.lastStatusRead.set(k, Date.now());
      const status = deriveStatus(run, desired, await this.observe(run, desired.ok));
      await this.custom.patchNamespacedCustomObjectStatus(
        { group: GROUP, version: VERSION, namespace: run.metadata.namespace!, plural: PLURAL, name: run.metadata.name, body: { status } },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
      );
    } catch (err) {
      log.error(`${k}: ${String(err)}`);
    } finally {
      this.busy.delete(k);
    }
  }

  /**
   * Server-side apply. A Job's pod template is immutable, so a changed run file (new config hash) cannot be
   * applied to the running trainer Job: it is deleted (pods too) and created again on the next pass; the
   * trainers resume from the latest checkpoint.
   */
  private async apply(obj: k8s.KubernetesObject): Promise<void> {
    try {
      await this.objects.patch(obj, undefined, undefined, FIELD_MANAGER, true, k8s.PatchStrategy.ServerSideApply);
    } catch (err) {
      const code = (err as { code?: number }).code;
      if (obj.kind !== 'Job' || code !== 422) throw err;
      log.info(`${obj.metadata?.namespace}/${obj.metadata?.name}: pod template changed; recreating the trainer Job`);
      await this.objects.delete(obj, undefined, undefined, undefined, undefined, 'Background');
    }
  }

  private async observe(run: TrainingRun, valid: boolean): Promise<Observation> {
    const now = new Date();
    if (!valid) return { coordinator: { ok: false, reason: 'invalid spec' }, now };
    const names = ownedNames(run.metadata.name);
    let trainersJob: Observation['trainersJob'];
    try {
      const job = await this.batch.readNamespacedJobStatus({ name: names.trainers, namespace: run.metadata.namespace! });
      trainersJob = { active: job.status?.active, failed: job.status?.failed, succeeded: job.status?.succeeded, conditions: job.status?.conditions };
    } catch {
      trainersJob = undefined; // not created yet
    }
    const url = this.opts.statusUrl?.(run) ?? `http://${names.coordinator}.${run.metadata.namespace}.svc:${METRICS_PORT}/status`;
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
      if (!res.ok) return { coordinator: { ok: false, reason: `${url}: HTTP ${res.status}` }, trainersJob, now };
      return { coordinator: { ok: true, body: await res.json() }, trainersJob, now };
    } catch (err) {
      return { coordinator: { ok: false, reason: `${url}: ${(err as Error).message}` }, trainersJob, now };
    }
  }
}

function key(run: TrainingRun): string {
  return `${run.metadata.namespace}/${run.metadata.name}`;
}
