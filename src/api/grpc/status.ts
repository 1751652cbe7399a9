// The one mapping between Strata's error taxonomy and gRPC status codes, both directions.
import { status } from '@grpc/grpc-js';
import { type ErrorKind, StrataError } from '../../errors.ts';

const codeByKind: Record<ErrorKind, status> = {
  NotFound: status.NOT_FOUND,
  AlreadyExists: status.ALREADY_EXISTS,
  InvalidArgument: status.INVALID_ARGUMENT,
  FailedPrecondition: status.FAILED_PRECONDITION,
  Unavailable: status.UNAVAILABLE,
  OutOfRange: status.OUT_OF_RANGE,
  Unauthenticated: status.UNAUTHENTICATED,
  PermissionDenied: status.PERMISSION_DENIED,
  ResourceExhausted: status.RESOURCE_EXHAUSTED,
  DeadlineExceeded: status.DEADLINE_EXCEEDED,
  Aborted: status.ABORTED,
  Unimplemented: status.UNIMPLEMENTED,
  DataLoss: status.DATA_LOSS,
  Internal: status.INTERNAL,
  Unknown: status.UNKNOWN,
};

// A client's UNKNOWN is mostly a transport failure, so it is not read back as Unknown (see errorFromStatus).
const kindByCode = new Map<status, ErrorKind>(
  Object.entries(codeByKind)
    .filter(([kind]) => kind !== 'Unknown')
    .map(([kind, code]) => [code, kind as ErrorKind]),
);

/** What a failed call sends: a code and the message the client sees. */
export interface CallStatus {
  code: status;
  details: string;
  /** True when the error was not one of ours, so its real message went to the log, not the client. */
  unexpected: boolean;
}

/** The message clients get for errors we did not classify; the details stay in our log. */
export const INTERNAL_MESSAGE = 'internal error';

export function grpcCode(kind: ErrorKind): status {
  return codeByKind[kind];
}

export function statusOf(err: unknown): CallStatus {
  if (err instanceof StrataError) {
    return { code: codeByKind[err.kind], details: err.message, unexpected: false };
  }
  return { code: status.INTERNAL, details: INTERNAL_MESSAGE, unexpected: true };
}

interface StatusLike {
  code: number;
  details?: string;
  message?: string;
}

function isStatusLike(err: unknown): err is StatusLike {
  return typeof err === 'object' && err !== null && typeof (err as { code?: unknown }).code === 'number';
}

/**
 * Turns an error a gRPC client received into our taxonomy, so callers of remote services (spec
 * providers, builders) use the same predicates as for local errors. Transport failures
 * (CANCELLED, UNKNOWN) become Unavailable.
 */
export function errorFromStatus(err: unknown, what: string): StrataError {
  if (err instanceof StrataError) return err;
  if (!isStatusLike(err)) {
    return new StrataError('Internal', `${what}: ${err instanceof Error ? err.message : String(err)}`, {
      cause: err,
    });
  }
  const kind = kindByCode.get(err.code) ?? 'Unavailable';
  return new StrataError(kind, `${what}: ${statusDetails(err)}`, { cause: err });
}

/** grpc-js's text for a connection it could not make: the group is the system's reason. */
const NO_CONNECTION =
  /^No connection established\. Last error: (?:Error: )?(.+?)\.?(?:\s*Resolution note:.*)?$/s;

/**
 * What a status a gRPC client received says, in our words: grpc-js's text for a connection it could not
 * make ("No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:1. Resolution
 * note: ") reads "cannot connect (connect ECONNREFUSED 127.0.0.1:1): is the server running there?".
 */
export function statusDetails(err: { details?: string; message?: string }): string {
  const details = err.details ?? err.message ?? '';
  const reason = NO_CONNECTION.exec(details)?.[1];
  if (reason !== undefined) return `cannot connect (${reason}): is the server running there?`;
  // grpc-js ends other failed connections' details with "Resolution note: " and nothing after it.
  return details.replace(/\s*Resolution note:\s*$/, '');
}
