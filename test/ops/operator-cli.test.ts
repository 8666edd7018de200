// `easel operator`: flags validated before anything touches a cluster; the operations guide documents every
// TrainingRun field the CRD defines.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { trainingRunSchema } from '../../src/operator/crd.ts';
import { run } from '../../src/cli/operator.ts';
import { UsageError } from '../../src/cli/args.ts';

test('easel operator --help lists its flags and exits 0', async (t) => {
  const log = t.mock.method(console, 'log', () => {});
  assert.equal(await run(['--help']), 0);
  const out = log.mock.calls.map((c) => String(c.arguments[0])).join('\n');
  assert.match(out, /--namespace/);
  assert.match(out, /--resync-seconds/);
});

test('easel operator rejects a too-short resync interval or an unknown flag before touching a cluster, naming it', async () => {
  await assert.rejects(run(['--resync-seconds', '1']), (err: Error) => err instanceof UsageError && /resyncSeconds: .*>=5/.test(err.message));
  await assert.rejects(run(['--namespaces', 'ml']), (err: Error) => err instanceof UsageError && /namespaces/.test(err.message));
});

test('docs/operations.md documents every TrainingRun spec field outside spec.run', () => {
  const doc = readFileSync('docs/operations.md', 'utf8');
  const spec = (trainingRunSchema() as any).properties.spec;
  const leaves: string[] = [];
  const walk = (s: any, path: string) => {
    for (const [k, v] of Object.entries<any>(s.properties ?? {})) {
      const p = path ? `${path}.${k}` : k;
      if (p === 'run' || p.endsWith('.requests') || p.endsWith('.limits')) continue; // run: the run-file reference; quantities: one row each
      if (v.type === 'object' && v.properties) walk(v, p);
      else leaves.push(p);
    }
  };
  walk(spec, '');
  assert.ok(leaves.length > 10);
  for (const p of leaves) assert.ok(doc.includes(`\`${p}`), `docs/operations.md lacks ${p}`);
});
