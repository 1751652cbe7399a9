import assert from 'node:assert/strict';
import { type TestContext, test } from 'node:test';
import { createClient } from 'redis';
import { freezableProxy } from '../../../test/helpers/freezable-proxy.ts';
import { waitFor } from '../../../test/helpers/process.ts';
import { startRedis } from '../../../test/helpers/redis.ts';
import { RedisStore } from './redis-store.ts';
import { type SharedCodec, SharedStore, type SharedStoreEvents } from './shared-store.ts';

const text: SharedCodec<string> = {
  version: 1,
  encode: (v) => new TextEncoder().encode(v),
  decode: (_k, b) => new TextDecoder().decode(b),
};

/** The store's events as lines: outages, reads and writes by kind and outcome, refused writes. */
function recorder() {
  const seen: string[] = [];
  const events: SharedStoreEvents = {
    onDown: () => seen.push('down'),
    onRead: (kind, outcome) => seen.push(`read ${kind} ${outcome}`),
    onWrite: (kind, outcome) => seen.push(`write ${kind} ${outcome}`),
    onWritesRefused: (err) => seen.push(`refused ${String(err).includes('OOM')}`),
  };
  return { seen, events };
}

test('a key of another type (a list, say) is a corrupt value, not an outage: the store stays in use and the next write replaces it', async (t) => {
  const redis = await startRedis(t);
  const { seen, events } = recorder();
  const kv = new RedisStore(redis.url);
  const store = new SharedStore(kv, { keyPrefix: 'p:', timeoutMs: 5000, probeMs: 60_000, events });
  const raw = createClient({ url: redis.url });
  try {
    await kv.ready(5000);
    await raw.connect();
    await raw.rPush('p:v1:k:a', 'not a string value');
    assert.equal(await store.read('k', 'a', text), undefined);
    assert.ok(store.up, 'one odd key does not take the shared cache out of use');
    await store.write('k', 'a', text, 'v');
    assert.deepEqual((await store.read('k', 'a', text))?.value, 'v');
    assert.deepEqual(seen, ['read k corrupt', 'write k ok', 'read k hit']);
  } finally {
    await raw.close().catch(() => {});
    store.close();
    kv.close();
  }
});

test("replicas pushing to one list at once keep each other's items; the list is bounded, newest first, and a value pushed again moves to the front", async (t) => {
  const redis = await startRedis(t);
  const replicas = [new RedisStore(redis.url), new RedisStore(redis.url)];
  const raw = createClient({ url: redis.url });
  raw.on('error', () => {});
  t.after(async () => {
    await raw.close().catch(() => {});
    for (const kv of replicas) kv.close();
  });
  await Promise.all(replicas.map((kv) => kv.ready(5000)));
  await raw.connect();
  const stores = replicas.map((kv) => new SharedStore(kv, { keyPrefix: 'p:', timeoutMs: 5000 }));
  const lists = stores.map((s) => s.list('recent', text, 64, 60_000));
  // Two replicas, each sharing the compositions it makes under one name as fast as Redis answers.
  await Promise.all(
    lists.map(async (list, w) => {
      for (let n = 0; n < 20; n++) await list.push('name', `${w}-${n}`);
    }),
  );
  const got = await lists[1]!.get('name');
  assert.equal(got?.value.length, 40, "no push lost another replica's");
  const newestFirst = [...Array(20).keys()].reverse();
  for (const w of [0, 1]) {
    assert.deepEqual(
      got?.value.filter((v) => v.startsWith(`${w}-`)),
      newestFirst.map((n) => `${w}-${n}`),
    );
  }
  assert.ok(got?.ttlMs !== undefined && got.ttlMs > 0 && got.ttlMs <= 60_000, String(got?.ttlMs));

  const short = stores[0]!.list('short', text, 4);
  // Something else under the key (a string): the next push replaces it, as a write would.
  await raw.set('p:v1:short:k', 'not a list');
  for (let n = 0; n < 10; n++) await short.push('k', String(n));
  await short.push('k', '7');
  assert.deepEqual(await short.get('k'), { value: ['7', '9', '8', '6'] });
  assert.equal(await raw.lLen('p:v1:short:k'), 4);
});

/** A shared store on a Redis behind a freezable proxy, quick to give up and to probe, holding k:a. */
async function storeBehindProxy(t: TestContext) {
  const redis = await startRedis(t);
  const proxy = await freezableProxy(redis.port);
  t.after(() => proxy.close());
  const seen: string[] = [];
  const events: SharedStoreEvents = { onDown: () => seen.push('down'), onUp: () => seen.push('up') };
  const kv = new RedisStore(proxy.url);
  const store = new SharedStore(kv, { keyPrefix: 'p:', timeoutMs: 200, probeMs: 100, events });
  t.after(() => {
    store.close();
    kv.close();
  });
  await kv.ready(5000);
  await store.write('k', 'a', text, 'v');
  return { proxy, store, seen };
}

test('a connection that stops answering without closing is replaced: Redis is used again once a new connection answers', async (t) => {
  const { proxy, store, seen } = await storeBehindProxy(t);
  assert.equal((await store.read('k', 'a', text))?.value, 'v');

  proxy.freeze();
  assert.equal(await store.read('k', 'a', text), undefined);
  assert.equal(store.up, false);
  await waitFor(() => store.up, 15_000, { what: 'the shared store in use again on a new connection' });
  assert.equal((await store.read('k', 'a', text))?.value, 'v');
  assert.deepEqual(seen, ['down', 'up']);
});

test('a new connection whose handshake is never answered is given up after a bound: Redis is used again once a connection answers', async (t) => {
  const { proxy, store, seen } = await storeBehindProxy(t);

  // Redis goes silent behind the open connection, and the next one is accepted and never answered.
  proxy.freeze();
  proxy.hold(true);
  assert.equal(await store.read('k', 'a', text), undefined);
  assert.equal(store.up, false);
  await waitFor(() => proxy.held === 1, 5000, { what: 'a new connection, its handshake unanswered' });
  proxy.hold(false);
  await waitFor(() => store.up, 15_000, {
    what: 'the shared store in use again on a connection that answers',
  });
  assert.equal((await store.read('k', 'a', text))?.value, 'v');
  assert.deepEqual(seen, ['down', 'up']);
  assert.equal(proxy.held, 0, 'the connection that hung was closed');
});

test('a write Redis refuses (full, read-only replica) is not an outage: reads go on, one warning until a write is taken again', async (t) => {
  const redis = await startRedis(t);
  const { seen, events } = recorder();
  const kv = new RedisStore(redis.url);
  const store = new SharedStore(kv, { keyPrefix: 'p:', timeoutMs: 5000, probeMs: 60_000, events });
  const raw = createClient({ url: redis.url });
  raw.on('error', () => {});
  t.after(async () => {
    await raw.close().catch(() => {});
    store.close();
    kv.close();
  });
  await kv.ready(5000);
  await raw.connect();
  await store.write('k', 'a', text, 'v');
  // Full, and evicting nothing (Redis's default policy): it refuses every write that takes memory.
  const used = /used_memory:(\d+)/.exec(await raw.info('memory'))![1]!;
  await raw.configSet({ 'maxmemory-policy': 'noeviction', maxmemory: used });
  const big = 'x'.repeat(64 * 1024);
  await store.write('k', 'b', text, big);
  await store.write('k', 'c', text, big);
  assert.ok(store.up, 'a full Redis still answers reads');
  assert.equal((await store.read('k', 'a', text))?.value, 'v');
  await raw.configSet({ maxmemory: '0' });
  await store.write('k', 'b', text, big);
  await raw.configSet({ maxmemory: used });
  await store.write('k', 'c', text, big);
  assert.deepEqual(seen, [
    'write k ok',
    'refused true',
    'write k refused',
    'write k refused',
    'read k hit',
    'write k ok',
    'refused true',
    'write k refused',
  ]);
});
