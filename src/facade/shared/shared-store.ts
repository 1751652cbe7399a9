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

  async read<V>(
    kind: string,
    key: string,
    codec: SharedCodec<V>,
  ): Promise<{ value: V; ttlMs?: number } | undefined> {
    if (!this.up) {
      this.events.onRead?.(kind, 'skipped');
      return undefined;
    }
    let got: { value: Uint8Array; ttlMs?: number } | undefined;
    try {
      got = await this.bounded(() =>
        this.store.get(this.key(kind, codec, key), CHECKSUM_BYTES + this.maxValueBytes, this.timeoutMs),
      );
    } catch (err) {
      if (err instanceof UnreadableValue) return this.corrupt(kind, key, err);
      this.down(err);
      this.events.onRead?.(kind, 'error');
      return undefined;
    }
    if (!got || got.value.byteLength === 0) {
      this.events.onRead?.(kind, 'miss');
      return undefined;
    }
    try {
      const value = codec.decode(key, unseal(got.value, this.maxValueBytes));
      this.events.onRead?.(kind, 'hit');
      return got.ttlMs === undefined ? { value } : { value, ttlMs: got.ttlMs };
    } catch (err) {
      return this.corrupt(kind, key, err);
    }
  }

  private corrupt(kind: string, key: string, err: unknown): undefined {
    this.events.onRead?.(kind, 'corrupt');
    this.events.onCorrupt?.(kind, key, err);
    return undefined;
  }

  async write<V>(kind: string, key: string, codec: SharedCodec<V>, value: V, ttlMs?: number): Promise<void> {
    if (!this.up) {
      this.events.onWrite?.(kind, 'skipped');
      return;
    }
    const payload = codec.encode(value);
    if (payload.byteLength > this.maxValueBytes) {
      this.events.onWrite?.(kind, 'too-large');
      return;
    }
    try {
      await this.bounded(() =>
        this.store.set(
          this.key(kind, codec, key),
          seal(payload),
          ttlMs === undefined ? undefined : Math.max(1, Math.ceil(ttlMs)),
          this.timeoutMs,
        ),
      );
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
