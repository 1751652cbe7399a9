// Starting and stopping the daemon: claim the state directory, wire the parts, serve gRPC (and metrics),
// and on stop drain calls, finish garbage collection, close the database and remove the socket.
import { mkdir, open, readFile, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import { createGrpcServer } from '../api/grpc/server.ts';
import { messageOf, unavailable } from '../errors.ts';
import type { DaemonConfig } from './config.ts';
import { DaemonMetrics, serveMetrics } from './metrics.ts';
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

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * One daemon per state directory: ROOT/daemon.pid names the owner. A file left by a dead process is
 * taken over; a live owner is Unavailable.
 */
async function claimRoot(root: string): Promise<() => Promise<void>> {
  const path = join(root, 'daemon.pid');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await open(path, 'wx', 0o644);
      await fh.writeFile(`${process.pid}\n`);
      await fh.close();
      return () => rm(path, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const owner = Number.parseInt(await readFile(path, 'utf8').catch(() => ''), 10);
    if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && alive(owner)) {
      throw unavailable(`state directory ${root} is in use by another daemon (pid ${owner})`);
    }
    await rm(path, { force: true });
  }
  throw unavailable(`cannot claim state directory ${root}`);
}

export async function startDaemon(config: DaemonConfig, logger: Logger): Promise<Daemon> {
  await mkdir(config.root, { recursive: true, mode: 0o711 });
  await mkdir(dirname(config.address), { recursive: true, mode: 0o711 });
  const release = await claimRoot(config.root);
  const undo: Array<() => Promise<void>> = [release];
  const unwind = async () => {
    for (const fn of undo.reverse())
      await fn().catch((err: unknown) => logger.warn({ err: messageOf(err) }, 'cleanup failed'));
  };
  try {
    const metrics = config.metrics ? new DaemonMetrics() : undefined;
    const parts = await wireDaemon(config, logger, metrics);
    undo.push(() => parts.close());
    const grpc = createGrpcServer({ logger: logger.child({ component: 'grpc' }), services: parts.services });
    undo.push(() => grpc.shutdown());
    await grpc.listenUnix(config.address);
    let metricsPort: number | undefined;
    if (metrics && config.metrics) {
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
