import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createClient } from 'redis';
import { startRedis } from '../../../test/helpers/redis.ts';
import { RedisStore } from './redis-store.ts';
import { type SharedCodec, SharedStore, type SharedStoreEvents } from './shared-store.ts';

const text: SharedCodec<string> = {
  encode: (v) => new TextEncoder().encode(v),
  decode: (_k, b) => new TextDecoder().decode(b),
};

test('a key of another type (a list, say) is a corrupt value, not an outage: the store stays in use and the next write replaces it', async (t) => {
  const redis = await startRedis(t);
  const seen: string[] = [];
  const events: SharedStoreEvents = {
    onDown: () => seen.push('down'),
    onRead: (kind, outcome) => seen.push(`read ${kind} ${outcome}`),
    onWrite: (kind, outcome) => seen.push(`write ${kind} ${outcome}`),
  };
  const kv = new RedisStore(redis.url);
  const store = new SharedStore(kv, { keyPrefix: 'p:', timeoutMs: 5000, probeMs: 60_000, events });
  const raw = createClient({ url: redis.url });
  try {
    await kv.ready(5000);
    await raw.connect();
    await raw.rPush('p:k:a', 'not a string value');
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
