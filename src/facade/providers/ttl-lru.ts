// A small bounded map: least recently used entries go first when full, and entries older than their
// time to live are gone. Every in-memory cache of the facade is one of these, so none grows without bound.
import { LRUCache } from 'lru-cache';

export interface TtlLruOptions<V = unknown> {
  /** Most entries held; the least recently used is dropped beyond it. */
  maxEntries: number;
  /**
   * Most bytes held, as `sizeOf` counts each value; the least recently used go first beyond it. For
   * values whose size varies by orders of magnitude, where a count alone bounds nothing useful. A value
   * bigger than this is not kept at all.
   */
  maxBytes?: number;
  sizeOf?: (value: V) => number;
  /** Milliseconds an entry stays valid; Infinity for content-addressed values. */
  ttlMs: number;
  now?: () => number;
}

interface Slot<V> {
  value: V;
  expires: number;
}

/** lru-cache keeps the order and the bound; expiry is checked here, an entry counting as gone at its ttl. */
export class TtlLru<K extends {}, V> {
  private readonly lru: LRUCache<K, Slot<V>>;
  private readonly ttlMs: number;
  private readonly now: () => number;

  constructor(options: TtlLruOptions<V>) {
    if (!Number.isSafeInteger(options.maxEntries) || options.maxEntries < 1) {
      throw new RangeError(`maxEntries must be a positive integer, got ${options.maxEntries}`);
    }
    if (!(options.ttlMs > 0)) throw new RangeError(`ttlMs must be positive, got ${options.ttlMs}`);
    const { maxBytes, sizeOf } = options;
    if ((maxBytes === undefined) !== (sizeOf === undefined))
      throw new RangeError('maxBytes and sizeOf go together');
    if (maxBytes !== undefined && !(Number.isSafeInteger(maxBytes) && maxBytes > 0))
      throw new RangeError(`maxBytes must be a positive integer, got ${maxBytes}`);
    this.lru = new LRUCache({
      max: options.maxEntries,
      ...(maxBytes !== undefined && sizeOf
        ? {
            maxSize: maxBytes,
            sizeCalculation: (slot: Slot<V>) => Math.max(1, Math.ceil(sizeOf(slot.value))),
          }
        : {}),
    });
    this.ttlMs = options.ttlMs;
    this.now = options.now ?? Date.now;
  }

  get size(): number {
    return this.lru.size;
  }

  get(key: K): V | undefined {
    const slot = this.lru.get(key);
    if (!slot) return undefined;
    if (slot.expires <= this.now()) {
      this.lru.delete(key);
      return undefined;
    }
    return slot.value;
  }

  set(key: K, value: V, ttlMs = this.ttlMs): void {
    this.lru.set(key, { value, expires: this.now() + ttlMs });
  }

  delete(key: K): boolean {
    return this.lru.delete(key);
  }

  clear(): void {
    this.lru.clear();
  }

  /** Live values, least recently used first (does not refresh them). */
  values(): V[] {
    const now = this.now();
    const out: V[] = [];
    for (const [key, slot] of [...this.lru.rentries()] as [K, Slot<V>][]) {
      if (slot.expires <= now) this.lru.delete(key);
      else out.push(slot.value);
    }
    return out;
  }
}

/**
 * A slower cache beneath a LoadingCache's memory, shared with other processes (Redis). It is only a
 * cache: a get that cannot answer says undefined, a set that cannot store is dropped, neither throws.
 */
export interface CacheTier<K, V> {
  /** The value and, for entries that expire, how long it has left. */
  get(key: K): Promise<{ value: V; ttlMs?: number } | undefined>;
  set(key: K, value: V): Promise<void>;
}

export interface LoadingCacheOptions<K, V> extends TtlLruOptions<V> {
  /** Asked on a memory miss before loading; given what was loaded. */
  tier?: CacheTier<K, V>;
}

/**
 * Single-flight over a TtlLru: concurrent loads of one key share one promise; only successes are kept.
 * In-flight loads are bounded by the same entry cap (the oldest is forgotten, not cancelled).
 */
export class LoadingCache<K extends {}, V> {
  private readonly cache: TtlLru<K, V>;
  private readonly inflight = new Map<K, Promise<V>>();
  private readonly superseded = new WeakSet<Promise<V>>();
  private readonly maxInflight: number;
  private readonly ttlMs: number;
  private readonly tier: CacheTier<K, V> | undefined;

  constructor(options: LoadingCacheOptions<K, V>) {
    this.cache = new TtlLru(options);
    this.maxInflight = options.maxEntries;
    this.ttlMs = options.ttlMs;
    this.tier = options.tier;
  }

  peek(key: K): V | undefined {
    return this.cache.get(key);
  }

  set(key: K, value: V): void {
    this.cache.set(key, value);
  }

  delete(key: K): void {
    this.cache.delete(key);
  }

  clear(): void {
    this.cache.clear();
  }

  /** A new load, which later gets join: what is held or in flight for `key` may predate a change. */
  reload(key: K, load: () => Promise<V>): Promise<V> {
    this.cache.delete(key);
    const running = this.inflight.get(key);
    // Its value, when it comes, is not kept over the new one.
    if (running) this.superseded.add(running);
    this.inflight.delete(key);
    return this.get(key, load);
  }

  get(key: K, load: () => Promise<V>): Promise<V> {
    const hit = this.cache.get(key);
    if (hit !== undefined) return Promise.resolve(hit);
    const running = this.inflight.get(key);
    if (running) return running;
    const p: Promise<V> = this.loadThroughTier(key, load).then(
      ({ value, ttlMs }) => {
        if (!this.superseded.has(p)) this.cache.set(key, value, ttlMs);
        if (this.inflight.get(key) === p) this.inflight.delete(key);
        return value;
      },
      (err: unknown) => {
        if (this.inflight.get(key) === p) this.inflight.delete(key);
        throw err;
      },
    );
    if (this.inflight.size >= this.maxInflight) {
      this.inflight.delete(this.inflight.keys().next().value as K);
    }
    this.inflight.set(key, p);
    return p;
  }

  /** The tier's value (kept in memory no longer than the tier keeps it), else a fresh load given to the tier. */
  private async loadThroughTier(key: K, load: () => Promise<V>): Promise<{ value: V; ttlMs: number }> {
    const tier = this.tier;
    if (tier) {
      const hit = await tier.get(key);
      if (hit) return { value: hit.value, ttlMs: Math.min(this.ttlMs, hit.ttlMs ?? this.ttlMs) };
    }
    const value = await load();
    if (tier) await tier.set(key, value);
    return { value, ttlMs: this.ttlMs };
  }
}
