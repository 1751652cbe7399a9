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

export class RegistryError extends StrataError {
  readonly code: RegistryErrorCode;
  readonly detail: unknown;
  constructor(code: RegistryErrorCode, message: string, detail?: unknown) {
    super(KIND[code], message);
    this.code = code;
    this.detail = detail;
  }
}

export function registryError(code: RegistryErrorCode, message: string, detail?: unknown): RegistryError {
  return new RegistryError(code, message, detail);
}
