import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { UsageError } from '../../src/cli/args.ts';
import { configDifferences, configHash, describeRunConfig, loadRunConfig, parseRunConfig, RunConfig, stageBatchSize } from '../../src/trainer/config.ts';

test('an empty run file is a complete config: every field has a default', () => {
  const c = parseRunConfig({});
  assert.equal(c.stages.clip.steps, 300);
  assert.equal(c.stages.prior.optimizer.lr, 3e-4);
  assert.equal(c.stages.decoder.emaDecay, 0.995);
  assert.equal(c.stages.clip.model.imageSize, c.data.imageSize);
  assert.equal(c.checkpoint.keep, 3);
  assert.equal(stageBatchSize(c, 'prior'), c.data.batchSize);
  assert.equal(stageBatchSize(parseRunConfig({ stages: { prior: { batchSize: 7 } } }), 'prior'), 7);
});

test('every field of the run file is described, and has a default unless documented optional', () => {
  const optional = new Set(['data.eval', 'stages.clip.batchSize', 'stages.prior.batchSize', 'stages.decoder.batchSize', 'stages.upsampler.batchSize']);
  const missing: string[] = [];
  const walk = (schema: any, path: string) => {
    for (const [key, prop] of Object.entries<any>(schema.properties ?? {})) {
      const p = path ? `${path}.${key}` : key;
      if (!prop.description) missing.push(`${p}: no description`);
      if (prop.default === undefined && !optional.has(p)) missing.push(`${p}: no default`);
      if (prop.type === 'object') walk(prop, p);
    }
  };
  walk(z.toJSONSchema(RunConfig, { io: 'input', unrepresentable: 'any' }), '');
  assert.deepEqual(missing, []);
});

function errorOf(value: unknown): string {
  try {
    parseRunConfig(value);
  } catch (err) {
    assert.ok(err instanceof UsageError);
    return err.message;
  }
  assert.fail('expected the config to be rejected');
}

test('a bad value is rejected naming its field path', () => {
  assert.match(errorOf({ checkpoint: { everySteps: -1 } }), /checkpoint\.everySteps: /);
  assert.match(errorOf({ stages: { prior: { optimizer: { beta2: 1 } } } }), /stages\.prior\.optimizer\.beta2: /);
  assert.match(errorOf({ stages: { clip: { model: { patchSize: 5 } } } }), /stages\.clip\.model\.patchSize: patchSize 5 must divide imageSize 32/);
  assert.match(errorOf({ name: 'Bad Name' }), /name: lowercase letters, digits and dashes/);
  assert.match(errorOf({ stages: { decoder: { optimizer: { clipGradNorm: -1 } } } }), /stages\.decoder\.optimizer\.clipGradNorm: /);
});

test('a misspelt key is rejected, not ignored', () => {
  assert.match(errorOf({ stages: { clip: { stpes: 10 } } }), /stages\.clip: .*stpes/);
  assert.match(errorOf({ stages: { decoder: { model: { chanels: 8 } } } }), /stages\.decoder\.model: .*chanels/);
});

test('models that disagree on a shared shape are rejected naming both fields', () => {
  assert.match(errorOf({ stages: { prior: { model: { embedDim: 32 } } } }), /stages\.prior\.model\.embedDim: must equal stages\.clip\.model\.embedDim \(64\)/);
  assert.match(errorOf({ data: { imageSize: 16 } }), /stages\.clip\.model\.imageSize: must equal data\.imageSize \(16\)/);
  // The decoder may draw below the data's resolution, by a whole factor.
  assert.equal(parseRunConfig({ stages: { decoder: { model: { imageSize: 16, channelMults: [1, 2] } } } }).stages.decoder.model.imageSize, 16);
  assert.match(errorOf({ stages: { decoder: { model: { imageSize: 12, channelMults: [1] } } } }), /stages\.decoder\.model\.imageSize: must divide data\.imageSize \(32\)/);
  assert.match(errorOf({ stages: { decoder: { model: { snrWeightFloor: 1 } } } }), /stages\.decoder\.model\.snrWeightFloor: only bounds the Min-SNR weight/);
});

test('run files load from YAML; syntax errors and bad fields name the file', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'easel-config-'));
  try {
    const ok = join(dir, 'ok.yaml');
    await writeFile(ok, 'name: tiny\nseed: 7\nstages:\n  clip:\n    steps: 5\n');
    const c = await loadRunConfig(ok);
    assert.equal(c.name, 'tiny');
    assert.equal(c.stages.clip.steps, 5);
    const broken = join(dir, 'broken.yaml');
    await writeFile(broken, 'stages: [\n');
    await assert.rejects(loadRunConfig(broken), /run file .*broken\.yaml is not valid YAML/);
    const bad = join(dir, 'bad.yaml');
    await writeFile(bad, 'data:\n  batchSize: zero\n');
    await assert.rejects(loadRunConfig(bad), /run file .*bad\.yaml:\ndata\.batchSize: /);
    await assert.rejects(loadRunConfig(join(dir, 'absent.yaml')), /cannot read run file/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('examples/demo.yaml is a valid run file', async () => {
  const c = await loadRunConfig('examples/demo.yaml');
  assert.equal(c.name, 'demo');
});

test('the upsampler block of docs/models.md, added to examples/demo.yaml, is a valid run file', async () => {
  const doc = await readFile('docs/models.md', 'utf8');
  const block = /```yaml\n([\s\S]*?)```/.exec(doc.slice(doc.indexOf('### Upsampler')))![1].replace(/^ {2}/gm, '');
  const demo = parseYaml(await readFile('examples/demo.yaml', 'utf8'));
  const c = parseRunConfig({ ...demo, stages: { ...demo.stages, ...parseYaml(block) } });
  assert.equal(c.stages.upsampler.steps, 400);
  assert.equal(c.stages.upsampler.model.lowResSize, c.stages.decoder.model.imageSize);
});

test('--describe lists every key with its default and description', () => {
  const text = describeRunConfig();
  assert.match(text, /^checkpoint\.everySteps = 100 {2}write a checkpoint every N steps/m);
  assert.match(text, /^stages\.decoder\.model\.channelMults = \[1,2,4\] {2}/m);
  assert.match(text, /^data\.eval = \(optional\) {2}/m);
});

test('one run file serves every command: its coordinator section is validated here and named when wrong', async () => {
  const c = parseRunConfig({ coordinator: { minTrainers: 2, epochs: 3 } });
  assert.equal(c.coordinator.minTrainers, 2);
  assert.equal(c.coordinator.epochs, 3);
  assert.equal(parseRunConfig({}).coordinator.leaseMs, 60_000, 'the section is optional');
  assert.match(errorOf({ coordinator: { leaseMs: 0 } }), /coordinator\.leaseMs: /);
  assert.match(errorOf({ coordinator: { minTrainers: 3, maxTrainers: 2 } }), /coordinator\.minTrainers: must be at most maxTrainers/);
  assert.match(errorOf({ coordinator: { leseMs: 5 } }), /coordinator: .*leseMs/);
});

test('configs compare by a hash that ignores key order; the differences name each field path', () => {
  const a = parseRunConfig({ seed: 3, stages: { clip: { steps: 5 } } });
  const reverseKeys = (v: unknown): unknown =>
    typeof v === 'object' && v !== null && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).reverse().map(([k, x]) => [k, reverseKeys(x)])) : v;
  const reordered = reverseKeys(a) as RunConfig;
  assert.deepEqual(Object.keys(reordered).at(-1), 'name');
  assert.equal(configHash({ x: 1, y: { b: 2, a: [1, 2] } }), configHash({ y: { a: [1, 2], b: 2 }, x: 1 }));
  assert.equal(configHash(reordered), configHash(a));
  const b = parseRunConfig({ seed: 3, stages: { clip: { steps: 6 }, decoder: { model: { channelMults: [1, 2] } } } });
  assert.notEqual(configHash(a), configHash(b));
  assert.deepEqual(configDifferences(a, b), [
    { path: 'stages.clip.steps', a: 5, b: 6 },
    { path: 'stages.decoder.model.channelMults', a: [1, 2, 4], b: [1, 2] },
  ]);
  assert.deepEqual(configDifferences({ data: { eval: 'x' } }, { data: {} }), [{ path: 'data.eval', a: 'x', b: undefined }]);
});
