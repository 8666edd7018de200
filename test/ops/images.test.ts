// No Docker engine runs here, so the Dockerfile and docker-compose file are checked statically: the stages and
// files they name exist, the GPU base matches what libtensorflow 2.9 loads, every compose mount points at a file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';

const dockerfile = readFileSync('Dockerfile', 'utf8');

test('the Dockerfile builds a cpu and a gpu target, both non-root, the gpu one on CUDA 11.2 with cuDNN 8', () => {
  const stages = [...dockerfile.matchAll(/^FROM (\S+) AS (\S+)$/gm)].map((m) => ({ image: m[1], name: m[2] }));
  assert.deepEqual(stages.map((s) => s.name), ['deps', 'app', 'cpu', 'gpu']);
  assert.match(stages.find((s) => s.name === 'gpu')!.image, /^nvidia\/cuda:11\.2\.\d+-cudnn8-runtime-/);
  const after = (name: string) => dockerfile.slice(dockerfile.indexOf(`AS ${name}`));
  for (const target of ['cpu', 'gpu']) assert.match(after(target).split(/^FROM /m)[0], /^USER 10001:10001$/m, target);
  for (const m of dockerfile.matchAll(/^COPY (?!--from)(\S+(?: \S+)*) \S+$/gm)) {
    for (const src of m[1].split(' ')) assert.ok(existsSync(src), `COPY source ${src} exists`);
  }
});

test('.dockerignore keeps out git, node_modules and tests but not the sources the image needs', () => {
  const ignored = readFileSync('.dockerignore', 'utf8').split('\n').filter((l) => l && !l.startsWith('#'));
  for (const p of ['.git', 'node_modules', 'test']) assert.ok(ignored.includes(p), p);
  for (const p of ['src', 'bin', 'examples', 'package.json', 'package-lock.json']) assert.ok(!ignored.includes(p), p);
});

test('docker-compose runs MinIO, NATS with JetStream, Prometheus and Grafana, mounting files that exist', () => {
  const compose = parseYaml(readFileSync('infra/docker-compose.yml', 'utf8')) as { services: Record<string, { command?: string[]; volumes?: string[]; ports?: string[] }> };
  assert.deepEqual(Object.keys(compose.services).sort(), ['grafana', 'minio', 'nats', 'prometheus']);
  assert.ok(compose.services.nats.command!.includes('--jetstream'));
  for (const [name, s] of Object.entries(compose.services)) {
    for (const v of s.volumes ?? []) {
      const src = v.split(':')[0];
      if (src.startsWith('.')) assert.ok(existsSync(join('infra', src)), `${name} mounts ${src}`);
    }
    for (const p of s.ports ?? []) assert.ok(p.startsWith('127.0.0.1:'), `${name} publishes ${p} on loopback only`);
  }
});
