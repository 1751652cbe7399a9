import assert from 'node:assert/strict';
import { test } from 'node:test';
import { internal, notFound, resourceExhausted, unavailable } from '../../errors.ts';
import { registryError } from '../../registry/registry-errors.ts';
import { FairTurns } from '../auth/fair-turns.ts';
import {
  DEFAULT_RETRY_AFTER_SECONDS,
  errorBody,
  MAX_RETRY_AFTER_SECONDS,
  OciHttpError,
  ociErrorOf,
} from './oci-errors.ts';

test('a password check turned away from a full line is 429 TOOMANYREQUESTS with Retry-After', async () => {
  const turns = new FairTurns({ atOnce: 1, maxWaiting: 1 });
  const end = await turns.take('10.0.0.1');
  const waiting = turns.take('10.0.0.1');
  const refused = await turns.take('10.0.0.1').catch((err: unknown) => err);
  const e = ociErrorOf(refused, 'manifest');
  assert.equal(e.status, 429);
  assert.equal(e.code, 'TOOMANYREQUESTS');
  assert.equal(e.retryAfterSeconds, 1);
  assert.equal(JSON.parse(errorBody(e)).errors[0].code, 'TOOMANYREQUESTS');
  end();
  (await waiting)();
});

test('the check a flood loses its place with is told to come back too', async () => {
  const turns = new FairTurns({ atOnce: 1, maxWaiting: 2 });
  const end = await turns.take('10.0.0.1');
  const first = turns.take('10.0.0.1');
  const evicted = turns.take('10.0.0.1').catch((err: unknown) => err);
  // Another client's check takes the flood's newest place.
  const other = turns.take('10.0.0.2');
  const e = ociErrorOf(await evicted, 'blob');
  assert.deepEqual([e.status, e.code, e.retryAfterSeconds], [429, 'TOOMANYREQUESTS', 1]);
  end();
  (await first)();
  (await other)();
});

test('Retry-After is whole seconds, rounded up, from the wait the error names, through its causes', () => {
  const own = resourceExhausted('busy', { retryAfterMs: 2500 });
  assert.equal(ociErrorOf(own, 'other').retryAfterSeconds, 3);
  const wrapped = unavailable('spec provider: down', { cause: unavailable('x', { retryAfterMs: 4000 }) });
  assert.equal(ociErrorOf(wrapped, 'manifest').retryAfterSeconds, 4);
  assert.equal(ociErrorOf(resourceExhausted('now', { retryAfterMs: 0 }), 'other').retryAfterSeconds, 0);
});

test("an upstream registry's rate limit passes its Retry-After on; without one the default is sent", () => {
  const limited = registryError(429, [{ code: 'TOOMANYREQUESTS' }], 'fetch manifest r/a:1', '30');
  assert.deepEqual(ociErrorOf(limited, 'manifest'), {
    status: 429,
    code: 'TOOMANYREQUESTS',
    message: 'fetch manifest r/a:1: registry answered 429 TOOMANYREQUESTS',
    retryAfterSeconds: 30,
  });
  const bare = registryError(429, [], 'fetch manifest r/a:1');
  assert.equal(ociErrorOf(bare, 'manifest').retryAfterSeconds, DEFAULT_RETRY_AFTER_SECONDS);
});

test('every 503 carries Retry-After, the draining answer included; other statuses do not', () => {
  const draining = new OciHttpError(503, 'UNAVAILABLE', 'the facade is shutting down; try again');
  assert.equal(ociErrorOf(draining, 'manifest').retryAfterSeconds, DEFAULT_RETRY_AFTER_SECONDS);
  assert.equal(
    ociErrorOf(unavailable('registry down'), 'blob').retryAfterSeconds,
    DEFAULT_RETRY_AFTER_SECONDS,
  );
  for (const err of [notFound('gone'), internal('bug'), new OciHttpError(401, 'UNAUTHORIZED', 'who')]) {
    assert.equal(ociErrorOf(err, 'manifest').retryAfterSeconds, undefined);
  }
});

test("an upstream's huge Retry-After is passed on bounded, as whole seconds a client can read", () => {
  for (const asked of ['9'.repeat(400), '99999999999999999999999', 'Fri, 31 Dec 9999 23:59:59 GMT']) {
    const limited = registryError(429, [{ code: 'TOOMANYREQUESTS' }], 'fetch manifest r/a:1', asked);
    const e = ociErrorOf(limited, 'manifest');
    assert.equal(e.retryAfterSeconds, MAX_RETRY_AFTER_SECONDS, asked);
    assert.match(String(e.retryAfterSeconds), /^\d+$/);
  }
  const own = resourceExhausted('busy', { retryAfterMs: Number.POSITIVE_INFINITY });
  assert.equal(ociErrorOf(own, 'other').retryAfterSeconds, MAX_RETRY_AFTER_SECONDS);
  // Within the bound, the wait asked is kept.
  const day = registryError(429, [], 'fetch manifest r/a:1', String(MAX_RETRY_AFTER_SECONDS));
  assert.equal(ociErrorOf(day, 'manifest').retryAfterSeconds, MAX_RETRY_AFTER_SECONDS);
});

test("an upstream's 503 passes its Retry-After on, as its 429 does", () => {
  const down = registryError(503, [{ code: 'UNAVAILABLE' }], 'fetch manifest r/a:1', '120');
  assert.deepEqual(
    [ociErrorOf(down, 'manifest').status, ociErrorOf(down, 'manifest').retryAfterSeconds],
    [503, 120],
  );
  const bare = registryError(503, [], 'fetch manifest r/a:1');
  assert.equal(ociErrorOf(bare, 'blob').retryAfterSeconds, DEFAULT_RETRY_AFTER_SECONDS);
});
