// `easel run --config run.yaml --workers N [--nats <url>] [--out <dir>]`: a distributed run on this machine. Starts
// a nats-server (unless --nats names one), `easel coordinator` and N `easel trainer` processes, prefixes their
// logs, waits for the trainers, then writes the coordinator's final /status to <out>/status.json and stops the rest.
// Ctrl-C asks the trainers to stop after the same step (rank 0 writes a checkpoint); running it again resumes:
// the JetStream store (coordinator state) lives under <out>/nats and the trainers continue from the latest checkpoint.
// If easel run itself dies (kill -9 included), what it started stops too: each child's stdin is a pipe from it.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseFlags, UsageError } from './args.ts';
import { loadRunConfig } from '../trainer/config.ts';

const HELP = `usage: easel run --config <run.yaml> --workers <N> [--nats <url>] [--out <dir>]

  --config    the run file (with an optional \`coordinator\` section; see docs/coordinator.md)
  --workers   trainer processes to start on this machine
  --nats      an existing NATS server (JetStream on); default: start nats-server from PATH on a free loopback port
  --out       where status.json and the local nats-server's JetStream store go (default ./runs/<name>); logs go to stderr, each line prefixed with its process

Ctrl-C stops every trainer after the same step and leaves a resumable checkpoint; run the same command again
to continue. Before the trainers have started, it stops what was started and exits 130. Should easel run
itself be killed, its trainers, coordinator and nats-server notice and stop.`;

const EASEL = fileURLToPath(new URL('../../bin/easel.js', import.meta.url));

interface Proc {
  name: string;
  child: ChildProcess;
  exited: Promise<number>;
}

/** Starts `easel <args>` in its own process group (so Ctrl-C reaches only us), its output prefixed with `name`. */
function startEasel(name: string, args: string[], onLine?: (line: string) => void): Proc {
  // stdin is a pipe from us: it closes when we end, however we end, and the child then stops (onSupervisorGone).
  const child = spawn(process.execPath, [EASEL, ...args], { stdio: ['pipe', 'pipe', 'pipe'], detached: true, env: { ...process.env, EASEL_SUPERVISED: '1' } });
  for (const stream of [child.stdout!, child.stderr!]) {
    createInterface({ input: stream }).on('line', (line) => {
      onLine?.(line);
      process.stderr.write(`[${name}] ${line}\n`);
    });
  }
  const exited = new Promise<number>((r) => child.once('exit', (code, signal) => r(code ?? (signal ? 128 : 1))));
  return { name, child, exited };
}

async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.on('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => ok(port));
    });
  });
}

// Runs "$@" in the background, SIGTERMs it once stdin reaches EOF (or when the shell itself gets SIGTERM or
// SIGINT), and exits when it does. (A background job's stdin is /dev/null in sh, hence the pipe is kept on fd 3.)
const NATS_WATCHDOG =
  'exec 3<&0; "$@" </dev/null & pid=$!; trap \'kill -TERM "$pid" 2>/dev/null\' TERM INT; (cat <&3 >/dev/null; kill -TERM "$pid") 2>/dev/null & wait "$pid"; wait "$pid"';

/** nats-server from PATH with JetStream, its store under `dir`; resolves once it accepts connections. */
async function startNatsServer(dir: string): Promise<{ url: string; proc: ChildProcess; exited: Promise<number> }> {
  if (spawnSync('nats-server', ['--version'], { stdio: 'ignore' }).error) {
    throw new UsageError(
      'nats-server is not on PATH. Install it (Debian/Ubuntu: `apt-get install nats-server`, or scripts/install-system-deps.sh; ' +
        'elsewhere: https://docs.nats.io/running-a-nats-service/introduction/installation), or pass --nats <url> of a running server with JetStream.',
    );
  }
  await mkdir(dir, { recursive: true });
  const port = await freePort();
  // Under a shell that stops it when its stdin — a pipe from us — closes, which happens however we end (kill -9
  // included): nats-server runs in a process group of its own, and nothing else would stop it. The shell exits with it.
  const proc = spawn('sh', ['-c', NATS_WATCHDOG, 'nats-watchdog', 'nats-server', '-a', '127.0.0.1', '-p', String(port), '-js', '-sd', dir], {
    stdio: ['pipe', 'ignore', 'pipe'],
    detached: true,
  });
  let log = '';
  proc.stderr!.on('data', (d) => (log = (log + d).slice(-4000)));
  const exited = new Promise<number>((r) => proc.once('exit', (code) => r(code ?? 1)));
  const ready = new Promise<void>((ok, fail) => {
    const check = () => (log.includes('Server is ready') ? ok() : proc.exitCode !== null ? fail(new Error(`nats-server exited:\n${log}`)) : setTimeout(check, 50));
    check();
  });
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([ready, new Promise((_, fail) => (timer = setTimeout(() => fail(new Error(`nats-server did not start within 15 s:\n${log}`)), 15_000)))]);
  } catch (err) {
    proc.stdin!.end(); // its shell stops it: it runs in its own process group, and nothing else would
    throw err;
  } finally {
    clearTimeout(timer);
  }
  return { url: `nats://127.0.0.1:${port}`, proc, exited };
}

function positiveInt(flag: string, value: string | undefined): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${flag}: expected a positive integer, got '${value}'`);
  return n;
}

async function stop(p: { child: ChildProcess; exited: Promise<number> } | { proc: ChildProcess; exited: Promise<number> }, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  const child = 'child' in p ? p.child : p.proc;
  child.stdin?.end(); // what a supervised child (and nats-server's shell) takes as "stop"; an open pipe would keep us alive
  if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await p.exited;
  clearTimeout(timer);
}

export async function run(argv: string[]): Promise<number> {
  const parsed = parseFlags(argv, { config: { type: 'string' }, workers: { type: 'string' }, nats: { type: 'string' }, out: { type: 'string' } }, HELP);
  if (!parsed) return 0;
  const v = parsed.values;
  if (!v.config) throw new UsageError(`--config is required\n\n${HELP}`);
  const workers = positiveInt('workers', v.workers ?? '1');
  const config = await loadRunConfig(v.config);
  const out = resolve(v.out ?? join('runs', config.name));
  await mkdir(out, { recursive: true });

  // The handlers go up before anything is started and come down after everything has stopped: the children run in
  // process groups of their own (so Ctrl-C reaches only us), and a signal that killed us in between would orphan them.
  let nats: Awaited<ReturnType<typeof startNatsServer>> | undefined;
  let coordinator: Proc | undefined;
  const trainers: Proc[] = [];
  let interrupted = 0;
  const onSigint = () => {
    interrupted++;
    if (interrupted === 1) {
      process.stderr.write('easel run: stopping the trainers after the current step (Ctrl-C again to kill everything)\n');
      for (const t of trainers) if (t.child.exitCode === null) t.child.kill('SIGINT');
    } else for (const t of trainers) t.child.kill('SIGKILL');
  };
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigint);
  const stoppedEarly = () => {
    process.stderr.write('easel run: interrupted before the trainers started; nothing trained\n');
    return 130;
  };
  try {
    if (!v.nats) nats = await startNatsServer(join(out, 'nats'));
    const natsUrl = v.nats ?? nats!.url;
    if (interrupted) return stoppedEarly();
    let http: string | undefined;
    const announced = new Promise<void>((ok) => {
      coordinator = startEasel('coordinator', ['coordinator', '--config', v.config!, '--nats', natsUrl, '--http-port', '0', '--http-host', '127.0.0.1'], (line) => {
        if (!http && line.startsWith('{')) {
          try {
            http = (JSON.parse(line) as { http?: string }).http;
            if (http) ok();
          } catch {
            // a log line, not the announcement
          }
        }
      });
    });
    const coordFailed = coordinator!.exited.then((code) => {
      throw new Error(`the coordinator exited (code ${code}) before the run ended`);
    });
    await Promise.race([announced, coordFailed]);
    if (interrupted) return stoppedEarly();
    process.stderr.write(`easel run: coordinator at ${http} (/status, /metrics); NATS ${natsUrl}; ${workers} trainer(s)\n`);
    for (let i = 0; i < workers; i++) {
      trainers.push(startEasel(`trainer-${i}`, ['trainer', '--nats', natsUrl, '--run', config.name, '--config', v.config!, '--id', `${config.name}-w${i}`]));
    }
    const codes = await Promise.race([Promise.all(trainers.map((t) => t.exited)), coordFailed]);
    const status = (await (await fetch(`${http}/status`)).json()) as Record<string, unknown>;
    await writeFile(join(out, 'status.json'), JSON.stringify(status, null, 2) + '\n');
    const failed = codes.filter((c) => c !== 0).length;
    console.log(
      `easel run: ${interrupted ? 'stopped' : 'finished'} at step ${status.step}; samples ${status.samples_seen}/${status.expected_samples}; ` +
        `${failed ? `${failed} trainer(s) failed; ` : ''}status in ${join(out, 'status.json')}${interrupted ? '; run the same command again to resume' : ''}`,
    );
    return failed ? 1 : 0;
  } finally {
    for (const t of trainers) await stop(t, 'SIGKILL');
    if (coordinator) await stop(coordinator);
    if (nats) await stop(nats);
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigint);
  }
}
