// Assertions shared by the gRPC integration tests.
import assert from 'node:assert/strict';
import { access } from 'node:fs/promises';
import * as grpc from '@grpc/grpc-js';

/** The code and message a call failed with; fails the test if it succeeded. */
export async function failure(p: Promise<unknown>): Promise<{ code: number; details: string }> {
  try {
    await p;
  } catch (err) {
    const e = err as grpc.ServiceError;
    return { code: e.code, details: e.details };
  }
  assert.fail('call succeeded but should have failed');
}

/** The call must fail with `code`, and with `details` when given (exact string or pattern). */
export async function expectCode(
  p: Promise<unknown>,
  code: grpc.status,
  details?: RegExp | string,
): Promise<void> {
  const f = await failure(p);
  assert.equal(grpc.status[f.code], grpc.status[code], `code (details: ${f.details})`);
  if (typeof details === 'string') assert.equal(f.details, details);
  else if (details) assert.match(f.details, details);
}

export const exists = (p: string): Promise<boolean> =>
  access(p).then(
    () => true,
    () => false,
  );
