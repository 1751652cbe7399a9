// The shared cache's store on Redis (node-redis). The client connects and reconnects in the background, so
// a Redis that is down at start or goes away later never holds the facade up; commands are not queued
// while it is disconnected, the queue of commands sent and unanswered is capped, and every command carries
// the caller's timeout, so a Redis that accepts and never answers costs each call its bound and no more.
// A ping left unanswered on a connection that counts as up gets the client replaced: a Redis gone without a
// reset (its node died, a failover moved its address) leaves a connection that TCP gives up on only after
// many minutes, and until then node-redis would neither notice nor reconnect. So does a new connection whose
// handshake is not answered within the connect timeout (node-redis would wait on it for good).
import { ErrorReply, RESP_TYPES } from 'redis';
import { messageOf } from '../../errors.ts';
import { boundedRedisClient, type RedisCredentials, ReplacingRedisClient } from '../../redis-connection.ts';
import { type KeyValueStore, RefusedWrite, UnreadableValue } from './shared-store.ts';

// One round trip: at most ARGV[1]+1 bytes of the value (GETRANGE's end is inclusive) and its time to live.
const READ = "return {redis.call('GETRANGE', KEYS[1], 0, ARGV[1]), redis.call('PTTL', KEYS[1])}";

// One round trip: a list's first ARGV[1] items, each cut to ARGV[2]+1 bytes, and its time to live.
const READ_LIST = `
local items = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
for i, item in ipairs(items) do items[i] = string.sub(item, 1, tonumber(ARGV[2]) + 1) end
return {items, redis.call('PTTL', KEYS[1])}`;

// A push as one step (a script runs alone in Redis): replicas pushing at once keep each other's items.
// ARGV: the item, how many items the list keeps, its time to live in ms ('' for none). What is under the
// key and not a list is replaced, as SET replaces anything.
const PUSH = `
local t = redis.call('TYPE', KEYS[1]).ok
if t ~= 'list' and t ~= 'none' then redis.call('DEL', KEYS[1]) end
redis.call('LREM', KEYS[1], 0, ARGV[1])
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
if ARGV[3] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1`;

/** Bound of a connection's TCP connect, and then of its handshake. */
const CONNECT_TIMEOUT_MS = 2000;

// Each call carries the caller's own timeout, so the client sets none.
const client = (url: string, credentials: RedisCredentials) =>
  boundedRedisClient(url, credentials, { connectTimeoutMs: CONNECT_TIMEOUT_MS });

type Client = ReturnType<typeof client>;

export class RedisStore implements KeyValueStore {
  private readonly redis: ReplacingRedisClient;
  /** Why the client is not connected (a refused password, an untrusted certificate, …), while it is not. */
  private connectError: string | undefined;

  constructor(url: string, credentials: RedisCredentials = {}) {
    this.redis = new ReplacingRedisClient(
      () => {
        const c = client(url, credentials);
        c.on('error', (err: unknown) => {
          // The client reconnects by itself; the callers' commands fail meanwhile, and say why (see call).
          if (c === this.client) this.connectError = messageOf(err);
        });
        c.on('ready', () => {
          if (c === this.client) this.connectError = undefined;
        });
        return c;
      },
      undefined,
      CONNECT_TIMEOUT_MS,
    );
  }

  private get client(): Client {
    return this.redis.current;
  }

  /** Resolves when the first connection is ready or after `timeoutMs`, whichever comes first. */
  async ready(timeoutMs: number): Promise<void> {
    if (this.client.isReady) return;
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.client.off('ready', done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.client.on('ready', done);
    });
  }

  async get(
    key: string,
    maxBytes: number,
    timeoutMs: number,
  ): Promise<{ value: Uint8Array; ttlMs?: number } | undefined> {
    const reply = await this.read(READ, key, [String(maxBytes)], timeoutMs);
    if (!Array.isArray(reply) || !Buffer.isBuffer(reply[0]) || typeof reply[1] !== 'number') {
      throw new Error('unexpected reply from Redis');
    }
    const [value, pttl] = reply as [Buffer, number];
    // GETRANGE of a missing key is empty; PTTL is -2 for a missing key, -1 for one without expiry.
    if (value.byteLength === 0 || pttl === -2) return undefined;
    return withTtl({ value }, pttl);
  }

  async getList(
    key: string,
    maxItems: number,
    maxBytes: number,
    timeoutMs: number,
  ): Promise<{ items: Uint8Array[]; ttlMs?: number } | undefined> {
    const reply = await this.read(READ_LIST, key, [String(maxItems), String(maxBytes)], timeoutMs);
    if (
      !Array.isArray(reply) ||
      !Array.isArray(reply[0]) ||
      !reply[0].every((item) => Buffer.isBuffer(item)) ||
      typeof reply[1] !== 'number'
    ) {
      throw new Error('unexpected reply from Redis');
    }
    const [items, pttl] = reply as [Buffer[], number];
    if (items.length === 0 || pttl === -2) return undefined;
    return withTtl({ items }, pttl);
  }

  /** A read script's reply; a key of another type (written by something else) is a bad value. */
  private async read(script: string, key: string, args: string[], timeoutMs: number): Promise<unknown> {
    return this.call(() =>
      this.client
        .withCommandOptions({ timeout: timeoutMs, typeMapping: { [RESP_TYPES.BLOB_STRING]: Buffer } })
        .eval(script, { keys: [key], arguments: args }),
    ).catch((err: unknown) => {
      // Not a Redis out of use: it answered.
      if (err instanceof ErrorReply && err.message.startsWith('WRONGTYPE'))
        throw new UnreadableValue(err.message, { cause: err });
      throw err;
    });
  }

  async set(key: string, value: Uint8Array, ttlMs: number | undefined, timeoutMs: number): Promise<void> {
    const c = this.client.withCommandOptions({ timeout: timeoutMs });
    const bytes = asBuffer(value);
    await this.write(() =>
      ttlMs === undefined
        ? c.set(key, bytes)
        : c.set(key, bytes, { expiration: { type: 'PX', value: ttlMs } }),
    );
  }

  async pushList(
    key: string,
    item: Uint8Array,
    maxItems: number,
    ttlMs: number | undefined,
    timeoutMs: number,
  ): Promise<void> {
    const args = [asBuffer(item), String(maxItems), ttlMs === undefined ? '' : String(ttlMs)];
    await this.write(() =>
      this.client.withCommandOptions({ timeout: timeoutMs }).eval(PUSH, { keys: [key], arguments: args }),
    );
  }

  /** A write; an error Redis answers with (OOM when full, READONLY on a replica) leaves reads working. */
  private async write(command: () => Promise<unknown>): Promise<void> {
    await this.call(command).catch((err: unknown) => {
      throw err instanceof ErrorReply ? new RefusedWrite(err.message, { cause: err }) : err;
    });
  }

  async ping(timeoutMs: number): Promise<void> {
    await this.redis.answered(
      (c) => this.call(() => c.withCommandOptions({ timeout: timeoutMs }).ping()),
      timeoutMs,
    );
  }

  /** A command; failing while not connected, it says why the connection failed ("offline" says nothing). */
  private async call<T>(command: () => Promise<T>): Promise<T> {
    try {
      return await command();
    } catch (err) {
      const why = this.client.isReady ? undefined : this.connectError;
      if (why === undefined) throw err;
      throw new Error(`not connected: ${why}`, { cause: err });
    }
  }

  close(): void {
    this.redis.close();
  }
}

function asBuffer(b: Uint8Array): Buffer {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

/** PTTL's answer as a time to live: -1 is a key without expiry. */
function withTtl<T extends object>(got: T, pttl: number): T & { ttlMs?: number } {
  return pttl >= 0 ? { ...got, ttlMs: pttl } : got;
}
