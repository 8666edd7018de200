// The CRD, the PrometheusRule, the dashboard JSON and its ConfigMap are generated from typed sources
// (zod RunConfig, alerts.yml, dashboard.ts); the committed copies must equal what the generator produces.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { generatedFiles, ROOT } from '../../scripts/gen-crd.ts';
import { trainingRunSchema } from '../../src/operator/crd.ts';
import { dashboard } from '../../infra/grafana/dashboard.ts';

const files = generatedFiles();

for (const [path, content] of files) {
  test(`${path} is up to date with its source (npx tsx scripts/gen-crd.ts)`, () => {
    assert.equal(readFileSync(join(ROOT, path), 'utf8'), content);
  });
}

test('the CRD spec.run schema carries every run-file field with its default and description', () => {
  const run = (trainingRunSchema() as any).properties.spec.properties.run;
  const clipSteps = run.properties.stages.properties.clip.properties.steps;
  assert.equal(clipSteps.type, 'integer');
  assert.equal(clipSteps.default, 300);
  assert.match(clipSteps.description, /optimiser steps/);
  assert.equal(run.properties.data.properties.train.type, 'string');
  assert.equal(run.properties.checkpoint.properties.url.type, 'string');
  assert.ok(run.properties.stages.properties.decoder.properties.model.properties, 'decoder model sizes are part of the schema');
});

test('the CRD schema is structural: no additionalProperties:false, no $schema, no unions with types', () => {
  const text = JSON.stringify(trainingRunSchema());
  assert.ok(!text.includes('"additionalProperties":false'));
  assert.ok(!text.includes('$schema'));
  assert.ok(!text.includes('"anyOf"') && !text.includes('"oneOf"'));
});

test('the dashboard JSON has the panels the operations guide promises, each with a Prometheus query', () => {
  const parsed = JSON.parse(files.get('infra/grafana/easel.json')!);
  assert.deepEqual(parsed, JSON.parse(JSON.stringify(dashboard)));
  const titles = parsed.panels.map((p: any) => p.title);
  for (const t of ['Throughput', 'Loss per stage', 'All-reduce bandwidth', 'Data wait', 'Members', 'Checkpoint age', 'Skipped steps']) assert.ok(titles.includes(t), t);
  for (const p of parsed.panels) {
    assert.ok(p.targets.length > 0 && p.targets.every((t: any) => /easel_/.test(t.expr)), p.title);
  }
  const ids = parsed.panels.map((p: any) => p.id);
  assert.equal(new Set(ids).size, ids.length, 'panel ids are unique');
});
