import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { LoadingCache } from '../providers/ttl-lru.ts';
import { type KeyValueStore, type SharedCodec, SharedStore, type SharedStoreEvents } from './shared-store.ts';

/** An in-memory store that can fail every call, or never answer. */
class FakeStore implements KeyValueStore {
  readonly values = new Map<string, { value: Uint8Array; ttlMs?: number }>();
  readonly lists = new Map<string, { items: Uint8Array[]; ttlMs?: number }>();
  mode: 'ok' | 'fail' | 'hang' = 'ok';
  calls = 0;
  private answer<T>(v: () => T): Promise<T> {
    this.calls++;
    if (this.mode === 'fail') return Promise.reject(new Error('connection refused'));
    if (this.mode === 'hang') return new Promise<T>(() => {});
    return Promise.resolve(v());
  }
  get(key: string, maxBytes: number) {
    return this.answer(() => {
      const v = this.values.get(key);
      return v && { ...v, value: v.value.subarray(0, maxBytes + 1) };
    });
  }
  set(key: string, value: Uint8Array, ttlMs: number | undefined) {
    return this.answer(() => {
      this.values.set(key, ttlMs === undefined ? { value } : { value, ttlMs });
    });
  }
  getList(key: string, maxItems: number, maxBytes: number) {
    return this.answer(() => {
      const l = this.lists.get(key);
      return l && { ...l, items: l.items.slice(0, maxItems).map((i) => i.subarray(0, maxBytes + 1)) };
    });
  }
  pushList(key: string, item: Uint8Array, maxItems: number, ttlMs: number | undefined) {
    return this.answer(() => {
      const same = (i: Uint8Array) => Buffer.from(i).equals(item);
      const items = [item, ...(this.lists.get(key)?.items ?? []).filter((i) => !same(i))].slice(0, maxItems);
      this.lists.set(key, ttlMs === undefined ? { items } : { items, ttlMs });
    });
  }
  ping() {
    return this.answer(() => undefined);
  }
}

const text: SharedCodec<string> = {
  version: 1,
  encode: (v) => new TextEncoder().encode(v),
  decode: (_k, b) => {
    const s = new TextDecoder().decode(b);
    if (s.startsWith('bad')) throw new Error('not a value');
    return s;
  },
};

function recorder() {
  const seen: string[] = [];
  const events: SharedStoreEvents = {
    onDown: () => seen.push('down'),
    onUp: () => seen.push('up'),
    onRead: (kind, outcome) => seen.push(`read ${kind} ${outcome}`),
    onWrite: (kind, outcome) => seen.push(`write ${kind} ${outcome}`),
    onCorrupt: (kind) => seen.push(`corrupt ${kind}`),
  };
  return { seen, events };
}

describe('SharedStore', () => {
  test('values round-trip under the key prefix, format version and kind, with their time to live', async () => {
    const kv = new FakeStore();
    const { seen, events } = recorder();
    const shared = new SharedStore(kv, { keyPrefix: 'p:', events });
    const tags = shared.tier('tag', text, 5000);
    const forever = shared.tier('composed', text);
    assert.equal(await tags.get('a'), undefined);
    await tags.set('a', 'one');
    await forever.set('a', 'two');
    assert.deepEqual([...kv.values.keys()], ['p:v1:tag:a', 'p:v1:composed:a']);
    assert.equal(kv.values.get('p:v1:tag:a')?.ttlMs, 5000);
    assert.equal(kv.values.get('p:v1:composed:a')?.ttlMs, undefined, 'content-addressed values never expire');
    assert.deepEqual(await tags.get('a'), { value: 'one', ttlMs: 5000 });
    assert.deepEqual(await forever.get('a'), { value: 'two' });
    assert.deepEqual(seen, [
      'read tag miss',
      'write tag ok',
      'write composed ok',
      'read tag hit',
      'read composed hit',
    ]);
  });

  test('a value changed in the store, or one its codec refuses, is ignored and counted; the next write replaces it', async () => {
    const kv = new FakeStore();
    const { seen, events } = recorder();
    const t = new SharedStore(kv, { events }).tier('spec', text);
    await t.set('x', 'hello');
    const stored = kv.values.get('strata:facade:v1:spec:x')!;
    const flipped = Uint8Array.from(stored.value);
    flipped[flipped.length - 1]! ^= 1;
    kv.values.set('strata:facade:v1:spec:x', { value: flipped });
    assert.equal(await t.get('x'), undefined);
    kv.values.set('strata:facade:v1:spec:x', { value: stored.value.subarray(0, 20) });
    assert.equal(await t.get('x'), undefined, 'cut short');
    await t.set('x', 'bad value');
    assert.equal(await t.get('x'), undefined, 'refused by the codec');
    await t.set('x', 'hello');
    assert.deepEqual(await t.get('x'), { value: 'hello' });
    assert.equal(seen.filter((s) => s === 'corrupt spec').length, 3);
    assert.equal(seen.filter((s) => s === 'read spec corrupt').length, 3);
  });

  test('a value in another format (written by a replica of another version) is a miss, neither corrupt nor a wrong answer', async () => {
    const kv = new FakeStore();
    const { seen, events } = recorder();
    const utf8 = new TextEncoder();
    const decoded = (b: Uint8Array) => Number(new TextDecoder().decode(b));
    // Version 1 stored a pause in milliseconds; version 2 stores it in seconds, under the same kind.
    const millis: SharedCodec<number> = {
      version: 1,
      encode: (ms) => utf8.encode(String(ms)),
      decode: (_k, b) => decoded(b),
    };
    const seconds: SharedCodec<number> = {
      version: 2,
      encode: (ms) => utf8.encode(String(ms / 1000)),
      decode: (_k, b) => decoded(b) * 1000,
    };
    const older = new SharedStore(kv, { keyPrefix: 'p:', events }).tier('pause', millis);
    const newer = new SharedStore(kv, { keyPrefix: 'p:', events }).tier('pause', seconds);
    await older.set('a', 1500);
    assert.equal(await newer.get('a'), undefined);
    await newer.set('a', 2500);
    assert.deepEqual(await older.get('a'), { value: 1500 }, 'each version keeps its own entry');
    assert.deepEqual(await newer.get('a'), { value: 2500 });
    assert.deepEqual(seen, [
      'write pause ok',
      'read pause miss',
      'write pause ok',
      'read pause hit',
      'read pause hit',
    ]);
  });

  test('lists: newest first, bounded, under the key prefix, format version and kind; a bad item is counted and left out', async () => {
    const kv = new FakeStore();
    const { seen, events } = recorder();
    const recent = new SharedStore(kv, { keyPrefix: 'p:', events }).list('recent', text, 3, 5000);
    assert.equal(await recent.get('n'), undefined);
    for (const v of ['a', 'b', 'c', 'd', 'b']) await recent.push('n', v);
    assert.deepEqual(await recent.get('n'), { value: ['b', 'd', 'c'], ttlMs: 5000 });
    assert.deepEqual([...kv.lists.keys()], ['p:v1:recent:n']);
    const items = kv.lists.get('p:v1:recent:n')!.items;
    const flipped = Uint8Array.from(items[1]!);
    flipped[flipped.length - 1]! ^= 1;
    items[1] = flipped;
    assert.deepEqual(await recent.get('n'), { value: ['b', 'c'], ttlMs: 5000 });
    assert.deepEqual(seen.slice(0, 1), ['read recent miss']);
    assert.deepEqual(seen.slice(-3), ['read recent hit', 'read recent corrupt', 'corrupt recent']);
    assert.equal(seen.filter((s) => s === 'write recent ok').length, 5);
  });

  test('values over the size bound are neither stored nor trusted when read back', async () => {
    const kv = new FakeStore();
    const { seen, events } = recorder();
    const shared = new SharedStore(kv, { events, maxValueBytes: 16 });
    const t = shared.tier('composed', text);
    await t.set('big', 'x'.repeat(17));
    assert.equal(kv.values.size, 0);
    assert.ok(seen.includes('write composed too-large'));
    // Written by someone with a larger bound: read back no more than the bound (plus one), and refused.
    await new SharedStore(kv, { maxValueBytes: 1000 }).tier('composed', text).set('big', 'y'.repeat(100));
    assert.equal(await t.get('big'), undefined);
    assert.ok(seen.includes('read composed corrupt'));
  });

  test('a failing store is out of use until a probe answers: one down and one up event per outage', async () => {
    const kv = new FakeStore();
    const { seen, events } = recorder();
    const shared = new SharedStore(kv, { events, probeMs: 10 });
    const t = shared.tier('tag', text, 1000);
    await t.set('a', 'one');
    kv.mode = 'fail';
    assert.equal(await t.get('a'), undefined);
    assert.equal(shared.up, false);
    const callsWhenDown = kv.calls;
    for (let i = 0; i < 5; i++) {
      assert.equal(await t.get('a'), undefined);
      await t.set('b', 'two');
    }
    assert.ok(kv.calls - callsWhenDown <= 5, 'requests do not call a store that is down (probes may)');
    assert.deepEqual(
      seen.filter((s) => s === 'down' || s === 'up'),
      ['down'],
    );
    assert.ok(seen.includes('read tag skipped') && seen.includes('write tag skipped'));
    kv.mode = 'ok';
    while (!shared.up) await sleep(5);
    assert.deepEqual(await t.get('a'), { value: 'one', ttlMs: 1000 });
    kv.mode = 'fail';
    await t.get('a');
    kv.mode = 'ok';
    while (!shared.up) await sleep(5);
    assert.deepEqual(
      seen.filter((s) => s === 'down' || s === 'up'),
      ['down', 'up', 'down', 'up'],
    );
    shared.close();
  });

  test('a store that never answers costs a call its timeout, and takes the store out of use', async () => {
    const kv = new FakeStore();
    const { seen, events } = recorder();
    const shared = new SharedStore(kv, { events, timeoutMs: 20, probeMs: 10 });
    const t = shared.tier('tag', text, 1000);
    kv.mode = 'hang';
    assert.equal(await t.get('a'), undefined);
    await t.set('a', 'one');
    assert.deepEqual(seen, ['down', 'read tag error', 'write tag skipped']);
    await shared.start();
    kv.mode = 'ok';
    while (!shared.up) await sleep(5);
    shared.close();
  });

  test('start reports a store that is down at start', async () => {
    const kv = new FakeStore();
    kv.mode = 'fail';
    const { seen, events } = recorder();
    const shared = new SharedStore(kv, { events, probeMs: 10 });
    await shared.start();
    assert.equal(shared.up, false);
    assert.deepEqual(seen, ['down']);
    shared.close();
  });
});

describe('LoadingCache with a tier', () => {
  test('memory, then the tier (for no longer than the tier keeps it), then a load given to the tier', async () => {
    let now = 0;
    const tier = new Map<string, { value: number; ttlMs?: number }>();
    const cache = new LoadingCache<string, number>({
      maxEntries: 10,
      ttlMs: 1000,
      now: () => now,
      tier: {
        get: async (k) => tier.get(k),
        set: async (k, v) => {
          tier.set(k, { value: v, ttlMs: 1000 });
        },
      },
    });
    let loads = 0;
    const load = async () => ++loads * 10;
    assert.equal(await cache.get('a', load), 10);
    assert.deepEqual(tier.get('a'), { value: 10, ttlMs: 1000 });
    tier.set('b', { value: 7, ttlMs: 100 });
    assert.equal(await cache.get('b', load), 7);
    assert.equal(loads, 1);
    tier.delete('b');
    now = 99;
    assert.equal(await cache.get('b', load), 7, 'still in memory');
    now = 100;
    assert.equal(await cache.get('b', load), 20, 'kept in memory no longer than the tier had it');
  });
});
