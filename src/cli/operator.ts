// `easel operator`: runs the TrainingRun operator (in-cluster, or against the current kubeconfig context).
import * as k8s from '@kubernetes/client-node';
import { z } from 'zod';
import { parseFlags, validate } from './args.ts';
import { Controller } from '../operator/controller.ts';
import { logger } from '../util/log.ts';

const HELP = `usage: easel operator [--namespace NS] [--resync-seconds N]

Reconciles easel.dev/v1alpha1 TrainingRuns into a coordinator Deployment + Service, an Indexed trainer Job
and a run-file ConfigMap, and keeps their status (phase, stage, step, loss, trainers) up to date.
Uses the in-cluster service account, or the current kubeconfig context outside a cluster.

  --namespace NS        watch only this namespace (default: all)
  --resync-seconds N    full resync interval (default 30)`;

const OperatorFlags = z.strictObject({
  namespace: z.string().min(1).optional().describe('watch only this namespace'),
  resyncSeconds: z.coerce.number().int().min(5).default(30).describe('full resync interval in seconds'),
});

export async function run(argv: string[]): Promise<number> {
  const parsed = parseFlags(argv, { namespace: { type: 'string' }, 'resync-seconds': { type: 'string' } }, HELP);
  if (!parsed) return 0;
  const flags = validate(OperatorFlags, { namespace: parsed.values.namespace, resyncSeconds: parsed.values['resync-seconds'] }, 'flags');
  const kc = new k8s.KubeConfig();
  kc.loadFromDefault();
  const controller = new Controller(kc, flags);
  const log = logger('operator');
  log.info(`watching TrainingRuns in ${flags.namespace ?? 'all namespaces'} (cluster ${kc.getCurrentCluster()?.server ?? '?'})`);
  await controller.start();
  await new Promise<void>((resolve) => {
    const stop = () => {
      controller.stop();
      resolve();
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  return 0;
}
