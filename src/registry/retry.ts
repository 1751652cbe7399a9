// When and how long to wait before trying a registry request again: bounded attempts, exponential
// backoff with full jitter, Retry-After honoured up to a cap, and which failures are worth a retry.
import { aborted } from '../errors.ts';

export interface RetryPolicy {
  /** Total attempts, the first included (1 = never retry). */
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
  /** A server asking for a longer pause than this gets this long. */
  maxRetryAfterMs: number;
  /** The answers asked again (an idempotent request's). */
  statuses: ReadonlySet<number>;
}

/** Statuses that say "not now" rather than "no". */
export const RETRY_STATUSES: ReadonlySet<number> = new Set([429, 502, 503, 504]);

/**
 * What go-retryablehttp's default policy asks again, which the anchor's retrying clients use: 429 and
 * every 5xx but 501 (a registry whose storage backend blinks answers 500).
 */
export const RETRY_STATUSES_WITH_5XX: ReadonlySet<number> = new Set([
  429, 500, 502, 503, 504, 505, 506, 507, 508, 510, 511,
]);

export const DEFAULT_RETRY: RetryPolicy = {
  attempts: 5,
  baseDelayMs: 250,
  maxDelayMs: 8_000,
  maxRetryAfterMs: 30_000,
  statuses: RETRY_STATUSES,
};

/** Full jitter: a uniform pause in [0, min(max, base·2^(retry-1))]. `retry` counts from 1. */
export function backoffDelay(
  policy: Pick<RetryPolicy, 'baseDelayMs' | 'maxDelayMs'>,
  retry: number,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, retry - 1));
  return Math.floor(random() * ceiling);
}

/** Retry-After as milliseconds: delta-seconds or an HTTP date. Undefined when absent or unreadable. */
export function parseRetryAfter(
  value: string | string[] | undefined,
  now: number = Date.now(),
): number | undefined {
  const v = (Array.isArray(value) ? value[0] : value)?.trim();
  if (!v) return undefined;
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  // An HTTP date names its weekday and month; bare numbers like "-1" are not dates.
  if (!/[a-z]{3}/i.test(v)) return undefined;
  const at = Date.parse(v);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - now);
}

/** The pause before retry number `retry`: the server's Retry-After (capped) when it gave one, else backoff. */
export function retryDelay(
  policy: RetryPolicy,
  retry: number,
  retryAfter: string | string[] | undefined,
  random: () => number = Math.random,
  now: number = Date.now(),
): number {
  const asked = parseRetryAfter(retryAfter, now);
  if (asked !== undefined) return Math.min(asked, policy.maxRetryAfterMs);
  return backoffDelay(policy, retry, random);
}

// Failures that happen before the request reaches the server: safe to retry whatever the method.
const NOT_SENT = new Set([
  'ECONNREFUSED',
  'UND_ERR_CONNECT_TIMEOUT',
  'EAI_AGAIN',
  'ENETUNREACH',
  'EHOSTUNREACH',
]);
// Failures after which the server may have seen (part of) the request: retry idempotent requests only.
const MAYBE_SENT = new Set([
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'ECONNABORTED',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
]);

/** The errno-style code of a network error, looking through wrappers. */
export function networkErrorCode(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e && depth < 4; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && (NOT_SENT.has(code) || MAYBE_SENT.has(code))) return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

export function isRetryableNetworkError(err: unknown, idempotent: boolean): boolean {
  const code = networkErrorCode(err);
  if (code === undefined) return false;
  return NOT_SENT.has(code) || (idempotent && MAYBE_SENT.has(code));
}

export function isTimeoutCode(code: string | undefined): boolean {
  return (
    code === 'UND_ERR_CONNECT_TIMEOUT' ||
    code === 'UND_ERR_HEADERS_TIMEOUT' ||
    code === 'UND_ERR_BODY_TIMEOUT'
  );
}

export type Sleep = (ms: number, signal?: AbortSignal) => Promise<void>;

/** A pause that ends early, with Aborted, when the signal fires. */
export const sleep: Sleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(aborted('aborted', { cause: signal.reason }));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(aborted('aborted', { cause: signal?.reason }));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
