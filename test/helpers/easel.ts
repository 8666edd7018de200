// Runs the real `easel` CLI as a child process (bin/easel.js) and collects what it printed.
import { spawn } from 'node:child_process';

/** `easel <args>` with `env` added to this process's environment; resolves when it exits. */
export function runEasel(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; log: string }> {
  const child = spawn(process.execPath, ['bin/easel.js', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let log = '';
  child.stdout!.on('data', (d) => (log += d));
  child.stderr!.on('data', (d) => (log += d));
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, log })));
}
