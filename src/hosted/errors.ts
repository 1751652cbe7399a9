// Errors of the hosted repositories that carry the distribution spec's code, because the generic kinds
// cannot say which "unknown" or "invalid" was meant (an upload, a blob a manifest names, a size). The edge
// turns the code into a status; the domain only names it.
import { type ErrorKind, StrataError } from '../errors.ts';

export type RegistryErrorCode =
  | 'BLOB_UNKNOWN'
  | 'BLOB_UPLOAD_INVALID'
  | 'BLOB_UPLOAD_UNKNOWN'
  | 'DIGEST_INVALID'
  | 'MANIFEST_BLOB_UNKNOWN'
  | 'MANIFEST_INVALID'
  | 'MANIFEST_UNKNOWN'
  | 'NAME_INVALID'
  | 'NAME_UNKNOWN'
  | 'SIZE_INVALID'
  | 'RANGE_INVALID'
  | 'UNSUPPORTED';

const KIND: Record<RegistryErrorCode, ErrorKind> = {
  BLOB_UNKNOWN: 'NotFound',
  BLOB_UPLOAD_INVALID: 'InvalidArgument',
  BLOB_UPLOAD_UNKNOWN: 'NotFound',
  DIGEST_INVALID: 'InvalidArgument',
  MANIFEST_BLOB_UNKNOWN: 'InvalidArgument',
  MANIFEST_INVALID: 'InvalidArgument',
  MANIFEST_UNKNOWN: 'NotFound',
  NAME_INVALID: 'InvalidArgument',
  NAME_UNKNOWN: 'NotFound',
  SIZE_INVALID: 'InvalidArgument',
  RANGE_INVALID: 'OutOfRange',
  UNSUPPORTED: 'Unimplemented',
};

/**
 * What the code does not say and the answer depends on: a body over a size limit (the spec answers a
 * manifest over the limit with 413, its code saying what was refused), or no room left on the disk.
 */
export type RegistryErrorReason = 'too-large' | 'no-space';

export class RegistryError extends StrataError {
  readonly code: RegistryErrorCode;
  readonly detail: unknown;
  readonly reason: RegistryErrorReason | undefined;
  constructor(code: RegistryErrorCode, message: string, detail?: unknown, reason?: RegistryErrorReason) {
    super(reason === undefined ? KIND[code] : 'ResourceExhausted', message);
    this.code = code;
    this.detail = detail;
    this.reason = reason;
  }
}

export function registryError(
  code: RegistryErrorCode,
  message: string,
  detail?: unknown,
  reason?: RegistryErrorReason,
): RegistryError {
  return new RegistryError(code, message, detail, reason);
}

/** MANIFEST_INVALID for a manifest over `limit` bytes, answered as too large. */
export function manifestTooLarge(limit: number): RegistryError {
  return registryError(
    'MANIFEST_INVALID',
    `the manifest is larger than ${limit} bytes, the most this registry takes`,
    undefined,
    'too-large',
  );
}
