import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createClient } from 'redis';
import { freezableProxy } from '../../test/helpers/freezable-proxy.ts';
import { freePort } from '../../test/helpers/ports.ts';
import { waitFor, within } from '../../test/helpers/process.ts';
import { startRedis } from '../../test/helpers/redis.ts';
import { errorKind } from '../errors.ts';
import { SharedBuilds } from './shared-builds.ts';

test('a Redis that cannot be reached at start fails the connection in time, naming the host, never the password', {
  timeout: 15_000,
}, async () => {
  const port = await freePort(); // nothing listens there
  // Without the connect bound the client retries forever and the test's own timeout fails it.
  const err = await SharedBuilds.connect({
    url: `redis://builder:s3cret@127.0.0.1:${port}`,
    connectTimeoutMs: 500,
  }).then(
    () => assert.fail('connected to nothing'),
    (e: unknown) => e,
  );
  assert.equal(errorKind(err), 'Unavailable');
  const message = (err as Error).message;
  assert.match(message, new RegExp(`cannot reach Redis at 127\\.0\\.0\\.1:${port}: .*ECONNREFUSED`));
  assert.doesNotMatch(message, /s3cret/);
});

test('a shared log follower that fell behind the trimmed list gets every line still kept, none skipped', async (t) => {
  const redis = await startRedis(t);
  const shared = await SharedBuilds.connect({ url: redis.url, maxLogEntries: 3, pollMs: 10 });
  try {
    const claim = await shared.claim('reg/ws:1');
    assert.ok(claim);
    await shared.appendLog('b1', 'a\n');
    await shared.appendLog('b1', 'b\n');
    const follower = shared.followLog('b1', 'reg/ws:1');
    assert.equal((await follower.next()).value?.toString(), 'a\nb\n');
    for (const line of ['c\n', 'd\n', 'e\n']) await shared.appendLog('b1', line);
    await shared.finishLog('b1');
    let rest = '';
    for await (const chunk of { [Symbol.asyncIterator]: () => follower }) rest += chunk.toString();
    assert.equal(rest, 'c\nd\ne\n');
    await claim.release();
  } finally {
    await shared.close();
  }
});

test('a claim another replica took is found lost, by its renewal or its next publish, and nothing more is published under it', {
  timeout: 30_000,
}, async (t) => {
  const redis = await startRedis(t);
  const shared = await SharedBuilds.connect({ url: redis.url, claimTtlMs: 300 });
  const thief = await SharedBuilds.connect({ url: redis.url });
  const raw = createClient({ url: redis.url });
  await raw.connect();
  const owner = (ref: string) => `strata:builder:owner:${ref}`;
  const update = (ref: string, message: string) =>
    ({ status: 'running', ref, baseRef: 'reg/base:1', message }) as const;
  try {
    // By its renewal: the owner key rewritten (the claim lapsed and another replica claimed it).
    const renewed = await shared.claim('reg/ws:r');
    assert.ok(renewed);
    assert.equal(await shared.publish(renewed, update('reg/ws:r', 'mine')), true);
    await raw.set(owner('reg/ws:r'), 'another-replica');
    await waitFor(() => renewed.lost, 10_000, { what: 'the renewal finding the claim lost' });
    assert.equal(await shared.publish(renewed, update('reg/ws:r', 'late')), false);
    assert.deepEqual(
      (await thief.follow('reg/ws:r').next()).value,
      update('reg/ws:r', 'mine'),
      'only what was published while the claim held',
    );
    await renewed.release();
    assert.equal(await thief.claim('reg/ws:r'), undefined, 'releasing a lost claim leaves the new owner’s');

    // By its next publish, before any renewal could notice.
    const published = await shared.claim('reg/ws:p');
    assert.ok(published);
    await raw.set(owner('reg/ws:p'), 'another-replica');
    assert.equal(await shared.publish(published, update('reg/ws:p', 'late')), false);
    assert.equal(published.lost, true);
    assert.equal(await shared.last('reg/ws:p'), undefined);
  } finally {
    shared.close();
    thief.close();
    raw.destroy();
  }
});

test('a Redis that stops answering without closing costs a command its bound, and a new connection is used', {
  timeout: 60_000,
}, async (t) => {
  const redis = await startRedis(t);
  const proxy = await freezableProxy(redis.port);
  t.after(() => proxy.close());
  const shared = await SharedBuilds.connect({ url: proxy.url });
  t.after(() => shared.close());
  const first = await shared.claim('reg/ws:1');
  assert.ok(first);
  await first.release();

  proxy.freeze();
  // node-redis's own command timeout ends only the wait to be sent: before, this waited for TCP to give up.
  const err = await within(
    shared.claim('reg/ws:2').then(
      () => assert.fail('answered through a frozen connection'),
      (e: unknown) => e,
    ),
    20_000,
    'the claim to fail in time',
  );
  assert.equal(errorKind(err), 'Unavailable');
  assert.match((err as Error).message, /did not answer within/);

  const again = await waitFor(() => shared.claim('reg/ws:3').catch(() => undefined), 20_000, {
    what: 'a claim on a new connection',
  });
  assert.equal(shared.connected, true);
  await again.release();
});
