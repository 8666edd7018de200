// Bounded retries with exponential backoff and full jitter (the AWS architecture blog's "full jitter":
// sleep = random(0, min(cap, base · 2^attempt))), for calls to a remote object store.
import { z } from 'zod';

export const RetryConfig = z.object({
  maxAttempts: z.number().int().min(1).default(5).describe('Tries per request, the first included (AWS_MAX_ATTEMPTS sets the default)'),
  baseDelayMs: z.number().min(0).default(100).describe('Backoff ceiling before the first retry; it doubles with each further retry'),
  maxDelayMs: z.number().min(0).default(10_000).describe('Upper bound of the backoff ceiling'),
});
export type RetryConfig = z.infer<typeof RetryConfig>;

/** The most a wait before retry number `retry` (0 = the first retry) may last: min(max, base · 2^retry). */
export function backoffCeilingMs(retry: number, cfg: Pick<RetryConfig, 'baseDelayMs' | 'maxDelayMs'>): number {
  return Math.min(cfg.maxDelayMs, cfg.baseDelayMs * 2 ** retry);
}

/** Full jitter: a uniform draw in [0, ceiling). `random` returns [0,1) (Math.random outside tests). */
export function backoffDelayMs(retry: number, cfg: Pick<RetryConfig, 'baseDelayMs' | 'maxDelayMs'>, random: () => number): number {
  return Math.floor(random() * backoffCeilingMs(retry, cfg));
}

const RETRYABLE_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN',
  'ENOTCONN', 'UND_ERR_SOCKET', 'ERR_STREAM_PREMATURE_CLOSE',
]);
const RETRYABLE_NAMES = new Set([
  'TimeoutError', 'RequestTimeout', 'RequestTimeoutException', 'Throttling', 'ThrottlingException', 'SlowDown',
  'RequestThrottled', 'TooManyRequestsException', 'ServiceUnavailable', 'InternalError',
]);

/**
 * Whether a failed call may succeed if repeated: server errors (5xx), throttling (429, SlowDown…), timeouts and
 * connection failures. Client errors (4xx: missing object, bad credentials, bad request) are final.
 */
export function isRetryable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const e = err as Error & { code?: string; $metadata?: { httpStatusCode?: number }; $retryable?: unknown };
  const status = e.$metadata?.httpStatusCode;
  if (status !== undefined && (status >= 500 || status === 429)) return true;
  if (e.$retryable) return true;
  if (RETRYABLE_NAMES.has(e.name) || (e.code !== undefined && RETRYABLE_CODES.has(e.code))) return true;
  return e.cause !== undefined && e.cause !== err && isRetryable(e.cause);
}

export interface RetryHooks {
  /** Called before each wait; `retry` counts from 1. */
  onRetry?: (err: unknown, retry: number, delayMs: number) => void;
  random?: () => number;
  sleep?: (ms: number) => Promise<void>;
}

export class RetriesExhaustedError extends Error {
  constructor(message: string, readonly attempts: number, options: { cause: unknown }) {
    super(message, options);
    this.name = 'RetriesExhaustedError';
  }
}

/**
 * Calls `fn` until it succeeds, fails with an error that is not retryable (rethrown as is), or has failed
 * `maxAttempts` times (then a RetriesExhaustedError wrapping the last error).
 */
export async function withRetries<T>(fn: (attempt: number) => Promise<T>, cfg: RetryConfig, hooks: RetryHooks = {}): Promise<T> {
  const random = hooks.random ?? Math.random;
  const sleep = hooks.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (!isRetryable(err)) throw err;
      if (attempt >= cfg.maxAttempts) {
        throw new RetriesExhaustedError(`gave up after ${attempt} attempt${attempt === 1 ? '' : 's'}: ${describeError(err)}`, attempt, { cause: err });
      }
      const delay = backoffDelayMs(attempt - 1, cfg, random);
      hooks.onRetry?.(err, attempt, delay);
      await sleep(delay);
    }
  }
}

/** One line for an SDK or Node error: its message, plus its code/status when the message lacks them. */
export function describeError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const e = err as Error & { code?: string; $metadata?: { httpStatusCode?: number } };
  // SDK errors from S3-compatible servers often carry only a code: name = "NoSuchBucket", message = "UnknownError".
  const msg = !e.message || e.message === 'UnknownError' ? e.name : e.message;
  const extra = [e.code && !msg.includes(e.code) ? e.code : '', e.$metadata?.httpStatusCode ? `HTTP ${e.$metadata.httpStatusCode}` : '']
    .filter(Boolean)
    .join(', ');
  const hint = /region is missing/i.test(msg) ? ' (set AWS_REGION or a profile region)' : '';
  return `${msg}${extra ? ` (${extra})` : ''}${hint}`;
}
