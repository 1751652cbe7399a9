// Strata's gRPC server, on node:http2 directly: our services, health, reflection, 16 MiB messages
// (containerd's limit), unix-socket hygiene and a bounded graceful shutdown. grpc-js's server was the
// cost of a small call (Images.Get spent more in its interceptor chain than in the image store); the
// wire is small enough to speak ourselves (transport/server-call.ts, transport/framing.ts).
import { once } from 'node:events';
import { chmod, lstat, rm } from 'node:fs/promises';
import {
  createSecureServer,
  createServer,
  type Http2SecureServer,
  type Http2Server,
  type Http2Session,
  type IncomingHttpHeaders,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from 'node:http2';
import { connect, type Socket } from 'node:net';
import { isAbsolute } from 'node:path';
import { status } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { ConnectionGuard, connectionKey, connectionLimits } from '../../connection-guard.ts';
import { failedPrecondition, invalidArgument, messageOf, unavailable } from '../../errors.ts';
import { Health } from '../gen/grpc/health/v1/health_pb.ts';
import { ACCEPTED_ENCODINGS, checkEncoding, parseTimeout } from '../transport/framing.ts';
import { ServerCall } from '../transport/server-call.ts';
import { CallTurns } from '../transport/turns.ts';
import { HealthStatuses } from './health.ts';
import { keepSessionAlive } from './keepalive.ts';
import { MAX_MESSAGE_BYTES } from './limits.ts';
import { reflectionServices } from './reflection.ts';
import { type CallHandler, ServiceAdapter, type ServiceRegistration } from './service.ts';
import { statusOf } from './status.ts';

export { MAX_MESSAGE_BYTES };

export interface GrpcServerOptions {
  logger: Logger;
  services: readonly ServiceRegistration[];
  /** How long shutdown waits for calls in flight before cutting them off. Default 5 s. */
  shutdownTimeoutMs?: number;
  /** Serve TCP over TLS; unix sockets stay plain. */
  tls?: GrpcServerTls;
  /** Limits of the connections TCP listeners take (unix sockets are local, and not limited). */
  connections?: GrpcConnectionLimits;
  /** Told of each TCP connection the server closes or refuses on its own, and why. */
  onConnectionDropped?: (reason: GrpcDropReason) => void;
}

/**
 * Why the server closed a TCP connection: `full` (refused at the cap, every connection busy), `shed`
 * (closed idle at the cap to make room), `idle` (nothing in flight for the idle time), `keepalive` (a
 * PING went unanswered), `too-many-pings` (the client pinged more often than allowed).
 */
export type GrpcDropReason = 'full' | 'shed' | 'idle' | 'keepalive' | 'too-many-pings';

/**
 * `max` open connections (at the cap the oldest with no call in flight is closed for the new one;
 * default: fitted to the open-file limit, as the facade's); a connection with no call in flight for
 * `idleMs` (from connecting or from its last call; default 5 min) is closed with a GOAWAY, which
 * clients take as a cue to reconnect when they next call.
 */
export interface GrpcConnectionLimits {
  max?: number;
  idleMs?: number;
  /** Time from connecting, or from the last PING ack, to the next keepalive PING (default 60 s). */
  keepaliveMs?: number;
  /** Time a PING has to be acknowledged before the connection and its calls are cut (default 20 s). */
  keepaliveTimeoutMs?: number;
  /** Least time between a client's PINGs; a third too soon in a row closes the connection (default 10 s). */
  minPingIntervalMs?: number;
}

export const DEFAULT_GRPC_IDLE_MS = 300_000;
export const DEFAULT_KEEPALIVE_MS = 60_000;
export const DEFAULT_KEEPALIVE_TIMEOUT_MS = 20_000;
export const DEFAULT_MIN_PING_INTERVAL_MS = 10_000;
/** How long a connection closed with a GOAWAY has to go before it is cut. */
const GOAWAY_GRACE_MS = 1000;

/** PEM certificate chain and key; with `clientCa`, clients must present a certificate it signed (mTLS). */
export interface GrpcServerTls {
  cert: Buffer;
  key: Buffer;
  clientCa?: Buffer;
}

export interface GrpcServer {
  /** Serves on a unix socket (0660), replacing a stale socket file left by a dead process. */
  listenUnix(path: string): Promise<void>;
  /** Serves on host:port (port 0 picks a free one); returns the port. */
  listenTcp(host: string, port: number): Promise<number>;
  /** Serves new TLS connections with these files from now on (a rotated certificate; the options' `tls`). */
  setTls(tls: GrpcServerTls): void;
  /** Reports NOT_SERVING, drains calls (forcing after the timeout), and removes socket files. */
  shutdown(): Promise<void>;
  /**
   * Calls whose HTTP/2 streams are open: a call's stream outlives its handler while its responses or its
   * status wait for the client to take them.
   */
  readonly openCalls: number;
}

/**
 * HTTP/2 flow control on the receiving side. With Node's defaults (64 KiB per stream and per
 * connection, 16 KiB frames) a client streaming content in (Content.Write) waits for a WINDOW_UPDATE
 * every 64 KiB, shared by all its streams: a pull of several layers ran at ~70 MiB/s whatever the disk.
 * The daemon's clients are local, so it advertises larger windows and frames: at most RECEIVE_WINDOW
 * buffered per stream and CONNECTION_WINDOW per connection. Larger windows (8 and 32 MiB) were no
 * faster, only more memory in flight (bench/pull-unpack ~5 % slower).
 */
const RECEIVE_WINDOW = 2 << 20;
const CONNECTION_WINDOW = 8 << 20;
const MAX_FRAME_BYTES = 1 << 20;

/**
 * containerd's client reads content through a ReaderAt that opens one Read stream per 32 KiB and cancels
 * it once it has its bytes, so a large `ctr content get` resets thousands of streams. Node's HTTP/2
 * server closes a session past ~1000 resets (its rapid-reset defence), which kills such reads midway.
 * The daemon's clients are local and trusted (a unix socket), so the limit is raised there; TCP listeners
 * (builder, spec provider), which the network reaches, keep Node's defence against rapid-reset floods.
 */
const STREAM_RESETS_ALLOWED = 1_000_000;

const GRPC_CONTENT_TYPE = /^application\/grpc(?:$|[+;])/;

export function createGrpcServer(options: GrpcServerOptions): GrpcServer {
  const { logger } = options;
  const shutdownTimeoutMs = options.shutdownTimeoutMs ?? 5000;

  const names = options.services.map((s) => s.service.typeName);
  const duplicate = names.find((n, i) => names.indexOf(n) !== i);
  if (duplicate) throw invalidArgument(`service ${duplicate} registered twice`);
  const health = new HealthStatuses(names);
  const turns = new CallTurns();
  const adapter = new ServiceAdapter(logger, turns);
  const handlers = new Map<string, CallHandler>();
  const reflection = reflectionServices([...options.services.map((s) => s.service), Health]);
  for (const reg of [...options.services, ...reflection, health.registration()]) {
    for (const [path, handler] of adapter.adapt(reg)) handlers.set(path, handler);
  }

  let callsOpen = 0;
  const onStream = (
    stream: ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    _flags: number,
    rawHeaders: string[],
  ): void => {
    callsOpen++;
    stream.once('close', () => callsOpen--);
    const contentType = headers['content-type'];
    // application/grpc, optionally +codec or ;params; not gRPC-Web, whose trailers travel in the body.
    if (headers[':method'] !== 'POST' || !GRPC_CONTENT_TYPE.test(contentType ?? '')) {
      stream.on('error', () => {});
      stream.respond({ ':status': 415 }, { endStream: true });
      return;
    }
    let timeoutMs: number | undefined;
    let refused: unknown;
    let refusal: Record<string, string> | undefined;
    const encoding = headers['grpc-encoding'];
    const timeout = headers['grpc-timeout'];
    try {
      checkEncoding(typeof encoding === 'string' ? encoding : undefined);
    } catch (err) {
      refused = err;
      // The compression spec: a refused encoding is answered with the ones the server reads.
      refusal = { 'grpc-accept-encoding': ACCEPTED_ENCODINGS };
    }
    if (refused === undefined) {
      try {
        timeoutMs = parseTimeout(typeof timeout === 'string' ? timeout : undefined);
      } catch (err) {
        refused = err;
      }
    }
    const call = new ServerCall(stream, headers, rawHeaders, {
      maxReceive: MAX_MESSAGE_BYTES,
      maxSend: MAX_MESSAGE_BYTES,
      timeoutMs,
    });
    const handler = handlers.get(call.path);
    if (refused !== undefined) {
      const s = statusOf(refused);
      call.end(s.code, s.details, refusal);
    } else if (call.cancelled) {
      // Answered already (a deadline that expired before the call arrived).
    } else if (!handler) {
      call.end(status.UNIMPLEMENTED, `The server does not implement the method ${call.path}`);
    } else {
      handler(call);
    }
  };

  const servers: Http2Server[] = [];
  const secure: Http2SecureServer[] = [];
  const sessions = new Set<ServerHttp2Session>();
  /** Every open connection's socket, for a forced stop (a destroyed session no longer names its socket). */
  const connections = new Set<Socket>();
  const sockets = new Set<string>();
  let stopping: Promise<void> | undefined;
  // TCP sessions by connection key, for the guard to say goodbye on the connections it closes.
  const tcpSessions = new Map<string, ServerHttp2Session>();
  const { max } = connectionLimits({ ...(options.connections?.max && { max: options.connections.max }) });
  const idleMs = options.connections?.idleMs ?? DEFAULT_GRPC_IDLE_MS;
  const dropped = options.onConnectionDropped ?? (() => {});
  const keepalive = {
    timeMs: options.connections?.keepaliveMs ?? DEFAULT_KEEPALIVE_MS,
    timeoutMs: options.connections?.keepaliveTimeoutMs ?? DEFAULT_KEEPALIVE_TIMEOUT_MS,
    minPingIntervalMs: options.connections?.minPingIntervalMs ?? DEFAULT_MIN_PING_INTERVAL_MS,
    goawayGraceMs: GOAWAY_GRACE_MS,
    onDrop: dropped,
  };
  // Calls open per TCP session: a session closed with a GOAWAY whose peer never answers is destroyed
  // after a grace, unless a call arrived meanwhile (it then ends when its calls do).
  const openCalls = new WeakMap<Http2Session, number>();
  const closeConnection = (socket: Socket) => {
    const session = tcpSessions.get(connectionKey(socket));
    if (!session || session.closed) {
      // Still in the TLS handshake: no session to say goodbye on.
      socket.destroy();
      return;
    }
    session.close();
    setTimeout(() => {
      if (!session.destroyed && !openCalls.get(session)) session.destroy();
    }, GOAWAY_GRACE_MS).unref();
  };

  const listen = async (address: string | { host: string; port: number }): Promise<Http2Server> => {
    const settings = {
      settings: { initialWindowSize: RECEIVE_WINDOW, maxFrameSize: MAX_FRAME_BYTES },
      // Node degrades badly at its session memory limit; calls are bounded by message size instead.
      maxSessionMemory: Number.MAX_SAFE_INTEGER,
      ...(typeof address === 'string' && {
        streamResetBurst: STREAM_RESETS_ALLOWED,
        streamResetRate: STREAM_RESETS_ALLOWED,
      }),
    };
    const tls = typeof address === 'string' ? undefined : options.tls;
    const h2: Http2Server = tls
      ? (createSecureServer({
          ...settings,
          ...secureContextOf(tls),
          // A client CA makes the certificate a must; without one none is asked for.
          requestCert: tls.clientCa !== undefined,
          rejectUnauthorized: tls.clientCa !== undefined,
          ALPNProtocols: ['h2'],
        }) as unknown as Http2Server)
      : createServer(settings);
    if (tls) secure.push(h2 as unknown as Http2SecureServer);
    if (typeof address !== 'string') {
      const guard = new ConnectionGuard(
        h2,
        { max, headerTimeoutMs: idleMs, idleMs },
        {
          close: closeConnection,
          // No cap per client here; the header timeout is the idle time counted from connecting.
          onDrop: (reason) => dropped(reason === 'full' || reason === 'shed' ? reason : 'idle'),
        },
      );
      h2.on('stream', (stream: ServerHttp2Stream) => {
        const session = stream.session;
        if (!session) return;
        const end = guard.begin(session.socket as Socket);
        openCalls.set(session, (openCalls.get(session) ?? 0) + 1);
        stream.once('close', () => {
          end();
          openCalls.set(session, (openCalls.get(session) ?? 1) - 1);
        });
      });
    }
    h2.on('connection', (socket: Socket) => {
      connections.add(socket);
      socket.once('close', () => connections.delete(socket));
    });
    h2.on('session', (session: ServerHttp2Session) => {
      sessions.add(session);
      session.once('close', () => sessions.delete(session));
      if (typeof address !== 'string') {
        const key = connectionKey(session.socket as Socket);
        tcpSessions.set(key, session);
        session.once('close', () => tcpSessions.get(key) === session && tcpSessions.delete(key));
        keepSessionAlive(session, keepalive);
      }
      session.on('error', (err) => logger.debug({ err }, 'HTTP/2 session error'));
      // The connection window is no setting: each session raises its own.
      session.once('connect', () => session.setLocalWindowSize(CONNECTION_WINDOW));
    });
    h2.on('stream', onStream);
    const what = typeof address === 'string' ? address : `${address.host}:${address.port}`;
    try {
      h2.listen(address);
      await once(h2, 'listening');
    } catch (err) {
      throw unavailable(`cannot listen on ${what}: ${messageOf(err)}`, { cause: err });
    }
    servers.push(h2);
    return h2;
  };

  return {
    get openCalls() {
      return callsOpen;
    },

    async listenUnix(path) {
      if (stopping) throw failedPrecondition('gRPC server is shut down');
      if (!isAbsolute(path)) throw invalidArgument(`socket path must be absolute: ${path}`);
      await removeStaleSocket(path);
      await listen(path);
      sockets.add(path);
      await chmod(path, 0o660);
      logger.info({ address: `unix://${path}`, services: names }, 'gRPC listening');
    },

    setTls(tls) {
      if (!options.tls) throw failedPrecondition('gRPC server: setTls on a server started without TLS');
      for (const h2 of secure) h2.setSecureContext(secureContextOf(tls));
    },

    async listenTcp(host, port) {
      if (stopping) throw failedPrecondition('gRPC server is shut down');
      const h2 = await listen({ host, port });
      const bound = (h2.address() as { port: number }).port;
      logger.info({ address: `${host}:${bound}`, services: names }, 'gRPC listening');
      return bound;
    },

    shutdown() {
      stopping ??= (async () => {
        health.shutdown();
        const closed = Promise.all(
          servers.map((h2) => new Promise<void>((resolve) => h2.close(() => resolve()))),
        );
        // GOAWAY: no new calls; each session closes once its calls are done.
        for (const session of sessions) session.close();
        let timer: NodeJS.Timeout | undefined;
        const timedOut = new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(false), shutdownTimeoutMs);
        });
        const clean = await Promise.race([closed.then(() => true), timedOut]);
        clearTimeout(timer);
        if (!clean) {
          logger.warn(
            { timeoutMs: shutdownTimeoutMs },
            'gRPC calls still running at shutdown; cancelling them',
          );
          for (const session of sessions) session.destroy();
          // Node finishes a session's destroy (its own after a GOAWAY too) only once the socket write in
          // progress completes, which a peer that stopped reading (a stopped process) never lets happen:
          // closing the sockets ends them.
          for (const socket of connections) socket.destroy();
          await closed;
        }
        turns.stop();
        for (const path of sockets) await rm(path, { force: true });
        sockets.clear();
        logger.info('gRPC server stopped');
      })();
      return stopping;
    },
  };
}

/**
 * Removes a socket file nobody answers on. Refuses to touch anything that is not a socket, and
 * fails if a live server still listens there (two daemons on one socket would split clients).
 */
async function removeStaleSocket(path: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = (await lstat(path)).isSocket();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw unavailable(`cannot inspect ${path}: ${messageOf(err)}`, { cause: err });
  }
  if (!isSocket) throw failedPrecondition(`${path} exists and is not a socket`);
  if (await answers(path)) throw unavailable(`another server is listening on ${path}`);
  await rm(path, { force: true });
}

function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(path);
    const done = (live: boolean) => {
      socket.destroy();
      resolve(live);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

function secureContextOf(tls: GrpcServerTls): { cert: Buffer; key: Buffer; ca?: Buffer } {
  return { cert: tls.cert, key: tls.key, ...(tls.clientCa && { ca: tls.clientCa }) };
}
