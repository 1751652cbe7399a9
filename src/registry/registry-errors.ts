// Registry answers turned into the project's error taxonomy. The distribution spec's error body is
// `{"errors":[{"code","message","detail"}]}`; its codes refine what the HTTP status says.
import {
  dataLoss,
  failedPrecondition,
  internal,
  invalidArgument,
  messageOf,
  notFound,
  outOfRange,
  permissionDenied,
  StrataError,
  unauthenticated,
  unavailable,
  unimplemented,
} from '../errors.ts';
import { parseRetryAfter } from './retry.ts';

export interface RegistryErrorEntry {
  code: string;
  message?: string;
  detail?: unknown;
}

/** Error bodies are read up to this size; the rest is not worth holding. */
export const MAX_ERROR_BODY = 64 * 1024;

/** The error entries of a registry error body; empty when the body is not one. */
export function parseErrorBody(body: Uint8Array | string): RegistryErrorEntry[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(typeof body === 'string' ? body : Buffer.from(body).toString('utf8'));
  } catch {
    return [];
  }
  const errors = (parsed as { errors?: unknown } | null)?.errors;
  if (!Array.isArray(errors)) return [];
  const out: RegistryErrorEntry[] = [];
  for (const e of errors.slice(0, 16)) {
    if (typeof e !== 'object' || e === null || typeof (e as { code?: unknown }).code !== 'string') continue;
    const { code, message, detail } = e as { code: string; message?: unknown; detail?: unknown };
    out.push({
      code,
      ...(typeof message === 'string' ? { message } : {}),
      ...(detail !== undefined ? { detail } : {}),
    });
  }
  return out;
}

/**
 * What JSON.parse said about text that is not JSON, unless it quotes that text: V8 quotes up to about 20
 * characters of it, which in a token response or a docker config may be a secret.
 */
export function jsonProblem(err: unknown): string {
  const said = messageOf(err);
  return said.includes('"') ? 'unexpected text' : said;
}

const NOT_FOUND_CODES = new Set(['MANIFEST_UNKNOWN', 'BLOB_UNKNOWN', 'NAME_UNKNOWN', 'BLOB_UPLOAD_UNKNOWN']);
const INVALID_CODES = new Set([
  'NAME_INVALID',
  'TAG_INVALID',
  'MANIFEST_INVALID',
  'MANIFEST_UNVERIFIED',
  'SIZE_INVALID',
  'BLOB_UPLOAD_INVALID',
  'PAGINATION_NUMBER_INVALID',
  'RANGE_INVALID',
]);

/**
 * A registry's "too many requests" (429, TOOMANYREQUESTS): ResourceExhausted like the client's own size
 * caps, but one that passes with time, so a caller may stand in for the registry meanwhile.
 */
class RateLimited extends StrataError {
  constructor(message: string, retryAfterMs: number | undefined) {
    super('ResourceExhausted', message, retryAfterMs === undefined ? undefined : { retryAfterMs });
  }
}

/** Whether `err` is a registry's rate limit (rather than, say, an answer too big to accept). */
export function isRateLimited(err: unknown): boolean {
  return err instanceof RateLimited;
}

/**
 * Where the credentials for a registry stood when it answered 401 all the same: none configured for it,
 * some sent and refused, or none sent because it is reached over plain HTTP on another machine.
 */
export type CredentialsState = 'none' | 'refused' | 'plain-http';

/** ` CODE: message` of an error body's first entry, or nothing: what a message adds to the status. */
export function saidIn(entries: readonly RegistryErrorEntry[]): string {
  const first = entries[0];
  return first ? ` ${first.code}${first.message ? `: ${first.message}` : ''}` : '';
}

/**
 * A registry's refusal to authenticate, worded for the person who has to give credentials: which host
 * asks, and whether credentials were missing, refused or held back; `answer` is what came back.
 */
export function unauthorizedError(
  what: string,
  host: string,
  state: CredentialsState,
  answer: string,
): StrataError {
  const why =
    state === 'none'
      ? `${host} asks for credentials, and none are configured for it`
      : state === 'refused'
        ? `${host} refused the credentials configured for it (wrong, or without access to this)`
        : `${host} asks for credentials, which are never sent over plain HTTP to another machine (reach it over HTTPS)`;
  return unauthenticated(`${what}: ${why}; ${answer}`);
}

/**
 * The error for a registry answer. `what` says what was attempted and on what (`fetch manifest
 * reg/app:1`); the message adds the status and the registry's own code and message. A rate limit or a
 * server error keeps the answer's Retry-After, for whoever passes the refusal on.
 */
export function registryError(
  status: number,
  entries: readonly RegistryErrorEntry[],
  what: string,
  retryAfter?: string | string[],
): StrataError {
  const code = entries[0]?.code.toUpperCase();
  const said = saidIn(entries);
  const msg = `${what}: registry answered ${status}${said}`;
  if (status === 401 || code === 'UNAUTHORIZED') return unauthenticated(msg);
  if (status === 403 || code === 'DENIED') return permissionDenied(msg);
  const retryAfterMs = parseRetryAfter(retryAfter);
  if (status === 429 || code === 'TOOMANYREQUESTS') return new RateLimited(msg, retryAfterMs);
  if (status === 404 || (code !== undefined && NOT_FOUND_CODES.has(code))) return notFound(msg);
  if (code === 'DIGEST_INVALID') return dataLoss(msg);
  if (code === 'MANIFEST_BLOB_UNKNOWN') return failedPrecondition(msg);
  if (code === 'UNSUPPORTED' || status === 405 || status === 501) return unimplemented(msg);
  if (status === 416) return outOfRange(msg);
  // A registry down for maintenance may say when to come back (RFC 9110 gives 503 Retry-After).
  if (status >= 500) return unavailable(msg, retryAfterMs === undefined ? undefined : { retryAfterMs });
  if (status === 409 || status === 412) return failedPrecondition(msg);
  if ((code !== undefined && INVALID_CODES.has(code)) || (status >= 400 && status < 500))
    return invalidArgument(msg);
  return internal(`${what}: unexpected answer ${status}${said}`);
}
