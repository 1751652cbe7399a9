import assert from 'node:assert/strict';
import { test } from 'node:test';
import { status } from '@grpc/grpc-js';
import * as errors from '../../errors.ts';
import { errorFromStatus, grpcCode, INTERNAL_MESSAGE, statusOf } from './status.ts';

const expected: [errors.StrataError, status][] = [
  [errors.notFound('x'), status.NOT_FOUND],
  [errors.alreadyExists('x'), status.ALREADY_EXISTS],
  [errors.invalidArgument('x'), status.INVALID_ARGUMENT],
  [errors.failedPrecondition('x'), status.FAILED_PRECONDITION],
  [errors.unavailable('x'), status.UNAVAILABLE],
  [errors.outOfRange('x'), status.OUT_OF_RANGE],
  [errors.unauthenticated('x'), status.UNAUTHENTICATED],
  [errors.permissionDenied('x'), status.PERMISSION_DENIED],
  [errors.resourceExhausted('x'), status.RESOURCE_EXHAUSTED],
  [errors.deadlineExceeded('x'), status.DEADLINE_EXCEEDED],
  [errors.aborted('x'), status.ABORTED],
  [errors.unimplemented('x'), status.UNIMPLEMENTED],
  [errors.dataLoss('x'), status.DATA_LOSS],
  [errors.internal('x'), status.INTERNAL],
];

test('every error kind maps to its gRPC code and keeps its message', () => {
  for (const [err, code] of expected) {
    assert.deepEqual(statusOf(err), { code, details: 'x', unexpected: false }, err.kind);
    assert.equal(grpcCode(err.kind), code);
  }
});

test('anything else is INTERNAL with a generic message', () => {
  for (const err of [new Error('/secret/path'), 'a string', undefined, { code: 5 }]) {
    assert.deepEqual(statusOf(err), { code: status.INTERNAL, details: INTERNAL_MESSAGE, unexpected: true });
  }
});

test('client-side statuses come back as the matching kinds', () => {
  for (const [err, code] of expected) {
    const back = errorFromStatus({ code, details: 'remote said no' }, 'GetImageSpec');
    assert.equal(back.kind, err.kind);
    assert.equal(back.message, 'GetImageSpec: remote said no');
  }
  // Transport trouble is worth retrying, so it reads as Unavailable.
  assert.equal(errorFromStatus({ code: status.CANCELLED, details: 'x' }, 'call').kind, 'Unavailable');
  assert.equal(errorFromStatus({ code: status.UNKNOWN, details: 'x' }, 'call').kind, 'Unavailable');
  assert.equal(errorFromStatus(new Error('weird'), 'call').kind, 'Internal');
  const refused = errorFromStatus(
    {
      code: status.UNAVAILABLE,
      details:
        'No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:1. Resolution note: ',
    },
    'spec store 127.0.0.1:1: ListImageSpecs',
  );
  assert.equal(
    refused.message,
    'spec store 127.0.0.1:1: ListImageSpecs: cannot connect (connect ECONNREFUSED 127.0.0.1:1): is the server running there?',
  );
  const other = errorFromStatus(
    { code: status.UNAVAILABLE, details: 'DNS resolution failed for nope:1: Error: oops. Resolution note: ' },
    'call',
  );
  assert.equal(other.message, 'call: DNS resolution failed for nope:1: Error: oops.');
  const mine = errors.notFound('already ours');
  assert.equal(errorFromStatus(mine, 'call'), mine);
});
