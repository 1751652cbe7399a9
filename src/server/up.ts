// `strata up`: the whole system in one process. The daemon (gRPC on a unix socket) owns the one content
// store, metadata database and garbage collector under the root; the registry surface is the facade with
// hosted repositories and its blob cache on those same parts (the cache's blobs are rows of a namespace of
// their own) and Strata's own spec store as its `remote` provider (also served as
// registryfacade.SpecProvider); the builder pushes to repositories on that registry. One metrics
// registry holds every part's metrics, and one readiness answer requires every part.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { collectDefaultMetrics, Registry } from 'prom-client';
import type { ServiceRegistration } from '../api/grpc/service.ts';
import { messageOf } from '../errors.ts';
import { NamespaceCacheStorage } from '../facade/blobs/namespace-cache-storage.ts';
import type { Readiness } from '../facade/http/server.ts';
import { isAnyHost, joinHostPort } from '../host-port.ts';
import { ContentView } from '../metadata/content.ts';
import { startBuilder } from './builder.ts';
import { type FacadeApp, startFacade } from './facade.ts';
import { hostedOn } from './hosted.ts';
import { type Daemon, startDaemon } from './lifecycle.ts';
import { DaemonMetrics, serveMetrics } from './metrics.ts';
import type { UpConfig } from './up-config.ts';

export interface UpApp {
  root: string;
  /** The daemon's unix socket. */
  socket: string;
  /** `host:port` of the registry, as image references name it. */
  registryHost: string;
  registryUrl: string;
  /** `host:port` of the spec store's SpecProvider. */
  specProvider: string;
  specsDir: string;
  /** Whether the spec provider's listener also takes puts (strata.specstore.v1.SpecStore). */
  specsWritable: boolean;
  /** `host:port` of builder.ImageBuilder. */
  builder: string;
  baseRepository: string;
  workspaceRepository: string;
  /** `http://host:port`, serving /metrics, /readyz and /healthz. */
  opsUrl: string;
  /** Whether the registry asks clients for credentials (`registry.auth`). */
  authenticated: boolean;
  ready(): Promise<Readiness>;
  /** Re-reads the registry's watched files (htpasswd, docker auth, TLS, static layers) and rescans specs. */
  reload(): Promise<void>;
  /** Stops every part, newest first; idempotent. */
  stop(): Promise<void>;
}

/** The registry user `strata up`'s builder signs in as; an htpasswd entry of this name is not used. */
export const BUILDER_USER = 'strata-up-builder';

/** The host clients reach a listener on: one listening on every interface is reached on loopback. */
function reachHost(host: string): string {
  if (!isAnyHost(host)) return host;
  return host === '::' ? '::1' : '127.0.0.1';
}

/** `host:port` of a listener as clients name it (IPv6 in brackets). */
function reachable(listen: { host: string; port: number }, port: number): string {
  return joinHostPort(reachHost(listen.host), port);
}

export async function startUp(config: UpConfig, logger: Logger): Promise<UpApp> {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'strata_' });
  let state: 'starting' | 'running' | 'stopping' = 'starting';
  let daemon: Daemon | undefined;
  let facade: FacadeApp | undefined;

  // The facade's readiness covers itself; this covers the rest, and is part of the facade's answer.
  const othersReady = async (): Promise<Readiness> => {
    if (state !== 'running')
      return { ready: false, reason: state === 'starting' ? 'starting' : 'shutting down' };
    if (!(await daemon?.parts.content.writable()))
      return { ready: false, reason: `content store under ${config.root} is not writable` };
    return { ready: true };
  };
  const ready = async (): Promise<Readiness> =>
    facade ? facade.ready() : { ready: false, reason: state === 'stopping' ? 'shutting down' : 'starting' };

  const undo: Array<() => Promise<void>> = [];
  const unwind = async () => {
    for (const fn of undo.reverse())
      await fn().catch((err: unknown) => logger.warn({ err: messageOf(err) }, 'cleanup failed'));
  };
  try {
    // Every gRPC server's calls on one pair of series, told apart by the method's full name.
    const grpcMetrics = new DaemonMetrics(registry);
    const instrument = (reg: ServiceRegistration) => grpcMetrics.instrument(reg);
    const d = await startDaemon(config.daemon, logger.child({ service: 'daemon' }), {
      role: 'up',
      metrics: grpcMetrics,
    });
    daemon = d;
    undo.push(() => d.stop());
    // After the root's lock, so a second `strata up` on a root in use is told so, not that a port is taken;
    // before the rest, so a monitor sees "starting" while they start.
    const ops = await serveMetrics({ registry }, config.metrics.host, config.metrics.port, ready);
    undo.push(() => ops.close());
    const h = hostedOn({
      content: d.parts.content,
      db: d.parts.db,
      gc: d.parts.gc,
      images: d.parts.images,
      logger: logger.child({ service: 'hosted' }),
    });
    undo.push(() => h.close());

    // With client authentication, the builder signs in as a user of its own: its password is made at each
    // start and never leaves the process (but for each build's auth file, private and removed after).
    const serviceUser = config.registry.auth
      ? { username: BUILDER_USER, password: randomBytes(32).toString('base64url') }
      : undefined;

    // Composed images name base images on this very registry: reached over plain HTTP, whatever its port.
    const listen = config.registry.listen;
    config.registry.plainHttpHosts.push(reachHost(listen.host));
    const f = await startFacade(config.registry, {
      logger: logger.child({ service: 'registry' }),
      registry,
      hosted: h,
      // The blob cache's blobs are rows of a namespace of its own on the daemon's store and database: a
      // blob is stored once, whoever holds it, and the daemon's collector alone frees bytes.
      cacheStorage: new NamespaceCacheStorage(new ContentView({ store: d.parts.content, db: d.parts.db })),
      // No cache dir of its own: the tags it resolved are kept in the root.
      resolvedTagsFile: join(config.root, 'facade-resolved-tags.json'),
      ready: othersReady,
      instrument,
      ...(serviceUser && { serviceUser }),
    });
    facade = f;
    undo.push(() => f.close());
    const registryHost = reachable(listen, f.port);

    const b = config.builder;
    if (!b.baseRepository) b.baseRepository = `${registryHost}/base-images`;
    if (!b.workspaceRepository) b.workspaceRepository = `${registryHost}/workspace-images`;
    b.plainHttpHosts.push(registryHost);
    const running = await startBuilder(b, logger.child({ service: 'builder' }), {
      registry,
      instrument,
      ...(serviceUser && {
        systemRegistry: { host: registryHost, credentials: { kind: 'basic' as const, ...serviceUser } },
      }),
    });
    undo.push(() => running.close());

    state = 'running';
    let stopping: Promise<void> | undefined;
    return {
      root: config.root,
      socket: config.daemon.address,
      registryHost,
      registryUrl: `http://${registryHost}`,
      specProvider: reachable(config.specs.listen, f.specProviderPort ?? config.specs.listen.port),
      specsDir: config.specs.dir,
      specsWritable: config.specs.writable,
      builder: reachable(b.listen, running.port),
      baseRepository: b.baseRepository,
      workspaceRepository: b.workspaceRepository,
      opsUrl: `http://${reachable(config.metrics, ops.port)}`,
      authenticated: serviceUser !== undefined,
      ready,
      reload: () => f.reload(),
      stop() {
        stopping ??= (async () => {
          state = 'stopping';
          logger.info('stopping: builder, registry, daemon');
          await unwind();
          logger.info('stopped');
        })();
        return stopping;
      },
    };
  } catch (err) {
    state = 'stopping';
    await unwind();
    throw err;
  }
}
