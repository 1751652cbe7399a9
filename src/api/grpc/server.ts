// A grpc-js server with what every Strata gRPC endpoint needs: our services, health, reflection,
// 16 MiB messages (containerd's limit), unix-socket hygiene and a bounded graceful shutdown.
import { chmod, lstat, rm } from 'node:fs/promises';
import type { Http2Server, ServerHttp2Session } from 'node:http2';
import { connect } from 'node:net';
import { isAbsolute } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation, type ServingStatusMap } from 'grpc-health-check';
import type { Logger } from 'pino';
import { failedPrecondition, invalidArgument, messageOf, unavailable } from '../../errors.ts';
import { Health } from '../gen/grpc/health/v1/health_pb.ts';
import { MAX_MESSAGE_BYTES } from './limits.ts';
import { reflectionServices } from './reflection.ts';
import { ServiceAdapter, type ServiceRegistration } from './service.ts';

export { MAX_MESSAGE_BYTES };

export interface GrpcServerOptions {
  logger: Logger;
  services: readonly ServiceRegistration[];
  /** How long shutdown waits for calls in flight before cutting them off. Default 5 s. */
  shutdownTimeoutMs?: number;
}

export interface GrpcServer {
  /** Serves on a unix socket (0660), replacing a stale socket file left by a dead process. */
  listenUnix(path: string): Promise<void>;
  /** Serves on host:port (port 0 picks a free one); returns the port. */
  listenTcp(host: string, port: number): Promise<number>;
  /** Reports NOT_SERVING, drains calls (forcing after the timeout), and removes socket files. */
  shutdown(): Promise<void>;
}

export function createGrpcServer(options: GrpcServerOptions): GrpcServer {
  const { logger } = options;
  const shutdownTimeoutMs = options.shutdownTimeoutMs ?? 5000;
  const server = new grpc.Server({
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  });
  allowClientStreamResets(server);
  widenFlowControl(server);

  const adapter = new ServiceAdapter(logger);
  const names = options.services.map((s) => s.service.typeName);
  const duplicate = names.find((n, i) => names.indexOf(n) !== i);
  if (duplicate) throw invalidArgument(`service ${duplicate} registered twice`);
  const reflection = reflectionServices([...options.services.map((s) => s.service), Health]);
  for (const reg of [...options.services, ...reflection]) {
    const { definition, implementation } = adapter.adapt(reg);
    server.addService(definition, implementation);
  }

  const statuses: ServingStatusMap = { '': 'SERVING' };
  for (const name of names) statuses[name] = 'SERVING';
  const health = new HealthImplementation(statuses);
  health.addToServer(server);

  const sockets = new Set<string>();
  let stopping: Promise<void> | undefined;

  const bind = (address: string): Promise<number> =>
    new Promise((resolve, reject) => {
      server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, port) =>
        err
          ? reject(unavailable(`cannot listen on ${address}: ${err.message}`, { cause: err }))
          : resolve(port),
      );
    });

  return {
    async listenUnix(path) {
      if (stopping) throw failedPrecondition('gRPC server is shut down');
      if (!isAbsolute(path)) throw invalidArgument(`socket path must be absolute: ${path}`);
      await removeStaleSocket(path);
      await bind(`unix://${path}`);
      widenConnectionWindows(server);
      sockets.add(path);
      await chmod(path, 0o660);
      logger.info({ address: `unix://${path}`, services: names }, 'gRPC listening');
    },

    async listenTcp(host, port) {
      if (stopping) throw failedPrecondition('gRPC server is shut down');
      const address = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
      const bound = await bind(address);
      widenConnectionWindows(server);
      logger.info({ address: `${host}:${bound}`, services: names }, 'gRPC listening');
      return bound;
    },

    shutdown() {
      stopping ??= (async () => {
        for (const name of Object.keys(statuses)) health.setStatus(name, 'NOT_SERVING');
        const graceful = new Promise<boolean>((resolve) => server.tryShutdown(() => resolve(true)));
        let timer: NodeJS.Timeout | undefined;
        const timedOut = new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(false), shutdownTimeoutMs);
        });
        const clean = await Promise.race([graceful, timedOut]);
        clearTimeout(timer);
        if (!clean) {
          logger.warn(
            { timeoutMs: shutdownTimeoutMs },
            'gRPC calls still running at shutdown; cancelling them',
          );
          server.forceShutdown();
        }
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

/**
 * containerd's client reads content through a ReaderAt that opens one Read stream per 32 KiB and cancels
 * it once it has its bytes, so a large `ctr content get` resets thousands of streams. Node's HTTP/2
 * server closes a session past ~1000 resets (its rapid-reset defence), which kills such reads midway.
 * The daemon's clients are local and trusted (a unix socket), so the limit is raised. grpc-js passes no
 * option for it; its http2 options object is private, hence the narrow cast, checked at run time.
 */
function allowClientStreamResets(server: grpc.Server): void {
  const internal = server as unknown as { commonServerOptions?: Record<string, unknown> };
  if (typeof internal.commonServerOptions !== 'object' || internal.commonServerOptions === null) {
    throw new Error('grpc-js no longer exposes its http2 server options; see allowClientStreamResets');
  }
  internal.commonServerOptions.streamResetBurst = 1_000_000;
  internal.commonServerOptions.streamResetRate = 1_000_000;
}

/**
 * HTTP/2 flow control on the receiving side. With Node's defaults (64 KiB per stream and per
 * connection, 16 KiB frames) a client streaming content in (Content.Write) waits for a WINDOW_UPDATE
 * every 64 KiB, shared by all its streams: a pull of several layers ran at ~70 MiB/s whatever the disk.
 * The daemon's clients are local, so it advertises larger windows and frames: at most RECEIVE_WINDOW
 * buffered per stream and CONNECTION_WINDOW per connection.
 */
const RECEIVE_WINDOW = 8 << 20;
const CONNECTION_WINDOW = 32 << 20;
const MAX_FRAME_BYTES = 1 << 20;

/** Per-stream window and frame size go in the SETTINGS grpc-js sends (private options, checked). */
function widenFlowControl(server: grpc.Server): void {
  const internal = server as unknown as { commonServerOptions?: Record<string, unknown> };
  if (typeof internal.commonServerOptions !== 'object' || internal.commonServerOptions === null) {
    throw new Error('grpc-js no longer exposes its http2 server options; see widenFlowControl');
  }
  const settings = (internal.commonServerOptions.settings ?? {}) as Record<string, unknown>;
  internal.commonServerOptions.settings = {
    ...settings,
    initialWindowSize: RECEIVE_WINDOW,
    maxFrameSize: MAX_FRAME_BYTES,
  };
}

const widened = new WeakSet<object>();

/**
 * The connection window is no setting: each new session raises its own. grpc-js keeps its HTTP/2
 * servers private, so they are found at run time (after each bind, before any connection can arrive).
 */
function widenConnectionWindows(server: grpc.Server): void {
  const internal = server as unknown as { http2Servers?: Map<Http2Server, unknown> };
  if (!(internal.http2Servers instanceof Map)) {
    throw new Error('grpc-js no longer exposes its http2 servers; see widenConnectionWindows');
  }
  for (const h2 of internal.http2Servers.keys()) {
    if (widened.has(h2)) continue;
    widened.add(h2);
    h2.on('session', (session: ServerHttp2Session) => session.setLocalWindowSize(CONNECTION_WINDOW));
  }
}
