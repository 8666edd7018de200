// A real NATS server for tests: `nats-server` from PATH on a random loopback port, JetStream on, its store in a
// temp dir.
//
//   const nats = await startNats();              // ~50-100 ms
//   const nc = await connect({ servers: nats.url });
//   await nats.restart();                        // kill -9 and start again on the SAME port, same JetStream dir
//   await nats.stop();                           // kills the server, removes the temp dir
//
// The server runs under a tiny `sh` watchdog whose stdin is a pipe from this process: when the pipe closes
// (stop(), or this process dying for any reason, even SIGKILL) the watchdog SIGKILLs the server, so a crashed test
// run leaves no server behind. The temp dir is removed on stop() and on process exit.
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, isAlive, spawnWatched, type Watched } from './watchdog.ts';

export interface NatsServer {
  /** nats://127.0.0.1:<port> */
  url: string;
  port: number;
  /** The server's temp dir: config, log and JetStream store. */
  dir: string;
  /** The max_payload the server was started with, in bytes. */
  maxPayload: number;
  /** PID of the running nats-server (changes on restart). */
  pid(): number;
  /** Stops the server (SIGKILL by default, SIGTERM for a graceful shutdown) but keeps its dir, port and store. */
  kill(signal?: 'SIGKILL' | 'SIGTERM'): Promise<void>;
  /** Starts it again (after kill() or while running: kills first) on the same port with the same JetStream store. */
  restart(opts?: { downMs?: number }): Promise<void>;
  /** The last lines of the server's log. */
  logTail(lines?: number): string;
  /** Kills the server and removes its dir. Safe to call twice. */
  stop(): Promise<void>;
}

export interface StartNatsOptions {
  /** The server's max_payload in bytes (nats-server's default is 1 MiB). */
  maxPayload?: number;
  /** Turn JetStream off (on by default). */
  jetstream?: boolean;
  /** Give up if the server does not accept connections by then. */
  timeoutMs?: number;
  /** More server configuration appended to the generated file (e.g. an `authorization { … }` block). */
  extraConfig?: string;
}

const liveDirs = new Set<string>();
process.on('exit', () => {
  for (const dir of liveDirs) rmSync(dir, { recursive: true, force: true });
});

/** True once something on the port answers with NATS's INFO line. */
function natsAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = tcpConnect(port, '127.0.0.1');
    const done = (ok: boolean) => (s.destroy(), resolve(ok));
    s.setTimeout(1000, () => done(false));
    s.once('data', (d: Buffer) => done(d.toString('latin1').startsWith('INFO ')));
    s.once('error', () => done(false));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function serverConfig(dir: string, port: number, maxPayload: number, jetstream: boolean): string {
  return [
    `host: 127.0.0.1`,
    `port: ${port}`,
    `max_payload: ${maxPayload}`,
    // A big max_payload needs a pending buffer at least as big, or slow consumers get cut at once.
    `max_pending: ${Math.max(64 * 1024 * 1024, 4 * maxPayload)}`,
    `log_file: "${join(dir, 'server.log')}"`,
    jetstream ? `jetstream { store_dir: "${join(dir, 'js')}", max_memory_store: 256MB, max_file_store: 1GB }` : '',
    '',
  ].join('\n');
}

/** Starts a fresh nats-server; resolves once it accepts connections. A failed start is tried once more on a new port. */
export async function startNats(opts: StartNatsOptions = {}): Promise<NatsServer> {
  try {
    return await startOnce(opts);
  } catch (err) {
    if ((err as Error).message.includes('not installed')) throw err;
    process.stderr.write(`nats-server for tests: first start failed, trying again: ${(err as Error).message.split('\n')[0]}\n`);
    return startOnce(opts);
  }
}

async function startOnce(opts: StartNatsOptions): Promise<NatsServer> {
  const maxPayload = opts.maxPayload ?? 1024 * 1024;
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const dir = await mkdtemp(join(tmpdir(), 'easel-nats-'));
  liveDirs.add(dir);
  const port = await freePort();
  const conf = join(dir, 'server.conf');
  writeFileSync(conf, serverConfig(dir, port, maxPayload, opts.jetstream ?? true) + (opts.extraConfig ? `${opts.extraConfig}\n` : ''));
  const logFile = join(dir, 'server.log');
  let server: Watched | undefined;
  let pid = 0;

  const logTail = (lines = 20): string => {
    const parts: string[] = [];
    for (const f of [logFile, join(dir, 'server.out')]) {
      if (!existsSync(f)) continue;
      const text = readFileSync(f, 'utf8').trimEnd();
      if (text) parts.push(`--- ${f} (last ${lines} lines) ---\n${text.split('\n').slice(-lines).join('\n')}`);
    }
    return parts.join('\n') || '(the server wrote no log)';
  };

  const kill = async (): Promise<void> => {
    const s = server;
    server = undefined;
    await s?.stop(); // the watchdog SIGKILLs the server
  };

  const killGracefully = async (): Promise<void> => {
    if (!server) return;
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      // already gone
    }
    for (let i = 0; i < 100 && isAlive(pid); i++) await sleep(20);
    await kill();
  };

  const launch = async (): Promise<void> => {
    const w = await spawnWatched('nats-server', ['-c', conf], join(dir, 'server.out'));
    server = w;
    pid = w.pid;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (w.child.exitCode !== null) throw new Error(`nats-server exited at once (code ${w.child.exitCode})`);
      if (await natsAnswers(port)) break;
      if (Date.now() > deadline) throw new Error(`nats-server did not accept connections on 127.0.0.1:${port} within ${timeoutMs} ms`);
      await sleep(20);
    }
    // Unreferenced, so a test that forgets stop() does not hang: the watchdog and the exit hook clean up.
    w.unref();
  };

  const startOrExplain = async (): Promise<void> => {
    try {
      await launch();
    } catch (err) {
      const installed = ['/usr/bin', '/usr/local/bin', ...(process.env.PATH ?? '').split(':')].some((d) => d && existsSync(join(d, 'nats-server')));
      await kill();
      const why = installed ? (err as Error).message : 'nats-server is not installed (run scripts/install-system-deps.sh, or apt-get install nats-server)';
      throw new Error(`nats-server for tests failed to start: ${why}\n${logTail()}`, { cause: err });
    }
  };

  try {
    await startOrExplain();
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    liveDirs.delete(dir);
    throw err;
  }

  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    dir,
    maxPayload,
    pid: () => pid,
    kill: (signal = 'SIGKILL') => (signal === 'SIGTERM' ? killGracefully() : kill()),
    restart: async ({ downMs = 0 } = {}) => {
      await kill();
      if (downMs > 0) await sleep(downMs);
      await startOrExplain();
    },
    logTail,
    stop: async () => {
      await kill();
      rmSync(dir, { recursive: true, force: true });
      liveDirs.delete(dir);
    },
  };
}
