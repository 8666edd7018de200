// Pieces shared by the harnesses that run real servers for tests (RGW, NATS): free loopback ports, and
// daemons that cannot outlive the test process.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { createServer } from 'node:net';
import type { TestContext } from 'node:test';

// Runs "$@" in the background and SIGKILLs it as soon as stdin reaches EOF — when stop() closes the pipe, or
// when the test process dies for any reason, even SIGKILL. Prints the daemon's PID first.
// (A background job's stdin is /dev/null in sh, hence the pipe is kept on fd 3 for the waiting `cat`.)
const WATCHDOG = 'exec 3<&0; "$@" </dev/null >&2 3<&- & pid=$!; echo "$pid"; (cat <&3 >/dev/null; kill -9 "$pid" 2>/dev/null) & wait "$pid"';

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/** SIGKILLs each child still running when the test ends, whatever the outcome (t.after runs on a timeout too). */
export function killAfter(t: TestContext, ...children: ChildProcess[]): void {
  t.after(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });
}

/** True while a process with this PID exists (signal 0 checks without sending anything). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export interface Watched {
  /** The watchdog shell; it exits when the daemon does. */
  child: ChildProcess;
  /** The daemon's own PID. */
  pid: number;
  /** Kills the daemon and resolves once it is gone. */
  stop(): Promise<void>;
  /** Lets the test process exit while the daemon runs (the watchdog still kills it then). */
  unref(): void;
}

/** Starts `cmd args…` under a watchdog, its stdout and stderr appended to `logFile`. */
export async function spawnWatched(cmd: string, args: string[], logFile: string): Promise<Watched> {
  const out = openSync(logFile, 'a');
  const child = spawn('sh', ['-c', WATCHDOG, 'watchdog', cmd, ...args], { stdio: ['pipe', 'pipe', out] });
  closeSync(out);
  const pid = await new Promise<number>((resolve, reject) => {
    child.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim().split('\n')[0])));
    child.once('error', reject);
  });
  return {
    child,
    pid,
    stop() {
      child.ref();
      const exited = child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise<void>((r) => child.once('exit', () => r()));
      child.stdin!.end();
      return exited;
    },
    unref() {
      child.unref();
      for (const s of [child.stdin, child.stdout]) (s as unknown as { unref?(): void } | null)?.unref?.();
    },
  };
}
