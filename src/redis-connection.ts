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
 * wait for the answer is the caller's to bound (answerWithin).
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

/**
 * `command`'s answer, or a failure after `timeoutMs`. node-redis's own command timeout ends only the wait
 * to be sent: once sent, a command waits as long as its connection lives, and a Redis gone without a reset
 * (its node died, a failover moved its address) leaves a connection TCP gives up on only after many
 * minutes. `onSilent` runs at the timeout, so the caller can put a new connection in its place.
 */
export function answerWithin<T>(command: Promise<T>, timeoutMs: number, onSilent: () => void): Promise<T> {
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
