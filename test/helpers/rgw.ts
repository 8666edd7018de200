// A real S3 server for tests: a throw-away single-node Ceph cluster (one monitor, one in-memory OSD) with a
// RADOS Gateway in front, in a temp dir, on loopback ports only.
//
//   const rgw = await startRgw();               // ~2-3 s
//   const url = await createTestBucket(rgw);     // s3://<fresh bucket>/data, process.env configured for the SDK
//   ... openStore(url) ...
//   await rgw.stop();                            // kills every daemon, removes the temp dir
//
// Why the configuration looks the way it does (found by probing RGW 16.2 here):
// - `auth * required = none` and `ms mon client mode = crc`: no keyrings to manage; without crc mode
//   radosgw loops on auth and never opens its port.
// - pool size 1, `mon allow pool size one`, `osd crush chooseleaf type = 0`, few PGs: one OSD can hold everything.
// - `osd objectstore = memstore`: nothing touches the disk but the monitor's small store.
// - `paxos propose interval = 0.1`: the monitor commits the OSD map quickly (startup 12.7 s → ~2 s).
// - no manager daemon: RGW does not need one.
//
// Every daemon runs under a tiny `sh` watchdog (watchdog.ts) whose stdin is a pipe from this process: when
// the pipe closes (stop(), or this process dying for any reason, even SIGKILL) the watchdog SIGKILLs its
// daemon. A reaper removes the temp dir the same way, so a crashed test run leaves no processes or files.
import { spawn, execFile } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes, randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import { S3Client, ListBucketsCommand, CreateBucketCommand } from '@aws-sdk/client-s3';
import { freePort, spawnWatched, type Watched } from './watchdog.ts';

const run = promisify(execFile);

export interface Rgw {
  /** http://127.0.0.1:<port> */
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  /** Environment for the AWS SDK (and easel's S3 store) to reach this server; pass it to child processes too. */
  env: Record<string, string>;
  /** The cluster's temp dir (config, logs, monitor store), removed by stop(). */
  dir: string;
  /** PIDs of the running daemons (ceph-mon, ceph-osd, radosgw). */
  pids: number[];
  /** Milliseconds from startRgw() until the gateway answered ListBuckets. */
  startupMs: number;
  stop(): Promise<void>;
}

export interface StartRgwOptions {
  /** Give up (and stop everything) if the gateway has not answered by then. */
  timeoutMs?: number;
}

// Removes the temp dir once stdin reaches EOF (see watchdog.ts), so a killed test process leaves no files.
const REAPER = 'cat >/dev/null; sleep 1; rm -rf "$1"';

const livePids = new Set<number>();
const liveDirs = new Set<string>();
process.on('exit', () => {
  for (const pid of livePids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  for (const dir of liveDirs) rmSync(dir, { recursive: true, force: true });
});

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => (s.destroy(), resolve(false)));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function cephConf(dir: string, fsid: string, monPort: number, rgwPort: number): string {
  return `[global]
fsid = ${fsid}
mon host = v2:127.0.0.1:${monPort}
public addr = 127.0.0.1
cluster addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
mon allow pool size one = true
mon warn on pool no redundancy = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 1
osd pool default pgp num = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
paxos propose interval = 0.1
run dir = ${dir}/run
admin socket = ${dir}/run/$name.asok
log file = ${dir}/log/$name.log
mon data = ${dir}/mon/$id
osd data = ${dir}/osd/$id
osd objectstore = memstore
memstore device bytes = 2147483648
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:${rgwPort}
rgw data = ${dir}/rgw
`;
}

function logTails(dir: string, lines = 15): string {
  const logDir = join(dir, 'log');
  let names: string[];
  try {
    names = readdirSync(logDir).sort();
  } catch {
    return '(no logs)';
  }
  return names
    .map((n) => {
      const text = readFileSync(join(logDir, n), 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
      return `--- ${n} (last ${lines} lines) ---\n${text}`;
    })
    .join('\n');
}

/**
 * Starts a fresh single-node Ceph cluster + RGW and a user; resolves once the gateway answers S3. A failed
 * start (say, a port taken between choosing and binding it) is tried once more on new ports.
 */
export async function startRgw(opts: StartRgwOptions = {}): Promise<Rgw> {
  try {
    return await startOnce(opts);
  } catch (err) {
    process.stderr.write(`RGW test cluster: first start failed, trying again: ${(err as Error).message.split('\n')[0]}\n`);
    return startOnce(opts);
  }
}

async function startOnce(opts: StartRgwOptions): Promise<Rgw> {
  const t0 = performance.now();
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const dir = await mkdtemp(join(tmpdir(), 'easel-rgw-'));
  liveDirs.add(dir);
  for (const d of ['run', 'log', 'mon', 'osd/0', 'rgw']) mkdirSync(join(dir, d), { recursive: true });
  const reaper = spawn('sh', ['-c', REAPER, 'reaper', dir], { stdio: ['pipe', 'ignore', 'ignore'] });
  const daemons: Watched[] = [];
  const pids: number[] = [];
  const conf = join(dir, 'ceph.conf');
  const fsid = randomUUID();
  const monPort = await freePort();
  let rgwPort = await freePort();
  while (rgwPort === monPort) rgwPort = await freePort();
  writeFileSync(conf, cephConf(dir, fsid, monPort, rgwPort));
  const deadline = Date.now() + timeoutMs;
  const accessKeyId = `EASEL${randomBytes(8).toString('hex').toUpperCase()}`;
  const secretAccessKey = randomBytes(24).toString('hex');

  const daemon = async (name: string, cmd: string, args: string[]): Promise<void> => {
    const d = await spawnWatched(cmd, ['-c', conf, '-f', ...args], join(dir, 'log', `${name}.out`));
    daemons.push(d);
    pids.push(d.pid);
    livePids.add(d.pid);
  };

  const stop = async (): Promise<void> => {
    await Promise.all(daemons.map((d) => d.stop()));
    for (const pid of pids) livePids.delete(pid);
    rmSync(dir, { recursive: true, force: true });
    liveDirs.delete(dir);
    reaper.stdin!.end();
  };

  const step = async (what: string, fn: () => Promise<unknown>): Promise<void> => {
    try {
      const ts = performance.now();
      await fn();
      if (process.env.EASEL_RGW_TRACE) process.stderr.write(`rgw: ${what}: ${Math.round(performance.now() - ts)} ms\n`);
    } catch (err) {
      const why = (err as Error).message.replaceAll(secretAccessKey, '<secret>');
      const msg = `RGW test cluster failed to start: ${what}: ${why}\n${logTails(dir)}`;
      await stop();
      // The original error's text holds the generated secret key (it is in radosgw-admin's command line).
      // eslint-disable-next-line preserve-caught-error
      throw new Error(msg);
    }
  };
  const ceph = async (bin: string, args: string[], withConf = true) => {
    const timeout = Math.max(1000, deadline - Date.now());
    try {
      return await run(bin, withConf ? ['-c', conf, ...args] : args, { timeout });
    } catch (err) {
      const e = err as Error & { killed?: boolean; code?: number | string; stderr?: string };
      // No `cause`: the original error holds the full command line, secret key included.
      const stderr = (e.stderr ?? '').trim().split('\n').slice(-5).join(' | ');
      const why =
        e.code === 'ENOENT' ? `${bin} is not installed (scripts/install-system-deps.sh installs Ceph)`
        : `${bin} ${args.slice(0, 2).join(' ')} ${e.killed ? `timed out after ${timeout} ms` : `failed (exit ${e.code})`}: ${stderr}`;
      // eslint-disable-next-line preserve-caught-error
      throw new Error(why);
    }
  };

  await step('monitor mkfs', async () => {
    await ceph('monmaptool', ['--create', '--add', 'a', `v2:127.0.0.1:${monPort}`, '--fsid', fsid, join(dir, 'monmap')], false);
    await ceph('ceph-mon', ['--mkfs', '-i', 'a', '--monmap', join(dir, 'monmap')]);
  });
  await step('monitor start', () => daemon('mon.a', 'ceph-mon', ['-i', 'a']));
  const osdUuid = randomUUID();
  await step('OSD registration (ceph osd new) and mkfs', () =>
    Promise.all([
      ceph('ceph', ['--connect-timeout', String(Math.ceil(timeoutMs / 1000)), 'osd', 'new', osdUuid]),
      ceph('ceph-osd', ['-i', '0', '--mkfs', '--osd-uuid', osdUuid]),
    ]),
  );
  await step('OSD start', () => daemon('osd.0', 'ceph-osd', ['-i', '0']));
  await step('radosgw start', () => daemon('client.rgw', 'radosgw', ['-n', 'client.rgw']));

  await step('user creation (radosgw-admin user create)', () =>
    ceph('radosgw-admin', ['user', 'create', '--uid', 'easel', '--display-name', 'easel tests', '--access-key', accessKeyId, '--secret-key', secretAccessKey]),
  );

  const endpoint = `http://127.0.0.1:${rgwPort}`;
  const region = 'us-east-1';
  await step(`waiting for the gateway on ${endpoint}`, async () => {
    const client = new S3Client({ region, endpoint, forcePathStyle: true, credentials: { accessKeyId, secretAccessKey }, maxAttempts: 1 });
    try {
      let last: unknown = 'port not open';
      for (;;) {
        for (const { child } of daemons) {
          if (child.exitCode !== null) throw new Error(`a daemon exited early (code ${child.exitCode})`);
        }
        if (await portOpen(rgwPort)) {
          try {
            await client.send(new ListBucketsCommand({}));
            return;
          } catch (err) {
            last = err;
          }
        }
        if (Date.now() > deadline) throw new Error(`no answer within ${timeoutMs} ms (last: ${last instanceof Error ? last.message : String(last)})`);
        await sleep(100);
      }
    } finally {
      client.destroy();
    }
  });

  // Unreferenced from here on, so a test that forgets stop() does not hang: the exit hook and watchdogs clean up.
  for (const d of daemons) d.unref();
  reaper.unref();
  (reaper.stdin as unknown as { unref(): void }).unref();
  const env: Record<string, string> = {
    AWS_ENDPOINT_URL_S3: endpoint,
    AWS_ACCESS_KEY_ID: accessKeyId,
    AWS_SECRET_ACCESS_KEY: secretAccessKey,
    AWS_REGION: region,
    EASEL_S3_FORCE_PATH_STYLE: '1',
    // RGW 16.2 answers 411 to streamed uploads carrying the SDK's default aws-chunked checksum trailer.
    AWS_REQUEST_CHECKSUM_CALCULATION: 'WHEN_REQUIRED',
    AWS_RESPONSE_CHECKSUM_VALIDATION: 'WHEN_REQUIRED',
  };
  return { endpoint, accessKeyId, secretAccessKey, region, env, dir, pids, startupMs: Math.round(performance.now() - t0), stop };
}

/** Sets process.env so the AWS SDK (and openStore('s3://…')) reaches `rgw`; returns a function restoring the old values. */
export function useRgwEnv(rgw: Rgw): () => void {
  const saved = Object.fromEntries(Object.keys(rgw.env).map((k) => [k, process.env[k]]));
  Object.assign(process.env, rgw.env);
  return () => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
}

/**
 * Creates a fresh bucket on `rgw`, points process.env at the server (see useRgwEnv) and returns
 * `s3://<bucket>/<prefix>` for openStore.
 */
export async function createTestBucket(rgw: Rgw, prefix = 'data'): Promise<string> {
  useRgwEnv(rgw);
  const bucket = `easel-test-${randomBytes(5).toString('hex')}`;
  const client = new S3Client({
    region: rgw.region,
    endpoint: rgw.endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey },
  });
  try {
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
  } finally {
    client.destroy();
  }
  return prefix ? `s3://${bucket}/${prefix}` : `s3://${bucket}`;
}
