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
  const owner = (ref: string) => `strata:builder:v1:owner:${ref}`;
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

test('entries of another format (replicas of another release on the same Redis) are misses, neither errors nor answers', async (t) => {
  const redis = await startRedis(t);
  const shared = await SharedBuilds.connect({ url: redis.url, pollMs: 10 });
  const raw = createClient({ url: redis.url });
  await raw.connect();
  try {
    const ref = 'reg/ws:1';
    // What a release before formats had versions wrote (no version in its keys), and what a later one
    // writes under its own: a build of the same image in progress, in shapes this release cannot read.
    for (const v of ['', 'v2:']) {
      const key = (k: string) => `strata:builder:${v}${k}`;
      await raw.set(key(`owner:${ref}`), 'replica-of-another-release', {
        expiration: { type: 'PX', value: 60_000 },
      });
      await raw.rPush(key(`updates:${ref}`), '{"state":"BUILDING","image":"reg/ws:1"}');
      await raw.rPush(key(`updates:${ref}`), 'not json at all');
      await raw.set(key('build:b1'), ref);
      await raw.rPush(key('log:b1'), 'their log\n');
    }
    assert.equal(await shared.last(ref), undefined);
    assert.equal(await shared.refOf('b1'), undefined);
    assert.equal(await shared.hasLog('b1'), false);
    const claim = await shared.claim(ref);
    assert.ok(claim, 'another release’s claim does not hold this one’s replicas back');
    const mine = { status: 'succeeded', ref, baseRef: 'reg/base:1', message: '' } as const;
    assert.equal(await shared.publish(claim, mine), true);
    assert.deepEqual(await shared.last(ref), mine);
    await claim.release();
    // Theirs are left as they were, for their own replicas.
    assert.equal(await raw.lLen(`strata:builder:updates:${ref}`), 2);
    assert.equal(await raw.get(`strata:builder:v2:owner:${ref}`), 'replica-of-another-release');

    // An unreadable update under this release's own keys is passed over, not thrown.
    const other = 'reg/ws:2';
    const owned = await shared.claim(other);
    assert.ok(owned);
    await raw.rPush(`strata:builder:v1:updates:${other}`, '{"status":"done"}');
    assert.equal(await shared.last(other), undefined);
    const end = { status: 'failed', ref: other, baseRef: 'reg/base:1', message: 'boom' } as const;
    await shared.publish(owned, end);
    const seen = [];
    for await (const u of shared.follow(other)) seen.push(u);
    assert.deepEqual(seen, [end]);
    await owned.release();
  } finally {
    shared.close();
    raw.destroy();
  }
});
