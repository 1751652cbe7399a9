// Errors as they cross from a worker thread to its owner: a StrataError keeps its kind, a file-system
// error its code, anything else only its message.
import { type ErrorKind, StrataError } from '../errors.ts';

/** An error as it crosses threads: a StrataError's kind, or a file-system error's code. */
export interface WireError {
  kind?: ErrorKind;
  code?: string;
  message: string;
}

export function toWire(err: unknown): WireError {
  const message = err instanceof Error ? err.message : String(err);
  if (err instanceof StrataError) return { kind: err.kind, message };
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? { code, message } : { message };
}

export function fromWire(w: WireError): Error {
  if (w.kind !== undefined) return new StrataError(w.kind, w.message);
  const err: Error & { code?: string } = new Error(w.message);
  if (w.code !== undefined) err.code = w.code;
  return err;
}
