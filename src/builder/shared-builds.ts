// Builds shared by builder replicas through Redis: one replica claims a workspace image's build (a key
// with a short expiry it keeps renewing while it builds), publishes the build's updates and log, and the
// other replicas relay them to their callers. A replica that dies stops renewing, its claim lapses within
// the expiry, and a replica still asked for the image claims it and builds. Followers poll (a few reads a
// second per followed build): simple, bounded, and no connection held per subscriber. Every key names
// the format of what is stored under it (as the facade's shared cache does): replicas of two releases
// sharing a Redis during a rollout see nothing of each other's builds, rather than misreading them.
import { randomUUID } from 'node:crypto';
import { messageOf, unavailable } from '../errors.ts';
import { boundedRedisClient, type RedisCredentials, ReplacingRedisClient } from '../redis-connection.ts';

/** What a build's updates look like when shared (the orchestrator's BuildUpdate). */
export interface SharedUpdate {
  status: 'running' | 'succeeded' | 'failed';
  ref: string;
  baseRef: string;
  message: string;
  info?: { id: string };
}

export interface SharedBuildsOptions {
  url: string;
  /** How long a claim outlives its last renewal (default 15 s). */
  claimTtlMs?: number;
  /** How often followers look for news (default 250 ms). */
  pollMs?: number;
  /** How long updates and logs of a finished build stay (default 1 h). */
  keepMs?: number;
  /** Entries of a shared log; older ones are dropped (default 20 000). */
  maxLogEntries?: number;
  /** How long connecting at start may take before it fails (default 10 s). */
  connectTimeoutMs?: number;
  /** A password asked at every connection, TLS files. */
  credentials?: RedisCredentials;
  /** Prefix of every key, so deployments can share a Redis (default `strata:builder:`). */
  keyPrefix?: string;
}

/** A claim on a build: `lost` once another replica holds it (this one's lapsed while Redis was away). */
export class Claim {
  lost = false;
  renewal?: NodeJS.Timeout;
  private readonly end: () => Promise<void>;
  constructor(end: () => Promise<void>) {
    this.end = end;
  }

  lose(): void {
    this.lost = true;
    clearInterval(this.renewal);
  }

  /** Ends the claim (when this replica still holds it); call it when the build is over. */
  async release(): Promise<void> {
    clearInterval(this.renewal);
    if (!this.lost) await this.end();
  }
}

const DEFAULT_KEY_PREFIX = 'strata:builder:';
/**
 * The format of the keys and values below, part of every key (`<prefix>v<N>:owner:<ref>`, …). Bump it with
 * any change to what is written (an update's JSON, the log's entries, what a key holds, the scripts'
 * use of them), so replicas of another release read only misses here. Keys without one came before.
 */
export const SHARED_FORMAT_VERSION = 1;
const COMMAND_TIMEOUT_MS = 5000;
// Takes a free claim and clears the updates of the build before; renews or deletes a claim only if this
// replica still holds it.
const CLAIM =
  "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then redis.call('DEL', KEYS[2]) return 1 end return 0";
const RENEW =
  "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0";
// Appends an update only under this replica's claim: one whose claim lapsed and was taken must not write
// into the list the new owner's followers read.
const PUBLISH =
  "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end " +
  "redis.call('RPUSH', KEYS[2], ARGV[2]) redis.call('PEXPIRE', KEYS[2], ARGV[3]) " +
  "if KEYS[3] then redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[3]) end return 1";
const RELEASE =
  "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";
// A log's entries from the ARGV[1]-th ever appended, with how many were ever appended; the list is
// trimmed at its head, so positions in it shift and are counted from the total instead.
const READ_LOG =
  "local n = tonumber(redis.call('GET', KEYS[2]) or '0') " +
  "local from = tonumber(ARGV[1]) - (n - redis.call('LLEN', KEYS[1])) " +
  'if from < 0 then from = 0 end ' +
  "return {n, redis.call('LRANGE', KEYS[1], from, -1)}";

// With Redis down or hung a command fails in time, and the builder goes on alone rather than waiting.
const redisClient = (url: string, credentials: RedisCredentials) =>
  boundedRedisClient(url, credentials, { connectTimeoutMs: 5000, commandTimeoutMs: COMMAND_TIMEOUT_MS });
type Client = ReturnType<typeof redisClient>;

export class SharedBuilds {
  readonly replica = randomUUID();
  private readonly redis: ReplacingRedisClient;
  private readonly ttl: number;
  private readonly poll: number;
  private readonly keep: number;
  private readonly maxLog: number;
  private readonly prefix: string;

  private constructor(client: Client, o: SharedBuildsOptions) {
    this.redis = new ReplacingRedisClient(() => {
      const fresh = redisClient(o.url, o.credentials ?? {});
      // It reconnects by itself; commands fail meanwhile, and the builder goes on alone.
      fresh.on('error', () => {});
      return fresh;
    }, client);
    this.prefix = `${o.keyPrefix ?? DEFAULT_KEY_PREFIX}v${SHARED_FORMAT_VERSION}:`;
    this.ttl = o.claimTtlMs ?? 15_000;
    this.poll = o.pollMs ?? 250;
    this.keep = o.keepMs ?? 3_600_000;
    this.maxLog = o.maxLogEntries ?? 20_000;
  }

  /**
   * Connects, or fails within `connectTimeoutMs` saying why: the client would otherwise try again forever,
   * and a replica with a Redis it cannot reach would hang at start without a word.
   */
  static async connect(o: SharedBuildsOptions): Promise<SharedBuilds> {
    const client = redisClient(o.url, o.credentials ?? {});
    let lastError: unknown;
    client.on('error', (err: unknown) => {
      // Once connected, failures reach the callers through their commands; the client reconnects by itself.
      lastError = err;
    });
    const ms = o.connectTimeoutMs ?? 10_000;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(lastError ?? new Error(`no answer within ${ms / 1000} s`)), ms);
    });
    try {
      await Promise.race([client.connect(), timeout]);
    } catch (err) {
      client.destroy();
      // The host only: the URL may carry a password.
      throw unavailable(`cannot reach Redis at ${new URL(o.url).host}: ${messageOf(err)}`, { cause: err });
    } finally {
      clearTimeout(timer);
    }
    return new SharedBuilds(client, o);
  }

  /** Whether Redis is reachable now (builds are shared only then). */
  get connected(): boolean {
    return this.redis.current.isReady;
  }

  close(): void {
    // Builds have ended (and released their claims) by the time the builder closes this.
    this.redis.close();
  }

  /**
   * A command, answered within COMMAND_TIMEOUT_MS; a connection that leaves it unanswered that long is
   * replaced (its other commands fail with it), so a Redis gone without a reset holds no build.
   */
  private cmd<T>(command: (c: Client) => Promise<T>): Promise<T> {
    return this.redis.answered(command, COMMAND_TIMEOUT_MS);
  }

  private owner(ref: string): string {
    return `${this.prefix}owner:${ref}`;
  }
  private updates(ref: string): string {
    return `${this.prefix}updates:${ref}`;
  }
  private log(id: string): string {
    return `${this.prefix}log:${id}`;
  }
  private buildRef(id: string): string {
    return `${this.prefix}build:${id}`;
  }

  /**
   * Claims the build of `ref`. Claimed: the updates of an earlier build of it are cleared, and the claim is
   * renewed until released. A renewal or publish that finds another replica's claim marks it lost (this
   * replica's lapsed, e.g. while Redis was out of reach) and stops the renewals. Undefined when another
   * replica holds it.
   */
  async claim(ref: string): Promise<Claim | undefined> {
    // One step, so no follower reads an earlier build's updates under the new claim.
    const owner = this.owner(ref);
    const got = await this.cmd((c) =>
      c.eval(CLAIM, { keys: [owner, this.updates(ref)], arguments: [this.replica, String(this.ttl)] }),
    );
    if (got !== 1) return undefined;
    const claim = new Claim(() =>
      this.cmd((c) => c.eval(RELEASE, { keys: [owner], arguments: [this.replica] })).then(
        () => {},
        () => {},
      ),
    );
    claim.renewal = setInterval(
      () => {
        this.cmd((c) => c.eval(RENEW, { keys: [owner], arguments: [this.replica, String(this.ttl)] }))
          .then((renewed) => {
            if (renewed !== 1) claim.lose();
          })
          // Redis away: the claim may still hold once it is back, or be found lost then.
          .catch(() => {});
      },
      Math.max(50, Math.floor(this.ttl / 3)),
    );
    claim.renewal.unref();
    return claim;
  }

  /**
   * Publishes an update of the build `claim` holds; false, with nothing written, once the claim is lost:
   * the updates of its ref are another replica's build now.
   */
  async publish(claim: Claim, update: SharedUpdate): Promise<boolean> {
    if (claim.lost) return false;
    const keys = [this.owner(update.ref), this.updates(update.ref)];
    if (update.info) keys.push(this.buildRef(update.info.id));
    const done = await this.cmd((c) =>
      c.eval(PUBLISH, {
        keys,
        arguments: [this.replica, JSON.stringify(update), String(this.keep), update.ref],
      }),
    );
    if (done === 1) return true;
    claim.lose();
    return false;
  }

  /** The workspace image a shared build (by id) makes, when some replica published it. */
  async refOf(id: string): Promise<string | undefined> {
    return (await this.cmd((c) => c.get(this.buildRef(id)))) ?? undefined;
  }

  appendLog(id: string, text: string): Promise<unknown> {
    const key = this.log(id);
    const count = `${key}:n`;
    return this.cmd((c) =>
      c
        .multi()
        .rPush(key, text)
        .incr(count)
        .lTrim(key, -this.maxLog, -1)
        .pExpire(key, this.keep)
        .pExpire(count, this.keep)
        .exec(),
    );
  }

  /** Marks a shared log complete. */
  async finishLog(id: string): Promise<void> {
    await this.cmd((c) =>
      c.set(`${this.log(id)}:done`, '1', { expiration: { type: 'PX', value: this.keep } }),
    );
  }

  /** Whether a build's log is shared here (for Logs on a replica that did not run it). */
  async hasLog(id: string): Promise<boolean> {
    return (await this.cmd((c) => c.exists([this.log(id), `${this.log(id)}:done`]))) > 0;
  }

  private sleep(signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, this.poll);
      function done() {
        clearTimeout(t);
        signal?.removeEventListener('abort', done);
        resolve();
      }
      signal?.addEventListener('abort', done, { once: true });
    });
  }

  /**
   * The updates of the build another replica runs for `ref`, from the first; ends after the final one.
   * Returns 'lapsed' when the claim ends with no final update (the owner died).
   */
  async *follow(ref: string, signal?: AbortSignal): AsyncGenerator<SharedUpdate, 'done' | 'lapsed'> {
    let next = 0;
    for (;;) {
      const [owned, items] = await Promise.all([
        this.cmd((c) => c.exists(this.owner(ref))),
        this.cmd((c) => c.lRange(this.updates(ref), next, -1)),
      ]);
      for (const item of items) {
        next++;
        const u = readUpdate(item);
        if (!u) continue;
        yield u;
        if (u.status !== 'running') return 'done';
      }
      if (owned === 0 && items.length === 0) {
        // Gone without an end: look once more, in case the end arrived between the two reads.
        const late = await this.cmd((c) => c.lRange(this.updates(ref), next, -1));
        for (const item of late) {
          const u = readUpdate(item);
          if (!u) continue;
          yield u;
          if (u.status !== 'running') return 'done';
        }
        return 'lapsed';
      }
      if (signal?.aborted) return 'done';
      await this.sleep(signal);
    }
  }

  /**
   * A shared log from its start, until the build is over and all was read (or its owner's claim on `ref`
   * lapsed with the log unfinished).
   */
  async *followLog(id: string, ref: string, signal?: AbortSignal): AsyncGenerator<Buffer> {
    let next = 0;
    for (;;) {
      const [done, owned] = await Promise.all([
        this.cmd((c) => c.exists(`${this.log(id)}:done`)),
        this.cmd((c) => c.exists(this.owner(ref))),
      ]);
      const over = done === 1 || owned === 0;
      const [total, items] = (await this.cmd((c) =>
        c.eval(READ_LOG, { keys: [this.log(id), `${this.log(id)}:n`], arguments: [String(next)] }),
      )) as [number, string[]];
      next = total;
      if (items.length > 0) yield Buffer.from(items.join(''));
      if (over || signal?.aborted) return;
      await this.sleep(signal);
    }
  }

  /** The last update published for `ref`, if any. */
  async last(ref: string): Promise<SharedUpdate | undefined> {
    const items = await this.cmd((c) => c.lRange(this.updates(ref), -1, -1));
    return items[0] === undefined ? undefined : readUpdate(items[0]);
  }
}

const STATUSES: ReadonlySet<unknown> = new Set(['running', 'succeeded', 'failed']);

/** An update read back, or undefined for one that is not (it is passed over, as if not there). */
function readUpdate(text: string): SharedUpdate | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null) return undefined;
  const u = v as Record<string, unknown>;
  const info = u.info as { id?: unknown } | null | undefined;
  const ok =
    STATUSES.has(u.status) &&
    typeof u.ref === 'string' &&
    typeof u.baseRef === 'string' &&
    typeof u.message === 'string' &&
    (info === undefined || (typeof info === 'object' && info !== null && typeof info.id === 'string'));
  return ok ? (v as SharedUpdate) : undefined;
}
