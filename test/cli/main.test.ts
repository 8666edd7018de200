import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

test('easel --help lists the commands and exits 0', () => {
  const r = spawnSync(process.execPath, ['bin/easel.js', '--help'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /usage: easel <command>/);
});

test('an unknown command exits 2 and says which', () => {
  const r = spawnSync(process.execPath, ['bin/easel.js', 'no-such-command'], { encoding: 'utf8' });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /unknown command 'no-such-command'/);
});
