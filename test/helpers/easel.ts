// Runs the real `easel` CLI as a child process (bin/easel.js) and collects what it printed.
import { spawn } from 'node:child_process';
import type { TestContext } from 'node:test';
import { killAfter } from './watchdog.ts';

/**
 * `easel <args>` with `env` added to this process's environment; resolves when it exits. It is killed after `t` if
 * it still runs then (the test timed out), so it cannot outlive the test.
 */
export function runEasel(t: TestContext, args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; log: string }> {
  const child = spawn(process.execPath, ['bin/easel.js', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let log = '';
  child.stdout!.on('data', (d) => (log += d));
  child.stderr!.on('data', (d) => (log += d));
  killAfter(t, child);
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, log })));
}
