// The alert rules and the local Prometheus config, checked by Debian's promtool: syntax (check rules /
// check config) and behaviour (test rules: each alert fires on the series that should fire it, and not on
// the ones that should not — see infra/prometheus/alerts.test.yml).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile, copyFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const PROMTOOL = process.env.PROMTOOL ?? '/usr/bin/promtool';
const promtool = (args: string[], cwd = 'infra/prometheus') => spawnSync(PROMTOOL, args, { cwd, encoding: 'utf8' });

test('promtool check rules accepts the alert rules', () => {
  const r = promtool(['check', 'rules', 'alerts.yml']);
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /SUCCESS: 8 rules found/);
});

test('promtool test rules: every alert fires when it should and stays silent when it should not', () => {
  const r = promtool(['test', 'rules', 'alerts.test.yml']);
  assert.equal(r.status, 0, r.stdout + r.stderr);
});

test('promtool check config accepts the local Prometheus config and its rule file', () => {
  const r = promtool(['check', 'config', 'prometheus.yml']);
  assert.equal(r.status, 0, r.stdout + r.stderr);
});

test('the rule tests can fail: a data-starvation threshold raised to 90% breaks them', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'easel-rules-'));
  try {
    const rules = await readFile('infra/prometheus/alerts.yml', 'utf8');
    assert.ok(rules.includes('> 0.3'));
    await writeFile(join(dir, 'alerts.yml'), rules.replace('> 0.3', '> 0.9'));
    await copyFile('infra/prometheus/alerts.test.yml', join(dir, 'alerts.test.yml'));
    const r = promtool(['test', 'rules', 'alerts.test.yml'], dir);
    assert.notEqual(r.status, 0);
    assert.match(r.stdout + r.stderr, /EaselDataStarvation/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('promtool check rules rejects a broken expression, naming it', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'easel-rules-'));
  try {
    await writeFile(join(dir, 'bad.yml'), 'groups:\n  - name: x\n    rules:\n      - alert: Broken\n        expr: rate(easel_step[5m]\n');
    const r = promtool(['check', 'rules', 'bad.yml'], dir);
    assert.notEqual(r.status, 0);
    assert.match(r.stdout + r.stderr, /bad\.yml/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
