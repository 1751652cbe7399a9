// OCI distribution error answers: the codes, their HTTP statuses, and the one mapping from the error
// taxonomy (src/errors.ts) to them. Which "unknown" code a NotFound becomes depends on what was asked for.
import { errorKind, messageOf, retryAfterMsOf } from '../../errors.ts';

export type OciErrorCode =
  | 'NAME_UNKNOWN'
  | 'NAME_INVALID'
  | 'MANIFEST_UNKNOWN'
  | 'MANIFEST_INVALID'
  | 'BLOB_UNKNOWN'
  | 'BLOB_UPLOAD_INVALID'
  | 'BLOB_UPLOAD_UNKNOWN'
  | 'MANIFEST_BLOB_UNKNOWN'
  | 'SIZE_INVALID'
  | 'DIGEST_INVALID'
  | 'RANGE_INVALID'
  | 'PAGINATION_NUMBER_INVALID'
  | 'UNSUPPORTED'
  | 'UNAUTHORIZED'
  | 'DENIED'
  | 'TOOMANYREQUESTS'
  | 'UNAVAILABLE'
  | 'UNKNOWN';

export interface OciError {
  status: number;
  code: OciErrorCode;
  message: string;
  detail?: unknown;
  /** Retry-After, in seconds: set on every 429 and 503 answer. */
  retryAfterSeconds?: number;
}

/**
 * Statuses that say "not now" and carry Retry-After (RFC 9110 defines it for 503, RFC 6585 for 429): the
 * distribution spec's TOOMANYREQUESTS, and UNAVAILABLE while draining or an upstream is down.
 */
const TRY_LATER = new Set([429, 503]);

/**
 * The wait sent when the error names none. containers/image waits 2 s, doubling, when an answer has no
 * Retry-After; most of these refusals pass within a second (a password check's place, a replica leaving
 * the load balancer's rotation).
 */
export const DEFAULT_RETRY_AFTER_SECONDS = 1;

/**
 * The longest wait sent: an upstream's Retry-After is passed on, and one of 400 digits or a date in the
 * year 9999 would otherwise go out as "Infinity" or "1e+22", which no client reads as delta-seconds. A day
 * is past any rate-limit window in use; a client told that much comes back and is told again.
 */
export const MAX_RETRY_AFTER_SECONDS = 86_400;

/** What the request was about; decides the code of a NotFound or InvalidArgument. */
export type RouteKind = 'manifest' | 'blob' | 'other';

/** An error the HTTP layer raises itself, with its code and status decided. */
export class OciHttpError extends Error {
  readonly oci: OciError;
  constructor(status: number, code: OciErrorCode, message: string, detail?: unknown) {
    super(message);
    this.oci = { status, code, message, ...(detail === undefined ? {} : { detail }) };
  }
}

export function ociErrorOf(err: unknown, route: RouteKind): OciError {
  const e = err instanceof OciHttpError ? err.oci : answerOf(err, route);
  if (!TRY_LATER.has(e.status)) return e;
  const ms = retryAfterMsOf(err);
  const retryAfterSeconds =
    ms === undefined
      ? DEFAULT_RETRY_AFTER_SECONDS
      : Math.min(MAX_RETRY_AFTER_SECONDS, Math.max(0, Math.ceil(ms / 1000)));
  return { ...e, retryAfterSeconds };
}

function answerOf(err: unknown, route: RouteKind): OciError {
  const message = messageOf(err);
  switch (errorKind(err)) {
    case 'NotFound':
      return {
        status: 404,
        code: route === 'manifest' ? 'MANIFEST_UNKNOWN' : route === 'blob' ? 'BLOB_UNKNOWN' : 'NAME_UNKNOWN',
        message,
      };
    case 'InvalidArgument':
    case 'FailedPrecondition':
      // The spec this name stands for, or an image it names, cannot be composed as it is.
      return {
        status: 400,
        code:
          route === 'blob' ? 'DIGEST_INVALID' : route === 'manifest' ? 'MANIFEST_INVALID' : 'NAME_INVALID',
        message,
      };
    case 'OutOfRange':
      return { status: 416, code: 'RANGE_INVALID', message };
    case 'Unauthenticated':
    case 'PermissionDenied':
      // The client's own credentials are judged before this (OciHttpError above); these are a registry or
      // spec provider refusing the facade. A 401 would need a challenge the client cannot answer and
      // tells it that its credentials are wrong: a bad gateway, like DataLoss below.
      return { status: 502, code: 'DENIED', message };
    case 'ResourceExhausted':
      return { status: 429, code: 'TOOMANYREQUESTS', message };
    case 'Unimplemented':
      return { status: 405, code: 'UNSUPPORTED', message };
    case 'Unavailable':
    case 'Aborted':
      return { status: 503, code: 'UNAVAILABLE', message };
    case 'DeadlineExceeded':
      return { status: 504, code: 'UNAVAILABLE', message };
    case 'DataLoss':
      // An upstream served bytes that are not what they claim: a bad gateway, not our client's fault.
      return { status: 502, code: 'UNAVAILABLE', message };
    default:
      return { status: 500, code: 'UNKNOWN', message: 'internal error' };
  }
}

/** The JSON body of an error answer. */
export function errorBody(e: OciError): string {
  return JSON.stringify({
    errors: [{ code: e.code, message: e.message, detail: e.detail ?? null }],
  });
}
