// Starting and stopping the daemon: claim the state directory, wire the parts, serve gRPC (and metrics),
// and on stop drain calls, finish garbage collection, close the database and remove the socket.
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { createGrpcServer } from '../api/grpc/server.ts';
import { messageOf } from '../errors.ts';
import type { DaemonConfig } from './config.ts';
import { DaemonMetrics, serveMetrics } from './metrics.ts';
import { lockRoot, type RootHolder } from './root-lock.ts';
import { type DaemonParts, wireDaemon } from './wiring.ts';

export interface Daemon {
  readonly config: DaemonConfig;
  readonly uuid: string;
  readonly parts: DaemonParts;
  /** The bound metrics port, when metrics are served. */
  readonly metricsPort?: number;
  /** Graceful stop; idempotent. */
  stop(): Promise<void>;
}

export interface DaemonStartOptions {
  /** Who takes the root's lock (named to a second starter); `daemon` by default. */
  role?: RootHolder;
  /** Metrics on a registry shared with other parts of the process (`strata up`), served by the caller. */
  metrics?: DaemonMetrics;
}

export async function startDaemon(
  config: DaemonConfig,
  logger: Logger,
  options: DaemonStartOptions = {},
): Promise<Daemon> {
  await mkdir(config.root, { recursive: true, mode: 0o711 });
  await mkdir(dirname(config.address), { recursive: true, mode: 0o711 });
  const release = await lockRoot(config.root, options.role ?? 'daemon');
  const undo: Array<() => Promise<void>> = [release];
  const unwind = async () => {
    for (const fn of undo.reverse())
      await fn().catch((err: unknown) => logger.warn({ err: messageOf(err) }, 'cleanup failed'));
  };
  try {
    const metrics = options.metrics ?? (config.metrics ? new DaemonMetrics() : undefined);
    const parts = await wireDaemon(config, logger, metrics);
    undo.push(() => parts.close());
    const grpc = createGrpcServer({ logger: logger.child({ component: 'grpc' }), services: parts.services });
    undo.push(() => grpc.shutdown());
    metrics?.watchGrpcCalls(() => grpc.openCalls);
    // Undone first: open `ctr events` streams end at once instead of holding the shutdown to its timeout.
    undo.push(async () => parts.events.close());
    // One collection before serving, as containerd runs one right after it starts (startup_delay): what
    // expired or lost its holder while the daemon was down goes without waiting for the next deletion.
    await parts.gc
      .collect()
      .catch((err: unknown) => logger.warn({ err: messageOf(err) }, 'garbage collection at start failed'));
    await grpc.listenUnix(config.address);
    let metricsPort: number | undefined;
    if (metrics && config.metrics && !options.metrics) {
      const served = await serveMetrics(metrics, config.metrics.host, config.metrics.port);
      undo.push(() => served.close());
      metricsPort = served.port;
      logger.info({ address: `${config.metrics.host}:${served.port}` }, 'metrics listening');
    }
    logger.info({ root: config.root, address: config.address, uuid: parts.uuid }, 'daemon started');
    let stopping: Promise<void> | undefined;
    return {
      config,
      uuid: parts.uuid,
      parts,
      ...(metricsPort !== undefined && { metricsPort }),
      stop() {
        stopping ??= (async () => {
          logger.info('daemon stopping');
          await unwind();
          logger.info('daemon stopped');
        })();
        return stopping;
      },
    };
  } catch (err) {
    await unwind();
    throw err;
  }
}
