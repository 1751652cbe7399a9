import assert from 'node:assert/strict';
import { test } from 'node:test';
import { freePort } from '../../test/helpers/ports.ts';
import { errorKind } from '../errors.ts';
import { SharedBuilds } from './shared-builds.ts';

test('a Redis that cannot be reached at start fails the connection in time, naming the host, never the password', {
  timeout: 15_000,
}, async () => {
  const port = await freePort(); // nothing listens there
  const started = Date.now();
  const err = await SharedBuilds.connect({
    url: `redis://builder:s3cret@127.0.0.1:${port}`,
    connectTimeoutMs: 500,
  }).then(
    () => assert.fail('connected to nothing'),
    (e: unknown) => e,
  );
  assert.ok(Date.now() - started < 5000, `took ${Date.now() - started} ms`);
  assert.equal(errorKind(err), 'Unavailable');
  const message = (err as Error).message;
  assert.match(message, new RegExp(`cannot reach Redis at 127\\.0\\.0\\.1:${port}: .*ECONNREFUSED`));
  assert.doesNotMatch(message, /s3cret/);
});
