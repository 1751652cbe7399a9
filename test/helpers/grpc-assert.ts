// Assertions shared by the gRPC integration tests.
import assert from 'node:assert/strict';
import { access } from 'node:fs/promises';
import * as grpc from '@grpc/grpc-js';

/** The call must fail with `code`, and with `details` when given (exact string or pattern). */
export async function expectCode(
  p: Promise<unknown>,
  code: grpc.status,
  details?: RegExp | string,
): Promise<void> {
  try {
    await p;
  } catch (err) {
    const e = err as grpc.ServiceError;
    assert.equal(grpc.status[e.code], grpc.status[code], `code (details: ${e.details})`);
    if (typeof details === 'string') assert.equal(e.details, details);
    else if (details) assert.match(e.details, details);
    return;
  }
  assert.fail('call succeeded but should have failed');
}

export const exists = (p: string): Promise<boolean> =>
  access(p).then(
    () => true,
    () => false,
  );
