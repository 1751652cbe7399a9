// HTTP/2 PING keepalive for the gRPC TCP listeners, with grpc's keepalive_time / keepalive_timeout
// meaning: a peer that vanished (host down, network cut: no FIN, no RST) would otherwise hold its
// connection, its calls and the work behind them (a Build stream, a Logs follow) until they end on their
// own. Also grpc servers' ping policy: a client that pings more often than the minimum interval gets a
// GOAWAY ENHANCE_YOUR_CALM "too_many_pings" (grpc clients take it as a cue to ping less) and is closed.
import { constants, type ServerHttp2Session } from 'node:http2';

export interface KeepaliveOptions {
  /** Time from connecting, or from the peer's last PING ack, to the next PING. */
  timeMs: number;
  /** Time the peer has to acknowledge a PING before the connection is destroyed. */
  timeoutMs: number;
  /** Client PINGs closer together than this are strikes; more than MAX_PING_STRIKES in a row close it. */
  minPingIntervalMs: number;
  /** Called before the connection is closed: the ack did not come, or the client pinged too often. */
  onDrop: (reason: 'keepalive' | 'too-many-pings') => void;
  /** How long a connection told GOAWAY has to go before it is cut. */
  goawayGraceMs: number;
}

// grpc-core and grpc-go's default: a third ping too soon in a row is abuse.
const MAX_PING_STRIKES = 2;
const TOO_MANY_PINGS = Buffer.from('too_many_pings');

/** Pings `session` while it lives and polices the PINGs it sends; stops when it closes. */
export function keepSessionAlive(session: ServerHttp2Session, o: KeepaliveOptions): void {
  let next: NodeJS.Timeout | undefined;
  let deadline: NodeJS.Timeout | undefined;
  let lastStreamId = 0;
  let lastPingAt = Number.NEGATIVE_INFINITY;
  let strikes = 0;
  let dropped = false;

  const drop = (reason: 'keepalive' | 'too-many-pings') => {
    if (dropped || session.destroyed) return;
    dropped = true;
    stop();
    o.onDrop(reason);
  };
  const schedule = () => {
    next = setTimeout(probe, o.timeMs);
    next.unref();
  };
  const probe = () => {
    if (session.destroyed) return;
    if (session.connecting) {
      schedule();
      return;
    }
    deadline = setTimeout(() => {
      drop('keepalive');
      // Destroying the session closes its streams: each call's signal aborts, its work stops.
      session.destroy();
    }, o.timeoutMs);
    deadline.unref();
    let sent = false;
    try {
      sent = session.ping((err) => {
        clearTimeout(deadline);
        if (!err && !session.destroyed) schedule();
      });
    } catch {
      // Closing or destroyed meanwhile: nothing to watch.
    }
    if (!sent) clearTimeout(deadline);
  };
  const stop = () => {
    clearTimeout(next);
    clearTimeout(deadline);
  };

  session.on('stream', (stream) => {
    lastStreamId = Math.max(lastStreamId, stream.id ?? 0);
    // A new call resets the count: the connection carries traffic the client may keep alive (grpc resets
    // it when it answers a call).
    strikes = 0;
  });
  session.on('ping', () => {
    const now = performance.now();
    if (now - lastPingAt < o.minPingIntervalMs) strikes++;
    else strikes = 0;
    lastPingAt = now;
    if (strikes <= MAX_PING_STRIKES) return;
    drop('too-many-pings');
    try {
      session.goaway(constants.NGHTTP2_ENHANCE_YOUR_CALM, lastStreamId, TOO_MANY_PINGS);
    } catch {
      // Already going away.
    }
    setTimeout(() => session.destroy(), o.goawayGraceMs).unref();
  });
  session.once('close', stop);
  schedule();
}
