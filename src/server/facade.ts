// Wires a facade from its configuration: registry client (docker auth re-read on change, plain-HTTP hosts,
// extra CAs), disk blob cache, spec providers by key (`remote`: own store then gRPC providers, `fixed`: the
// fixed-spec file), static layers, blob sources, the service, metrics and the HTTP server; optionally the
// own store's gRPC SpecProvider endpoint; optionally the cache replicas share in Redis. One close() undoes
// all of it. The optional parts (Redis's store, gRPC, hosted repositories, client auth) are imported only
// when the config names them: a facade restarts with every rollout, and they doubled its start-up.
import { readFile } from 'node:fs/promises';
import type { Server as HttpsServer } from 'node:https';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { imageSpecJson } from '../api/convert/image-spec-json.ts';
import type { GrpcServer } from '../api/grpc/server.ts';
import type { ServiceRegistration } from '../api/grpc/service.ts';
import { connectionLimits } from '../connection-guard.ts';
import { invalidArgument, messageOf } from '../errors.ts';
import type { ClientAuth, PasswordCheckOptions } from '../facade/auth/client-auth.ts';
import { BlobCache } from '../facade/blobs/cache.ts';
import type { CacheStorage } from '../facade/blobs/cache-storage.ts';
import {
  DirectLayerSource,
  HostedLayerSource,
  RemoteLayerSource,
  StaticLayerSource,
  UpstreamLayerSource,
} from '../facade/blobs/sources.ts';
import { urlBlob } from '../facade/blobs/url-blob.ts';
import { HostedUpstream } from '../facade/hosted-upstream.ts';
import { Drain } from '../facade/http/drain.ts';
import { FacadeMetrics } from '../facade/http/metrics.ts';
import {
  createFacadeHandler,
  listenFacade,
  type Readiness,
  type RunningServer,
} from '../facade/http/server.ts';
import { type TlsFiles, type TlsPair, watchTlsFiles } from '../facade/http/tls-files.ts';
import { Prefetcher } from '../facade/prefetch.ts';
import { FixedFileSpecProvider } from '../facade/providers/fixed-file.ts';
import {
  CachingSpecProvider,
  CompositeSpecProvider,
  type SpecProvider,
} from '../facade/providers/provider.ts';
import type { SpecStore } from '../facade/providers/spec-store.ts';
import { TagFile } from '../facade/providers/tag-file.ts';
import { TtlLru } from '../facade/providers/ttl-lru.ts';
import {
  type FacadeObserver,
  FacadeService,
  HISTORY_PER_NAME,
  HISTORY_TTL_MS,
  type SharedTiers,
  type UpstreamRegistry,
} from '../facade/service.ts';
import {
  compositionCodec,
  descriptorCodec,
  digestCodec,
  specCodec,
  verifiedBytesCodec,
} from '../facade/shared/codecs.ts';
import type { RedisStore } from '../facade/shared/redis-store.ts';
import { SharedStore } from '../facade/shared/shared-store.ts';
import { StaticLayers } from '../facade/static-layer.ts';
import { isAnyHost, joinHostPort } from '../host-port.ts';
import type { Blob } from '../oci/blob.ts';
import { RegistryClient } from '../registry/client.ts';
import { DockerConfigCredentials } from '../registry/docker-config.ts';
import { readTlsClientFiles, redisCredentials } from './client-files.ts';
import { type FacadeConfig, plainHttpAllowed, type RedisConfig } from './facade-config.ts';
import { countGrpcDrops } from './grpc-drops.ts';
import type { HostedParts } from './hosted.ts';
import { prefetchLog } from './prefetch-log.ts';
import { openSpecStore, specStoreServices } from './spec-provider.ts';

export interface FacadeApp {
  url: string;
  port: number;
  /** Port of the own store's gRPC SpecProvider, when configured to listen. */
  specProviderPort?: number;
  service: FacadeService;
  cache: BlobCache;
  metrics: FacadeMetrics;
  /** What /readyz answers (false while draining). */
  ready(): Promise<Readiness>;
  /** Re-reads the watched files that changed (SIGHUP); bad versions are reported, the old ones stay. */
  reload(): Promise<void>;
  close(): Promise<void>;
}

export interface StartOptions {
  logger: Logger;
  registry: Registry;
  /** Replaces the registry client (tests); by default one is built from the config. */
  upstream?: UpstreamRegistry & { close?(): Promise<void> };
  /**
   * Hosted repositories on storage the caller owns and closes (`strata up`: the daemon's), instead of
   * opening `config.hosted.root`; the two exclude each other.
   */
  hosted?: HostedParts;
  /**
   * Where the blob cache keeps its blobs instead of its own store in `config.cache.dir` (`strata up`: a
   * namespace of the daemon's content store, so a blob is stored once on the machine).
   */
  cacheStorage?: CacheStorage;
  /** Where tags' last resolutions are kept (default `resolved-tags.json` in `config.cache.dir`). */
  resolvedTagsFile?: string;
  /** Counts and times the SpecProvider server's calls (`strata up`: on its one metrics registry). */
  instrument?: (reg: ServiceRegistration) => ServiceRegistration;
  /** More for /readyz to require beyond the facade's own checks (`strata up`: its other parts). */
  ready?: () => Promise<Readiness>;
  /** With client authentication: a user of this process (`strata up`'s builder), see ClientAuthConfig. */
  serviceUser?: { username: string; password: string };
  /** Test seam of client authentication: the password checks' waiting room and comparison. */
  passwordChecks?: PasswordCheckOptions;
}

export async function startFacade(config: FacadeConfig, options: StartOptions): Promise<FacadeApp> {
  const { logger } = options;
  const undo: (() => Promise<void> | void)[] = [];
  const reloaders: (() => Promise<void>)[] = [];
  const close = async () => {
    for (const u of undo.reverse()) {
      try {
        await u();
      } catch (err) {
        logger.warn({ err: messageOf(err) }, 'error while stopping the facade');
      }
    }
  };
  try {
    // Watched files (docker auth, htpasswd, token keys, TLS): a reload is logged and counted (metrics is
    // set by the time any file changes).
    const reloadEvents = (what: string) => ({
      onReload: () => {
        metrics.reloads.inc({ what, result: 'ok' });
        logger.info({ what }, 'reloaded');
      },
      onReloadError: (err: unknown) => {
        metrics.reloads.inc({ what, result: 'refused' });
        logger.warn({ err: messageOf(err) }, `${what} not reloaded, the previous version stays`);
      },
    });
    /**
     * A listener's TLS files, watched (and re-read on SIGHUP), each reload counted as `what`. A rotated
     * pair goes to the listener given to onRotate once it listens, for connections made from then on.
     */
    const watchedTls = async (files: TlsFiles | undefined, what: string) => {
      if (!files) return undefined;
      const events = reloadEvents(what);
      let apply: ((pair: TlsPair) => void) | undefined;
      const watched = await watchTlsFiles(files, {
        onReload: (pair) => {
          apply?.(pair);
          events.onReload();
        },
        onReloadError: events.onReloadError,
        watch: config.watchFiles,
      });
      undo.push(() => watched.close());
      reloaders.push(() => watched.reread());
      return {
        value: watched.value,
        onRotate: (f: (pair: TlsPair) => void) => {
          apply = f;
        },
      };
    };
    const ca = await Promise.all(config.caCerts.map((p) => readFile(p)));
    let upstream = options.upstream;
    if (!upstream) {
      const dockerAuth = new DockerConfigCredentials({
        ...(config.dockerAuth ? { path: config.dockerAuth } : {}),
        // Re-read on use when it changed (or only on SIGHUP); a bad edit keeps the credentials read before.
        checkOnUse: config.watchFiles,
        ...reloadEvents('docker-auth'),
      });
      reloaders.push(async () => {
        await dockerAuth.refresh();
      });
      const client = new RegistryClient({
        hosts: { insecure: config.plainHttpHosts, ca },
        credentials: dockerAuth,
      });
      upstream = client;
    }
    const up = upstream;
    undo.push(() => up.close?.());
    const httpForUrls = new RegistryClient({ hosts: { ca } }).http;
    undo.push(() => httpForUrls.close());

    // The shared cache: its events use metrics, which exist before start() makes the first call.
    let shared: { store: SharedStore; redis: RedisStore; config: RedisConfig } | undefined;
    if (config.redis) {
      const { RedisStore } = await import('../facade/shared/redis-store.ts');
      const redis = new RedisStore(config.redis.url, await redisCredentials(config.redis));
      undo.push(() => redis.close());
      const store = sharedStore(config.redis, redis, logger, () => metrics);
      undo.push(() => store.close());
      shared = { store, redis, config: config.redis };
    }
    const sharedSpecs = (address: string) =>
      shared?.store.tier(`spec:${address}`, specCodec(imageSpecJson), shared.config.specTtlMs);

    const providers = new Map<string, SpecProvider>();
    const remote: SpecProvider[] = [];
    let store: SpecStore | undefined;
    if (config.specProviders.store) {
      store = openSpecStore(config.specProviders.store.dir);
      remote.push(store);
    }
    for (const r of config.specProviders.remote) {
      const tls = r.tls && (await readTlsClientFiles(r.tls));
      const { GrpcSpecProvider } = await import('../api/clients/spec-provider.ts');
      const g = new GrpcSpecProvider({ address: r.address, timeoutMs: r.timeoutMs, tls });
      undo.push(() => g.close());
      remote.push(
        new CachingSpecProvider(g, {
          ttlMs: config.specProviders.cacheTtlMs,
          maxEntries: config.specProviders.cacheEntries,
          tier: sharedSpecs(r.address),
        }),
      );
    }
    if (remote.length > 0)
      providers.set('remote', remote.length === 1 ? remote[0]! : new CompositeSpecProvider(remote));

    const cache = await BlobCache.open({
      ...(options.cacheStorage ? { storage: options.cacheStorage } : { dir: config.cache.dir }),
      maxBytes: config.cache.maxBytes,
      stallMs: config.upstreamStallMs,
      events: {
        onFillError: (digest, err) => logger.warn({ digest, err: messageOf(err) }, 'blob fill failed'),
        onEvict: (digest, size) => logger.debug({ digest, size }, 'blob evicted from cache'),
        onCorrupt: (digest, err) =>
          logger.error({ digest, err: messageOf(err) }, 'cached blob does not match its digest, dropped'),
        onNoRoom: (digest, free) =>
          logger.warn({ digest, free }, 'no room on the cache disk: blobs are streamed uncached'),
        onDiskFailing: (err, retryMs) =>
          logger.error(
            { err: messageOf(err), retryMs },
            'the cache disk failed a write: blobs are streamed uncached, and the disk is tried again later',
          ),
        onDiskRecovered: () => logger.info('the cache disk takes blobs again'),
      },
    });
    undo.push(() => cache.close());
    const metrics = new FacadeMetrics(options.registry, () => cache.bytes);
    metrics.cacheDiskFailing = () => (cache.diskFailure ? 1 : 0);
    // Static layer files go into the cache, so a version stays servable by digest after a reload.
    let service: FacadeService | undefined;
    const staticEvents = reloadEvents('static-layer');
    const staticLayers = await StaticLayers.open(config.staticLayers, {
      cache,
      keepMs: HISTORY_TTL_MS,
      watch: config.watchFiles,
      onChange: (layers) => service?.setStaticLayers(layers),
      onReload: staticEvents.onReload,
      onReloadError: staticEvents.onReloadError,
    });
    undo.push(() => staticLayers.close());
    reloaders.push(() => staticLayers.refresh());
    let sharedTiers: SharedTiers | undefined;
    if (shared) {
      const { store, redis } = shared;
      metrics.sharedState = () => (store.up ? 1 : 0);
      // A moment for the first connection, so a Redis that is up at start serves the first request.
      await redis.ready(Math.min(2000, shared.config.timeoutMs * 8));
      await store.start();
      sharedTiers = {
        compositions: store.tier('composed', compositionCodec),
        recent: store.list('recent', digestCodec, HISTORY_PER_NAME, HISTORY_TTL_MS),
        tags: store.tier('tag', descriptorCodec, shared.config.tagTtlMs),
        upstream: store.tier('upstream', verifiedBytesCodec),
      };
    }
    if (config.specProviders.fixedFile) {
      const fixed = await FixedFileSpecProvider.open(config.specProviders.fixedFile, {
        json: imageSpecJson,
        watch: config.watchFiles,
        onReloadError: (err) => {
          metrics.fixedSpecLoads.inc({ result: 'refused' });
          logger.warn({ err: messageOf(err) }, 'fixed specs not reloaded, the previous ones stay');
        },
        onReload: (count) => {
          metrics.fixedSpecLoads.inc({ result: 'ok' });
          logger.info({ count }, 'fixed specs loaded');
        },
      });
      undo.push(() => fixed.close());
      reloaders.push(() => fixed.reload());
      providers.set('fixed', fixed);
    }
    let hosted = options.hosted;
    if (config.hosted) {
      if (hosted)
        throw invalidArgument('hosted repositories are given twice: by the config and by the caller');
      const { openHosted } = await import('./hosted.ts');
      const h = await openHosted(config.hosted.root, logger);
      hosted = h;
      undo.push(() => h.close());
    }
    // This registry's own `host:port` names, known once it listens: layers of images pushed to it are
    // read from its content store.
    const ownHosts = new Set<string>();
    const allowHttpHost = plainHttpAllowed(config);
    const isOwn = (domain: string) => ownHosts.has(domain.toLowerCase());
    // Tags' last resolutions beside the blob cache, so a restart with the registries down still composes.
    const tagFile = new TagFile(options.resolvedTagsFile ?? join(config.cache.dir, 'resolved-tags.json'), {
      maxEntries: 4096,
      onError: (err, action) =>
        logger.warn(
          { err: messageOf(err) },
          `resolved tags: could not ${action} the file, going on without it`,
        ),
    });
    undo.push(() => tagFile.flush());
    const resolvedTags = { initial: await tagFile.load(), changed: tagFile.changed.bind(tagFile) };
    service = new FacadeService({
      providers,
      // Images in its own hosted repositories are read in-process: no request to itself, no credentials.
      upstream: hosted ? new HostedUpstream({ hosted: hosted.registry, isOwn, upstream: up }) : up,
      cache,
      sources: [
        new StaticLayerSource(cache),
        new DirectLayerSource(),
        new RemoteLayerSource({
          redirect: config.contentLayers.redirect,
          allowHttpHost,
          blobAt: (url, desc) => urlBlob(httpForUrls, url, desc),
        }),
        ...(hosted ? [hostedSource(hosted, isOwn)] : []),
        new UpstreamLayerSource((repo, desc) => up.blob(repo, desc)),
      ],
      staticLayers: staticLayers.layers,
      platform: config.platform,
      tagTtlMs: config.tagTtlMs,
      tagStaleIfErrorMs: config.tagStaleIfErrorMs,
      upstreamTimeoutMs: config.upstreamStallMs,
      resolvedTags,
      allowHttpHost,
      // Redirected clients go to the URL anyway; proxied ones must come through us.
      contentLayerUrls: config.contentLayers.redirect,
      observer: warnOfStaleTags(metrics, logger),
      shared: sharedTiers,
    });
    const composer = service;
    undo.push(() => composer.flush());

    if (store && config.prefetch.enabled) {
      const prefetcher = startPrefetch(store, service, cache, metrics, config.prefetch, logger);
      undo.push(() => prefetcher.close());
      reloaders.push(() => prefetcher.rescan());
      await prefetcher.start();
    }

    let grpc: GrpcServer | undefined;
    let specProviderPort: number | undefined;
    if (store && config.specProviders.store?.listen) {
      const { createGrpcServer } = await import('../api/grpc/server.ts');
      const served = await specStoreServices(store, config.specProviders.store.writable === true);
      const storeTls = await watchedTls(config.specProviders.store.tls, 'spec-store-tls');
      grpc = createGrpcServer({
        logger,
        services: served.map((s) => (options.instrument ? options.instrument(s) : s)),
        tls: storeTls?.value,
        ...(config.specProviders.store.connections && {
          connections: config.specProviders.store.connections,
        }),
        onConnectionDropped: countGrpcDrops(options.registry, 'spec-store'),
      });
      const g = grpc;
      storeTls?.onRotate((pair) => g.setTls(pair));
      undo.push(() => g.shutdown());
      specProviderPort = await grpc.listenTcp(
        config.specProviders.store.listen.host,
        config.specProviders.store.listen.port,
      );
    }

    let auth: ClientAuth | undefined;
    if (config.auth) {
      const { ClientAuth } = await import('../facade/auth/client-auth.ts');
      const a = await ClientAuth.open(
        options.serviceUser ? { ...config.auth, serviceUser: options.serviceUser } : config.auth,
        {
          watch: config.watchFiles,
          onReload: (what) => reloadEvents(what).onReload(),
          onReloadError: (what, err) => reloadEvents(what).onReloadError(err),
        },
        options.passwordChecks,
      );
      auth = a;
      undo.push(() => a.close());
      reloaders.push(() => a.reload());
    }
    const tlsFiles = await watchedTls(config.tls, 'tls');
    const drain = new Drain();
    const ready = async (): Promise<Readiness> => {
      if (drain.draining) return { ready: false, reason: 'shutting down' };
      if (providers.size === 0 && !hosted)
        return { ready: false, reason: 'no spec provider or hosted repositories configured' };
      if (hosted && !(await hosted.content.writable()))
        return { ready: false, reason: `hosted content store ${hosted.content.root} is not writable` };
      if (!(await cache.writable())) return { ready: false, reason: `${cache.where} is not writable` };
      const failing = cache.diskFailure;
      if (failing) {
        const reason = `${cache.where} failed a write (${failing.reason}); tried again at ${failing.retryAt.toISOString()}`;
        return { ready: false, reason };
      }
      return options.ready ? options.ready() : { ready: true };
    };
    const handler = createFacadeHandler({
      service,
      prefix: config.prefix,
      logger,
      metrics,
      registry: options.registry,
      auth,
      drain,
      hosted: hosted?.registry,
      ready,
    });
    const connections = connectionLimits(config.connections);
    const server: RunningServer = await listenFacade(handler, {
      ...config.listen,
      tls: tlsFiles?.value,
      connections,
      onConnectionDropped: (reason) => metrics.connectionsDropped.inc({ reason }),
    });
    metrics.openConnections = () => server.connections.size;
    for (const host of ownHostNames(config.listen.host, server.port)) ownHosts.add(host);
    undo.push(async () => {
      // Readiness goes false and new requests get 503 while the ones in flight finish (up to the deadline).
      const inFlight = drain.inFlight;
      if (inFlight > 0)
        logger.info({ inFlight, graceMs: config.shutdownGraceMs }, 'draining requests in flight');
      const cut = await drain.drain(config.shutdownGraceMs);
      if (cut > 0) logger.warn({ cut }, 'shutdown deadline reached, cutting the requests still in flight');
      await server.close(cut > 0 ? 0 : 1000);
    });
    tlsFiles?.onRotate((pair) => (server.server as HttpsServer).setSecureContext(pair));
    logger.info(
      {
        url: server.url,
        providers: [...providers.keys()],
        prefix: config.prefix,
        cache: cache.where,
        hostedContent: hosted?.content.root,
        redis: config.redis ? redisHost(config.redis.url) : undefined,
        connections,
      },
      'facade listening',
    );
    const reload = async () => {
      await Promise.all(reloaders.map((r) => r()));
    };
    return {
      url: server.url,
      port: server.port,
      specProviderPort,
      service,
      cache,
      metrics,
      ready,
      reload,
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

/** Prefetch of the specs put in the own store: wired to the service, the cache, metrics and logs. */
function startPrefetch(
  store: SpecStore,
  service: FacadeService,
  cache: BlobCache,
  metrics: FacadeMetrics,
  config: FacadeConfig['prefetch'],
  logger: Logger,
): Prefetcher {
  return new Prefetcher({
    store,
    plan: (id) => service.networkBlobs({ provider: 'remote', id }),
    fill: (blob, signal) => cache.prefetch(blob, signal),
    concurrency: config.concurrency,
    startupSpecs: config.startupSpecs,
    retries: config.retries,
    retryDelayMs: config.retryDelayMs,
    events: prefetchLog(metrics, logger.child({ component: 'prefetch' })),
  });
}

/**
 * The metrics as the service's observer, plus a warning (once a minute per tag) when a stale tag is used.
 * Every event is named (Required), so one added to the observer cannot go unforwarded unnoticed.
 */
function warnOfStaleTags(metrics: FacadeMetrics, logger: Logger): Required<FacadeObserver> {
  const warned = new TtlLru<string, true>({ ttlMs: 60_000, maxEntries: 1024 });
  return {
    blobServed: (source, outcome) => metrics.blobServed(source, outcome),
    upstreamFetch: (source) => metrics.upstreamFetch(source),
    composed: () => metrics.composed(),
    staleTag: (ref, digest, err) => {
      metrics.staleTag();
      if (warned.get(ref)) return;
      warned.set(ref, true);
      logger.warn(
        { ref, digest, err: messageOf(err) },
        "registry not reachable: using the tag's last resolution",
      );
    },
  };
}

/** The `host:port` names clients use for a registry listening on `host`: loopback ones for every interface. */
function ownHostNames(host: string, port: number): string[] {
  const hosts = isAnyHost(host) ? ['127.0.0.1', 'localhost', '::1'] : [host];
  if (host === '127.0.0.1') hosts.push('localhost');
  return hosts.map((h) => joinHostPort(h, port));
}

/** Composed layers whose image is in these hosted repositories, read from their content store. */
function hostedSource(hosted: HostedParts, isOwn: (domain: string) => boolean): HostedLayerSource {
  return new HostedLayerSource({
    isOwn,
    blobIn: (repository, descriptor) => {
      let stored: Blob;
      try {
        stored = hosted.registry.blob(repository, descriptor.digest);
      } catch {
        // Not in that repository (or no repository name): the upstream source asks the registry.
        return undefined;
      }
      return { descriptor, open: (o) => stored.open(o) };
    },
  });
}

/** host:port of a Redis URL, for logs (never its password). */
function redisHost(url: string): string {
  return new URL(url).host;
}

/** The shared cache on a Redis store: an outage is one warning and its end one line, both counted. */
function sharedStore(
  config: RedisConfig,
  redis: RedisStore,
  logger: Logger,
  metrics: () => FacadeMetrics,
): SharedStore {
  const host = redisHost(config.url);
  return new SharedStore(redis, {
    keyPrefix: config.keyPrefix,
    timeoutMs: config.timeoutMs,
    maxValueBytes: config.maxValueBytes,
    events: {
      onDown: (err) => {
        metrics().sharedOutages.inc();
        logger.warn(
          { redis: host, err: messageOf(err) },
          'Redis is out of use: serving from memory and upstream until it answers again',
        );
      },
      onUp: (downMs) =>
        logger.info({ redis: host, downMs }, 'Redis answers again: the shared cache is in use'),
      onWritesRefused: (err) =>
        logger.warn(
          { redis: host, err: messageOf(err) },
          'Redis refuses writes: the shared cache is read, and nothing is added until it takes them again',
        ),
      onRead: (kind, outcome) => metrics().sharedReads.inc({ kind: kindLabel(kind), outcome }),
      onWrite: (kind, outcome) => metrics().sharedWrites.inc({ kind: kindLabel(kind), outcome }),
      onCorrupt: (kind, key, err) =>
        logger.warn(
          { redis: host, kind, key, err: messageOf(err) },
          'shared cache entry failed its checks, ignored',
        ),
    },
  });
}

/** Spec tiers are per provider address; their metrics are one kind. */
function kindLabel(kind: string): string {
  return kind.startsWith('spec:') ? 'spec' : kind;
}
