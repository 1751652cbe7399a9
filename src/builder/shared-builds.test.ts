import assert from 'node:assert/strict';
import { test } from 'node:test';
import { freePort } from '../../test/helpers/ports.ts';
import { startRedis } from '../../test/helpers/redis.ts';
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

test('a shared log follower that fell behind the trimmed list gets every line still kept, none skipped', async (t) => {
  const redis = await startRedis(t);
  const shared = await SharedBuilds.connect({ url: redis.url, maxLogEntries: 3, pollMs: 10 });
  try {
    const release = await shared.claim('reg/ws:1');
    assert.ok(release);
    await shared.appendLog('b1', 'a\n');
    await shared.appendLog('b1', 'b\n');
    const follower = shared.followLog('b1', 'reg/ws:1');
    assert.equal((await follower.next()).value?.toString(), 'a\nb\n');
    for (const line of ['c\n', 'd\n', 'e\n']) await shared.appendLog('b1', line);
    await shared.finishLog('b1');
    let rest = '';
    for await (const chunk of { [Symbol.asyncIterator]: () => follower }) rest += chunk.toString();
    assert.equal(rest, 'c\nd\ne\n');
    await release();
  } finally {
    await shared.close();
  }
});
