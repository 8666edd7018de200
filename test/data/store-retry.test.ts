import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoffCeilingMs, backoffDelayMs, isRetryable, withRetries, RetriesExhaustedError, RetryConfig, describeError } from '../../src/data/store/retry.ts';

const cfg = RetryConfig.parse({ maxAttempts: 4, baseDelayMs: 100, maxDelayMs: 1000 });

test('the backoff ceiling doubles with each retry and stops at the maximum', () => {
  assert.deepEqual([0, 1, 2, 3, 4, 10, 60].map((r) => backoffCeilingMs(r, cfg)), [100, 200, 400, 800, 1000, 1000, 1000]);
});

test('full jitter draws the delay uniformly below the ceiling', () => {
  assert.equal(backoffDelayMs(2, cfg, () => 0), 0);
  assert.equal(backoffDelayMs(2, cfg, () => 0.5), 200);
  assert.equal(backoffDelayMs(2, cfg, () => 0.999999), 399);
  let seed = 1;
  const lcg = () => ((seed = (seed * 48271) % 2147483647) / 2147483647);
  const draws = Array.from({ length: 2000 }, () => backoffDelayMs(3, cfg, lcg));
  assert.ok(draws.every((d) => d >= 0 && d < 800));
  const mean = draws.reduce((a, b) => a + b, 0) / draws.length;
  assert.ok(Math.abs(mean - 400) < 25, `mean ${mean}`);
});

const s3Error = (name: string, status: number) => Object.assign(new Error('UnknownError'), { name, $metadata: { httpStatusCode: status } });
const nodeError = (code: string) => Object.assign(new Error(`connect ${code} 127.0.0.1:9`), { code });

test('server errors, throttling, timeouts and broken connections are retryable; client errors are not', () => {
  for (const e of [s3Error('InternalError', 500), s3Error('ServiceUnavailable', 503), s3Error('SlowDown', 503), s3Error('TooManyRequests', 429),
    nodeError('ECONNREFUSED'), nodeError('ECONNRESET'), nodeError('ETIMEDOUT'), Object.assign(new Error('timed out'), { name: 'TimeoutError' }),
    new Error('wrapped', { cause: nodeError('EPIPE') })]) {
    assert.ok(isRetryable(e), `${e.name} ${e.message} should be retried`);
  }
  for (const e of [s3Error('NoSuchKey', 404), s3Error('AccessDenied', 403), s3Error('SignatureDoesNotMatch', 403), s3Error('InvalidRange', 416),
    new Error('Region is missing'), 'not even an error']) {
    assert.ok(!isRetryable(e), `${String(e)} should not be retried`);
  }
});

test('a call that keeps failing transiently is tried maxAttempts times, waiting the jittered backoff between', async () => {
  const waits: number[] = [];
  let calls = 0;
  const err = await withRetries(
    async () => {
      calls++;
      throw nodeError('ECONNREFUSED');
    },
    cfg,
    { random: () => 0.5, sleep: async (ms) => void waits.push(ms) },
  ).catch((e: unknown) => e);
  assert.ok(err instanceof RetriesExhaustedError);
  assert.equal(err.attempts, 4);
  assert.match(err.message, /gave up after 4 attempts: connect ECONNREFUSED/);
  assert.equal(calls, 4);
  assert.deepEqual(waits, [50, 100, 200]);
});

test('a call that recovers returns its value; a final error is rethrown at once', async () => {
  let calls = 0;
  const noWait = { sleep: async () => {} };
  assert.equal(await withRetries(async () => (++calls < 3 ? Promise.reject(s3Error('InternalError', 500)) : 'ok'), cfg, noWait), 'ok');
  assert.equal(calls, 3);
  calls = 0;
  const denied = s3Error('AccessDenied', 403);
  await assert.rejects(withRetries(async () => (calls++, Promise.reject(denied)), cfg, noWait), (e) => e === denied);
  assert.equal(calls, 1);
});

test('errors are described by code and status when the server sent no message', () => {
  assert.equal(describeError(s3Error('NoSuchBucket', 404)), 'NoSuchBucket (HTTP 404)');
  assert.equal(describeError(nodeError('ECONNREFUSED')), 'connect ECONNREFUSED 127.0.0.1:9');
  assert.match(describeError(new Error('Region is missing')), /set AWS_REGION/);
});
