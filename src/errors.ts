// The one error taxonomy. Domain code throws these; adapters map them to gRPC codes (src/api) and to
// OCI distribution error codes (src/facade) in one place each. Check with the predicates, never by message.

export type ErrorKind =
  | 'NotFound'
  | 'AlreadyExists'
  | 'InvalidArgument'
  | 'FailedPrecondition'
  | 'Unavailable'
  | 'OutOfRange'
  | 'Unauthenticated'
  | 'PermissionDenied'
  | 'ResourceExhausted'
  | 'DeadlineExceeded'
  | 'Aborted'
  | 'Unimplemented'
  | 'DataLoss'
  | 'Internal'
  /** Only where containerd answers Unknown to a request a client can make (its store's own errors). */
  | 'Unknown';

export interface ErrorOptions {
  cause?: unknown;
  /**
   * For a refusal that passes with time (ResourceExhausted, Unavailable): how long the caller had better
   * wait before asking again. The HTTP edge sends it as Retry-After.
   */
  retryAfterMs?: number;
}

export class StrataError extends Error {
  readonly kind: ErrorKind;
  readonly retryAfterMs: number | undefined;
  constructor(kind: ErrorKind, message: string, options?: ErrorOptions) {
    super(message, options);
    this.kind = kind;
    this.name = `${kind}Error`;
    this.retryAfterMs = options?.retryAfterMs;
  }
}

const make =
  (kind: ErrorKind) =>
  (message: string, options?: ErrorOptions): StrataError =>
    new StrataError(kind, message, options);

export const notFound = make('NotFound');
export const alreadyExists = make('AlreadyExists');
export const invalidArgument = make('InvalidArgument');
export const failedPrecondition = make('FailedPrecondition');
export const unavailable = make('Unavailable');
export const outOfRange = make('OutOfRange');
export const unauthenticated = make('Unauthenticated');
export const permissionDenied = make('PermissionDenied');
export const resourceExhausted = make('ResourceExhausted');
export const deadlineExceeded = make('DeadlineExceeded');
export const aborted = make('Aborted');
export const unimplemented = make('Unimplemented');
export const dataLoss = make('DataLoss');
export const internal = make('Internal');
export const unknownError = make('Unknown');

export function errorKind(err: unknown): ErrorKind | undefined {
  return err instanceof StrataError ? err.kind : undefined;
}

const is =
  (kind: ErrorKind) =>
  (err: unknown): err is StrataError =>
    errorKind(err) === kind;

export const isNotFound = is('NotFound');
export const isAlreadyExists = is('AlreadyExists');
export const isInvalidArgument = is('InvalidArgument');
export const isFailedPrecondition = is('FailedPrecondition');
export const isUnavailable = is('Unavailable');
export const isOutOfRange = is('OutOfRange');
export const isUnauthenticated = is('Unauthenticated');
export const isDataLoss = is('DataLoss');

/** The wait an error asks for (see ErrorOptions.retryAfterMs), looking through the errors it wraps. */
export function retryAfterMsOf(err: unknown): number | undefined {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 4; depth++) {
    if (e instanceof StrataError && e.retryAfterMs !== undefined) return e.retryAfterMs;
    e = e.cause;
  }
  return undefined;
}

/** The message of anything thrown, for logs and wrapped errors. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
