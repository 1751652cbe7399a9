// containerd namespaces on the wire: the `containerd-namespace` request header, validated with
// containerd's identifier rule and answered with its error messages, which clients show verbatim.
import { failedPrecondition, invalidArgument, isInvalidArgument } from '../../errors.ts';
import type { RequestMetadata } from '../transport/server-call.ts';

export const NAMESPACE_HEADER = 'containerd-namespace';

/** Longest identifier containerd accepts, in bytes. */
export const MAX_IDENTIFIER_BYTES = 76;

// Alphanumeric runs joined by single '.', '_' or '-': no leading, trailing or doubled separators.
const IDENTIFIER = /^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$/;

/**
 * containerd's identifier rule (namespaces, and the names Namespaces.Create takes), with its
 * messages. Length is counted in bytes and checked before the pattern, as containerd does.
 */
export function validateIdentifier(s: string): void {
  if (s === '') throw invalidArgument('identifier must not be empty: invalid argument');
  // JSON quoting stands in for Go's %q; they agree on everything but exotic control characters.
  const quoted = JSON.stringify(s);
  if (Buffer.byteLength(s, 'utf8') > MAX_IDENTIFIER_BYTES) {
    throw invalidArgument(
      `identifier ${quoted} greater than maximum length (${MAX_IDENTIFIER_BYTES} characters): invalid argument`,
    );
  }
  if (!IDENTIFIER.test(s)) {
    throw invalidArgument(`identifier ${quoted} must match ${IDENTIFIER.source}: invalid argument`);
  }
}

/**
 * The namespace of a call: the first `containerd-namespace` value. Missing or empty is
 * FailedPrecondition, as containerd answers every namespaced call without one; an invalid one is
 * InvalidArgument prefixed "namespace validation: ".
 */
export function namespaceOf(metadata: RequestMetadata): string {
  const first = metadata.get(NAMESPACE_HEADER)[0];
  const ns = typeof first === 'string' ? first : (first?.toString('utf8') ?? '');
  if (ns === '') throw failedPrecondition('namespace is required: failed precondition');
  try {
    validateIdentifier(ns);
  } catch (err) {
    if (isInvalidArgument(err)) throw invalidArgument(`namespace validation: ${err.message}`);
    throw err;
  }
  return ns;
}
