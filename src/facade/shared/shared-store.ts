// The cache replicas share (Redis, through the KeyValueStore they are given): a second tier beneath each
// replica's memory. A cache must never make a request worse, so every call is bounded by a short timeout
// and any failure takes the store out of use until a probe finds it answering again: one event when it
// goes, one when it is back (one log line each per outage), and no request waits on a dead or hung store
// meanwhile. Every value carries a checksum and is decoded by its tier's codec, which checks digests
// against the key: a value that fails is counted, ignored, and replaced by the next write. A key names the
// format of its value (the codec's version): replicas of two versions sharing one store during a rollout
// each read only entries in their own format, so a change of format is a miss, never a value misread.
import { createHash } from 'node:crypto';
import type { CacheTier } from '../providers/ttl-lru.ts';

/** What the shared cache needs of a key-value store (RedisStore fits). */
export interface KeyValueStore {
  /** The first `maxBytes + 1` bytes of a value at most (so an oversized one shows), and its time to live. */
  get(
    key: string,
    maxBytes: number,
    timeoutMs: number,
  ): Promise<{ value: Uint8Array; ttlMs?: number } | undefined>;
  /** Stores a value, expiring after `ttlMs` when given (left to the store's eviction otherwise). */
  set(key: string, value: Uint8Array, ttlMs: number | undefined, timeoutMs: number): Promise<void>;
  /** A list's first `maxItems` items, each cut to `maxBytes + 1` bytes at most, and its time to live. */
  getList(
    key: string,
    maxItems: number,
    maxBytes: number,
    timeoutMs: number,
  ): Promise<{ items: Uint8Array[]; ttlMs?: number } | undefined>;
  /**
   * Puts `item` first in a list, in one step: an equal item already there moves to the front, the list
   * keeps its first `maxItems`, and expires `ttlMs` after this push when given. A key that holds
   * something else becomes that list.
   */
  pushList(
    key: string,
    item: Uint8Array,
    maxItems: number,
    ttlMs: number | undefined,
    timeoutMs: number,
  ): Promise<void>;
  ping(timeoutMs: number): Promise<void>;
}

/**
 * What a store's get throws for a key that holds something it cannot read as a value (a Redis list, say):
 * the value is bad, not the store, which stays in use.
 */
export class UnreadableValue extends Error {}

/**
 * What a store's set throws when the store answered and refused the value (a Redis full with nothing it may
 * evict, a read-only replica): reads still work, so the store stays in use.
 */
export class RefusedWrite extends Error {}

export type SharedReadOutcome = 'hit' | 'miss' | 'corrupt' | 'error' | 'skipped';
export type SharedWriteOutcome = 'ok' | 'error' | 'skipped' | 'too-large' | 'refused';

export interface SharedStoreEvents {
  /** The store failed (error or timeout) and is out of use until a probe succeeds. Once per outage. */
  onDown?(err: unknown): void;
  /** A probe succeeded after an outage of `downMs`; the store is used again. */
  onUp?(downMs: number): void;
  /** The store refuses writes and still answers reads. Once until it takes a write again. */
  onWritesRefused?(err: unknown): void;
  onRead?(kind: string, outcome: SharedReadOutcome): void;
  onWrite?(kind: string, outcome: SharedWriteOutcome): void;
  /** A value read back failed its checks (it is ignored, and replaced by the next write). */
  onCorrupt?(kind: string, key: string, err: unknown): void;
}

export interface SharedStoreOptions {
  /** Prepended to every key (default `strata:facade:`), so several deployments can share a Redis. */
  keyPrefix?: string;
  /** Bound of every call (default 250 ms): past it the call counts as failed and the request goes on. */
  timeoutMs?: number;
  /** How often a store that failed is tried again (default 1 s). */
  probeMs?: number;
  /** Largest value stored or read back (default 4 MiB); bigger ones are not shared. */
  maxValueBytes?: number;
  events?: SharedStoreEvents;
}

/**
 * Recent values of one kind under each key, newest first. Each push is one step in the store, so replicas
 * pushing to one list at once keep each other's values (a read, then a write of the list changed, let
 * the later writer drop what the other had pushed in between).
 */
export interface SharedList<V> {
  get(key: string): Promise<{ value: V[]; ttlMs?: number } | undefined>;
  push(key: string, value: V): Promise<void>;
}

/** A tier's value format. decode throws when the bytes are not a valid value for that key. */
export interface SharedCodec<V> {
  /**
   * The format's number, part of the key: bump it with every change to what encode writes (or to how the
   * store seals values), so replicas of different versions never read each other's entries.
   */
  version: number;
  encode(value: V): Uint8Array;
  decode(key: string, bytes: Uint8Array): V;
}

const CHECKSUM_BYTES = 32;

export const DEFAULT_SHARED_TIMEOUT_MS = 250;
export const DEFAULT_SHARED_MAX_VALUE_BYTES = 4 * 1024 * 1024;

class Timeout extends Error {
  constructor(ms: number) {
    super(`no answer within ${ms} ms`);
  }
}

export class SharedStore {
  private readonly store: KeyValueStore;
  private readonly prefix: string;
  private readonly timeoutMs: number;
  private readonly probeMs: number;
  readonly maxValueBytes: number;
  private readonly events: SharedStoreEvents;
  private downSince: number | undefined;
  private probe: NodeJS.Timeout | undefined;
  private probing = false;
  private refusing = false;
  private closed = false;

  constructor(store: KeyValueStore, options: SharedStoreOptions = {}) {
    this.store = store;
    this.prefix = options.keyPrefix ?? 'strata:facade:';
    this.timeoutMs = options.timeoutMs ?? DEFAULT_SHARED_TIMEOUT_MS;
    this.probeMs = options.probeMs ?? 1000;
    this.maxValueBytes = options.maxValueBytes ?? DEFAULT_SHARED_MAX_VALUE_BYTES;
    this.events = options.events ?? {};
  }

  /** Whether the store is in use (not in an outage). */
  get up(): boolean {
    return this.downSince === undefined;
  }

  /** Checks the store once now, so an outage at start is reported at start. */
  async start(): Promise<void> {
    await this.bounded(() => this.store.ping(this.timeoutMs)).catch((err: unknown) => this.down(err));
  }

  close(): void {
    this.closed = true;
    if (this.probe) clearInterval(this.probe);
    this.probe = undefined;
  }

  /**
   * A cache tier of values of one kind, under `<keyPrefix>v<codec version>:<kind>:` (keys of no version
   * came before formats had one); `ttlMs` for values that expire.
   */
  tier<V>(kind: string, codec: SharedCodec<V>, ttlMs?: number): CacheTier<string, V> {
    return {
      get: (key) => this.read(kind, key, codec),
      set: (key, value) => this.write(kind, key, codec, value, ttlMs),
    };
  }

  /**
   * A list of at most `maxItems` values of one kind under each key, newest first, keyed as a tier's values
   * are; `ttlMs` for lists that expire (counted from the last push).
   */
  list<V>(kind: string, codec: SharedCodec<V>, maxItems: number, ttlMs?: number): SharedList<V> {
    return {
      get: (key) => this.readList(kind, key, codec, maxItems),
      push: (key, value) =>
        this.stored(
          kind,
          () => codec.encode(value),
          (sealed) =>
            this.store.pushList(this.key(kind, codec, key), sealed, maxItems, expiry(ttlMs), this.timeoutMs),
        ),
    };
  }

  async read<V>(
    kind: string,
    key: string,
    codec: SharedCodec<V>,
  ): Promise<{ value: V; ttlMs?: number } | undefined> {
    const got = await this.fetched(kind, key, async () => {
      const g = await this.store.get(
        this.key(kind, codec, key),
        CHECKSUM_BYTES + this.maxValueBytes,
        this.timeoutMs,
      );
      return g && g.value.byteLength > 0 ? g : undefined;
    });
    if (!got) return undefined;
    try {
      const value = codec.decode(key, unseal(got.value, this.maxValueBytes));
      this.events.onRead?.(kind, 'hit');
      return withTtl(value, got.ttlMs);
    } catch (err) {
      return this.corrupt(kind, key, err);
    }
  }

  private async readList<V>(
    kind: string,
    key: string,
    codec: SharedCodec<V>,
    maxItems: number,
  ): Promise<{ value: V[]; ttlMs?: number } | undefined> {
    const got = await this.fetched(kind, key, async () => {
      const g = await this.store.getList(
        this.key(kind, codec, key),
        maxItems,
        CHECKSUM_BYTES + this.maxValueBytes,
        this.timeoutMs,
      );
      return g && g.items.length > 0 ? g : undefined;
    });
    if (!got) return undefined;
    const value: V[] = [];
    let bad: unknown;
    for (const item of got.items) {
      try {
        value.push(codec.decode(key, unseal(item, this.maxValueBytes)));
      } catch (err) {
        bad ??= err;
      }
    }
    // A bad item is counted and left out; later pushes move it down until the list's bound drops it.
    if (bad === undefined) this.events.onRead?.(kind, 'hit');
    else this.corrupt(kind, key, bad);
    return value.length === 0 ? undefined : withTtl(value, got.ttlMs);
  }

  /** The store's answer to a read; undefined (reported) when there is none, or the store is down. */
  private async fetched<T>(
    kind: string,
    key: string,
    call: () => Promise<T | undefined>,
  ): Promise<T | undefined> {
    if (!this.up) {
      this.events.onRead?.(kind, 'skipped');
      return undefined;
    }
    let got: T | undefined;
    try {
      got = await this.bounded(call);
    } catch (err) {
      if (err instanceof UnreadableValue) return this.corrupt(kind, key, err);
      this.down(err);
      this.events.onRead?.(kind, 'error');
      return undefined;
    }
    if (got === undefined) this.events.onRead?.(kind, 'miss');
    return got;
  }

  private corrupt(kind: string, key: string, err: unknown): undefined {
    this.events.onRead?.(kind, 'corrupt');
    this.events.onCorrupt?.(kind, key, err);
    return undefined;
  }

  async write<V>(kind: string, key: string, codec: SharedCodec<V>, value: V, ttlMs?: number): Promise<void> {
    await this.stored(
      kind,
      () => codec.encode(value),
      (sealed) => this.store.set(this.key(kind, codec, key), sealed, expiry(ttlMs), this.timeoutMs),
    );
  }

  /** Seals and stores a payload through `call`, unless the store is down or the payload too large. */
  private async stored(
    kind: string,
    encode: () => Uint8Array,
    call: (sealed: Uint8Array) => Promise<void>,
  ): Promise<void> {
    if (!this.up) {
      this.events.onWrite?.(kind, 'skipped');
      return;
    }
    const payload = encode();
    if (payload.byteLength > this.maxValueBytes) {
      this.events.onWrite?.(kind, 'too-large');
      return;
    }
    try {
      await this.bounded(() => call(seal(payload)));
      this.refusing = false;
      this.events.onWrite?.(kind, 'ok');
    } catch (err) {
      if (err instanceof RefusedWrite) {
        if (!this.refusing) this.events.onWritesRefused?.(err);
        this.refusing = true;
        this.events.onWrite?.(kind, 'refused');
        return;
      }
      this.down(err);
      this.events.onWrite?.(kind, 'error');
    }
  }

  private key(kind: string, codec: SharedCodec<unknown>, key: string): string {
    return `${this.prefix}v${codec.version}:${kind}:${key}`;
  }

  /** The call's answer, or a Timeout after timeoutMs (the call is left to finish or fail on its own). */
  private bounded<T>(call: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Timeout(this.timeoutMs)), this.timeoutMs);
      call().then(
        (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        (err: unknown) => {
          clearTimeout(timer);
          reject(err);
        },
      );
    });
  }

  private down(err: unknown): void {
    if (this.downSince !== undefined || this.closed) return;
    this.downSince = Date.now();
    this.events.onDown?.(err);
    this.probe = setInterval(() => void this.tryProbe(), this.probeMs);
    this.probe.unref();
  }

  private async tryProbe(): Promise<void> {
    if (this.probing || this.downSince === undefined) return;
    this.probing = true;
    try {
      await this.bounded(() => this.store.ping(this.timeoutMs));
      const since = this.downSince;
      if (this.probe) clearInterval(this.probe);
      this.probe = undefined;
      this.downSince = undefined;
      if (!this.closed) this.events.onUp?.(Date.now() - since);
    } catch {
      // Still down; the next tick tries again.
    } finally {
      this.probing = false;
    }
  }
}

/** A time to live as the store takes it: whole milliseconds, at least one. */
function expiry(ttlMs: number | undefined): number | undefined {
  return ttlMs === undefined ? undefined : Math.max(1, Math.ceil(ttlMs));
}

function withTtl<V>(value: V, ttlMs: number | undefined): { value: V; ttlMs?: number } {
  return ttlMs === undefined ? { value } : { value, ttlMs };
}

/**
 * A payload with its sha256 in front, so a value changed or cut short in the store shows. A change here
 * changes every kind's format: each codec's version goes up with it.
 */
function seal(payload: Uint8Array): Uint8Array {
  const sum = createHash('sha256').update(payload).digest();
  return Buffer.concat([sum, payload]);
}

function unseal(value: Uint8Array, maxPayload: number): Uint8Array {
  if (value.byteLength < CHECKSUM_BYTES) throw new Error(`value of ${value.byteLength} bytes is cut short`);
  if (value.byteLength > CHECKSUM_BYTES + maxPayload)
    throw new Error(`value is larger than ${maxPayload} bytes`);
  const payload = value.subarray(CHECKSUM_BYTES);
  const sum = createHash('sha256').update(payload).digest();
  if (!sum.equals(value.subarray(0, CHECKSUM_BYTES))) throw new Error('checksum does not match the value');
  return payload;
}
