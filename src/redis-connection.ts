// How Strata's services reach a Redis beyond its URL: a password asked at every connection (so a rotated
// secret is used from the next reconnection on, without a restart) and TLS with files of its own. The
// facade's shared cache and the builder's shared builds both connect this way, with the same bounds.
import { createClient } from 'redis';
import { unavailable } from './errors.ts';

export interface RedisCredentials {
  /** The password, for a URL without one; asked at every connection. */
  password?: () => Promise<string>;
  /** For a `rediss://` URL: the CA to trust (default: the system's), a client certificate, the name to verify. */
  tls?: { ca?: Uint8Array; cert?: Uint8Array; key?: Uint8Array; serverName?: string };
}

/**
 * node-redis's options for `url` with `c`: the URL, and the credentials provider when a password is given
 * (node-redis lets the URL's credentials win over the ones given beside it, so the URL's user goes into
 * the provider, with the password, and out of the URL); `socket` adds the TLS options to a caller's own.
 */
export function redisConnection(url: string, c: RedisCredentials) {
  const u = new URL(url);
  const password = c.password;
  const username = decodeURIComponent(u.username) || undefined;
  if (password) {
    u.username = '';
    u.password = '';
  }
  const buf = (b: Uint8Array | undefined) => b && Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  const tls = c.tls;
  return {
    url: u.href,
    ...(password && {
      credentialsProvider: {
        type: 'async-credentials-provider' as const,
        credentials: async () => ({ username, password: await password() }),
      },
    }),
    socket: <S extends object>(own: S) =>
      tls
        ? {
            ...own,
            tls: true as const,
            ca: buf(tls.ca),
            cert: buf(tls.cert),
            key: buf(tls.key),
            servername: tls.serverName,
          }
        : own,
  };
}

/**
 * A client that never waits on Redis without bound: commands are refused while it is disconnected (not
 * queued), at most 1000 wait for answers, reconnects back off to 2 s, and `commandTimeoutMs` (when given;
 * callers with a timeout of their own per call leave it out) bounds each command's wait to be sent; its
 * wait for the answer is the caller's to bound (ReplacingRedisClient.answered).
 */
export function boundedRedisClient(
  url: string,
  credentials: RedisCredentials,
  o: { connectTimeoutMs: number; commandTimeoutMs?: number },
) {
  const c = redisConnection(url, credentials);
  return createClient({
    url: c.url,
    ...(c.credentialsProvider && { credentialsProvider: c.credentialsProvider }),
    disableOfflineQueue: true,
    commandsQueueMaxLength: 1000,
    ...(o.commandTimeoutMs !== undefined && { commandOptions: { timeout: o.commandTimeoutMs } }),
    socket: c.socket({
      connectTimeout: o.connectTimeoutMs,
      reconnectStrategy: (n: number) => Math.min(100 * 2 ** n, 2000),
    }),
  });
}

export type BoundedRedisClient = ReturnType<typeof boundedRedisClient>;

/** How long a connection made may take to be ready (its handshake answered) by default. */
const HANDSHAKE_TIMEOUT_MS = 5000;

/**
 * A bounded client that is put aside for a new one when it counts as connected but leaves a command sent
 * through answered() unanswered past its bound: a Redis gone without a reset (its node died, a failover
 * moved its address) leaves a connection TCP gives up on only after many minutes, and node-redis's own
 * command timeout ends only a command's wait to be sent. A client is also put aside when a connection it
 * made is not ready within `handshakeTimeoutMs`: node-redis bounds the TCP (and TLS) connect only, not the
 * handshake that follows (HELLO or AUTH, SELECT, CLIENT SETINFO), and a client waiting on it counts as not
 * connected, so a host that accepts connections and never answers (a Redis paused, or gone behind a proxy
 * or a moved address) would hold it, and everything it serves, for good. `current` is the client to use now.
 */
export class ReplacingRedisClient {
  current: BoundedRedisClient;
  private readonly open: () => BoundedRedisClient;
  private readonly handshakeTimeoutMs: number;
  private closed = false;

  /** `open` makes a client, not yet connected (its listeners on); `first`, when given, is connected. */
  constructor(
    open: () => BoundedRedisClient,
    first?: BoundedRedisClient,
    handshakeTimeoutMs = HANDSHAKE_TIMEOUT_MS,
  ) {
    this.open = open;
    this.handshakeTimeoutMs = handshakeTimeoutMs;
    this.current = first ? this.watched(first) : this.connected();
  }

  /** `command` on the current client, answered within `timeoutMs` or failed, its client then replaced. */
  answered<T>(command: (c: BoundedRedisClient) => Promise<T>, timeoutMs: number): Promise<T> {
    const c = this.current;
    return answerWithin(command(c), timeoutMs, () => {
      if (c.isReady) this.replace(c);
    });
  }

  close(): void {
    this.closed = true;
    // destroy, not close or quit: a hung Redis would never answer.
    this.current.destroy();
  }

  private replace(c: BoundedRedisClient): void {
    if (this.closed || c !== this.current) return;
    this.current = this.connected();
    c.destroy();
  }

  private connected(): BoundedRedisClient {
    const c = this.watched(this.open());
    c.connect().catch(() => {
      // The first connection failed; the reconnect strategy keeps trying.
    });
    return c;
  }

  /** `c`, replaced when a connection it makes (the first or a reconnection) is not ready in time. */
  private watched(c: BoundedRedisClient): BoundedRedisClient {
    let timer: NodeJS.Timeout | undefined;
    const settled = () => clearTimeout(timer);
    c.on('connect', () => {
      settled();
      timer = setTimeout(() => {
        if (!c.isReady) this.replace(c);
      }, this.handshakeTimeoutMs);
      timer.unref();
    });
    // A connection that fails instead is the client's own to make again (its next 'connect' is watched).
    c.on('ready', settled);
    c.on('error', settled);
    c.on('end', settled);
    return c;
  }
}

/** `command`'s answer, or a failure after `timeoutMs`, when `onSilent` runs first. */
function answerWithin<T>(command: Promise<T>, timeoutMs: number, onSilent: () => void): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const silent = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onSilent();
      reject(unavailable(`Redis did not answer within ${timeoutMs} ms`));
    }, timeoutMs);
  });
  // Settled (failed, as its connection goes) after the caller has moved on.
  command.catch(() => {});
  return Promise.race([command, silent]).finally(() => clearTimeout(timer));
}
