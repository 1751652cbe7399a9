import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isNotFound, notFound, unavailable } from '../../errors.ts';
import type { ImageSpec } from '../spec.ts';
import { CachingSpecProvider, CompositeSpecProvider, type SpecProvider } from './provider.ts';
import { LoadingCache, TtlLru } from './ttl-lru.ts';

const spec = (baseRef: string): ImageSpec => ({
  baseRef,
  ideRef: '',
  supervisorRef: '',
  ideLayerRefs: [],
  contentLayers: [],
});

/** A provider that answers from a map, counts calls, and can be made to fail or to wait. */
class CountingProvider implements SpecProvider {
  calls = 0;
  specs = new Map<string, ImageSpec>();
  failure: Error | undefined;
  gate: Promise<void> | undefined;
  async getSpec(id: string): Promise<ImageSpec> {
    this.calls++;
    await this.gate;
    if (this.failure) throw this.failure;
    const s = this.specs.get(id);
    if (!s) throw notFound(`spec ${id}: not found`);
    return s;
  }
}

describe('TtlLru', () => {
  test('entries expire after their time to live; the least recently used goes first when full', () => {
    let now = 1000;
    const lru = new TtlLru<string, number>({ maxEntries: 2, ttlMs: 100, now: () => now });
    lru.set('a', 1);
    lru.set('b', 2);
    assert.equal(lru.get('a'), 1); // a is now the most recently used
    lru.set('c', 3);
    assert.equal(lru.get('b'), undefined);
    assert.deepEqual(lru.values(), [1, 3]);
    now += 100;
    assert.equal(lru.get('a'), undefined);
    assert.equal(lru.size, 1);
    assert.deepEqual(lru.values(), []);
    assert.equal(lru.size, 0);
  });

  test('with maxBytes, the least recently used go first once the values add up past it', () => {
    const lru = new TtlLru<string, Uint8Array>({
      maxEntries: 100,
      ttlMs: 1000,
      maxBytes: 10,
      sizeOf: (v) => v.byteLength,
    });
    lru.set('a', new Uint8Array(4));
    lru.set('b', new Uint8Array(4));
    assert.ok(lru.get('a')); // a is now the most recently used
    lru.set('c', new Uint8Array(4));
    assert.equal(lru.get('b'), undefined);
    assert.deepEqual([lru.get('a')?.byteLength, lru.get('c')?.byteLength], [4, 4]);
    // A value bigger than the whole bound is not kept, and pushes nothing out.
    lru.set('huge', new Uint8Array(11));
    assert.equal(lru.get('huge'), undefined);
    assert.equal(lru.size, 2);
  });

  test('bad bounds are refused', () => {
    const sizeOf = () => 1;
    assert.throws(() => new TtlLru({ maxEntries: 1, ttlMs: 1, maxBytes: 0, sizeOf }), RangeError);
    assert.throws(() => new TtlLru({ maxEntries: 1, ttlMs: 1, maxBytes: 10 }), /go together/);
    assert.throws(() => new TtlLru({ maxEntries: 1, ttlMs: 1, sizeOf }), /go together/);
    assert.throws(() => new TtlLru({ maxEntries: 0, ttlMs: 1 }), RangeError);
    assert.throws(() => new TtlLru({ maxEntries: 1.5, ttlMs: 1 }), RangeError);
    assert.throws(() => new TtlLru({ maxEntries: 1, ttlMs: 0 }), RangeError);
    assert.throws(() => new TtlLru({ maxEntries: 1, ttlMs: Number.NaN }), RangeError);
  });
});

describe('LoadingCache', () => {
  test('concurrent loads of one key share one call; failures are not kept; successes expire', async () => {
    let now = 0;
    const cache = new LoadingCache<string, number>({ maxEntries: 10, ttlMs: 50, now: () => now });
    let loads = 0;
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const load = async () => {
      loads++;
      await gate;
      return loads;
    };
    const both = Promise.all([cache.get('k', load), cache.get('k', load)]);
    release();
    assert.deepEqual(await both, [1, 1]);
    assert.equal(await cache.get('k', load), 1);
    assert.equal(loads, 1);
    now = 50;
    assert.equal(await cache.get('k', load), 2);

    await assert.rejects(
      cache.get('bad', async () => {
        throw unavailable('down');
      }),
      /down/,
    );
    assert.equal(await cache.get('bad', async () => 7), 7);
  });
});

describe('CachingSpecProvider', () => {
  test('remembers specs, not errors; bounded by entries', async () => {
    const inner = new CountingProvider();
    inner.specs.set('a', spec('r/a:1'));
    inner.specs.set('b', spec('r/b:1'));
    inner.specs.set('c', spec('r/c:1'));
    const cached = new CachingSpecProvider(inner, { ttlMs: 60_000, maxEntries: 2 });
    assert.equal((await cached.getSpec('a')).baseRef, 'r/a:1');
    assert.equal((await cached.getSpec('a')).baseRef, 'r/a:1');
    assert.equal(inner.calls, 1);

    // NotFound is an answer for now, not for later: the spec may appear.
    await assert.rejects(cached.getSpec('later'), isNotFound);
    inner.specs.set('later', spec('r/later:1'));
    assert.equal((await cached.getSpec('later')).baseRef, 'r/later:1');

    inner.failure = unavailable('provider down');
    await assert.rejects(cached.getSpec('b'), /provider down/);
    inner.failure = undefined;
    assert.equal((await cached.getSpec('b')).baseRef, 'r/b:1');

    // Two entries at most: asking for c drops the least recently used.
    const before = inner.calls;
    await cached.getSpec('c');
    await cached.getSpec('b');
    assert.equal(inner.calls, before + 1);
    await cached.getSpec('later');
    assert.equal(inner.calls, before + 2);

    cached.forget('b');
    await cached.getSpec('b');
    assert.equal(inner.calls, before + 3);
  });

  test('bounded by bytes too: a spec counts its direct layers', async () => {
    const inner = new CountingProvider();
    const big = (baseRef: string): ImageSpec => ({
      ...spec(baseRef),
      contentLayers: [{ kind: 'direct', content: new Uint8Array(1000) }],
    });
    for (const id of ['a', 'b', 'c']) inner.specs.set(id, big(`r/${id}:1`));
    const cached = new CachingSpecProvider(inner, { ttlMs: 60_000, maxEntries: 100, maxBytes: 2500 });
    for (const id of ['a', 'b', 'c']) await cached.getSpec(id);
    assert.equal(inner.calls, 3);
    await cached.getSpec('c');
    await cached.getSpec('b');
    assert.equal(inner.calls, 3);
    await cached.getSpec('a'); // the least recently used, let go for c
    assert.equal(inner.calls, 4);
  });

  test('concurrent asks for one id make one call', async () => {
    const inner = new CountingProvider();
    inner.specs.set('a', spec('r/a:1'));
    let release: () => void = () => {};
    inner.gate = new Promise((r) => {
      release = r;
    });
    const cached = new CachingSpecProvider(inner, { ttlMs: 60_000, maxEntries: 8 });
    const asks = Promise.all(Array.from({ length: 5 }, () => cached.getSpec('a')));
    release();
    assert.equal((await asks).length, 5);
    assert.equal(inner.calls, 1);
  });
});

describe('CompositeSpecProvider', () => {
  test('asks in order and the first spec wins', async () => {
    const first = new CountingProvider();
    const second = new CountingProvider();
    first.specs.set('x', spec('r/first:1'));
    second.specs.set('x', spec('r/second:1'));
    second.specs.set('y', spec('r/second-y:1'));
    const c = new CompositeSpecProvider([first, second]);
    assert.equal((await c.getSpec('x')).baseRef, 'r/first:1');
    assert.equal(second.calls, 0);
    assert.equal((await c.getSpec('y')).baseRef, 'r/second-y:1');
  });

  test('NotFound only when every provider says so; otherwise the failure', async () => {
    const a = new CountingProvider();
    const b = new CountingProvider();
    await assert.rejects(new CompositeSpecProvider([a, b]).getSpec('z'), isNotFound);
    a.failure = unavailable('a is down');
    await assert.rejects(new CompositeSpecProvider([a, b]).getSpec('z'), /a is down/);
    await assert.rejects(new CompositeSpecProvider([]).getSpec('z'), isNotFound);
  });
});
