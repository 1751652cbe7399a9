// The builder's configuration and composition: state directory (logs, build history, buildah storage,
// work), the installation's registry credentials, the registry clients, the buildah engine, the
// orchestrator and its metrics, and the gRPC server with ImageBuilder, health and reflection.
import { mkdir, readFile, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { Logger } from 'pino';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { parse as parseYaml } from 'yaml';
import { createGrpcServer, type GrpcConnectionLimits } from '../api/grpc/server.ts';
import type { ServiceRegistration } from '../api/grpc/service.ts';
import { builderService } from '../api/services/builder.ts';
import { BuildahEngine } from '../builder/buildah.ts';
import { DEFAULT_KEPT_LOGS, DEFAULT_LOG_BYTES_PER_BUILD, LogStore } from '../builder/log-store.ts';
import { type BuildEngine, Builder, type BuilderObserver } from '../builder/orchestrator.ts';
import { proxyVariables } from '../builder/proxy-env.ts';
import { RegistryAccess } from '../builder/registries.ts';
import { SourceHistory } from '../builder/source-history.ts';
import { invalidArgument, messageOf } from '../errors.ts';
import { joinHostPort } from '../host-port.ts';
import type { Platform } from '../oci/descriptor.ts';
import { parsePlatform } from '../oci/platform.ts';
import { parseNormalizedReference } from '../oci/reference.ts';
import { anonymous, type CredentialStore, type Credentials } from '../registry/credentials.ts';
import { DockerConfigCredentials } from '../registry/docker-config.ts';
import { canonicalHost } from '../registry/hosts.ts';
import {
  checkRedisEndpoint,
  checkRedisUrl,
  type RedisEndpoint,
  redisCredentials,
  TLS_CLIENT_KEYS,
  tlsClientFilesFrom,
} from './client-files.ts';
import { type KeyTree, unknownKeys } from './config-keys.ts';
import {
  GRPC_CONNECTION_KEYS,
  grpcConnectionsFrom,
  isObj,
  parseByteSize,
  parseListen,
} from './facade-config.ts';
import { countGrpcDrops } from './grpc-drops.ts';
import { serveMetrics } from './metrics.ts';
import { lockRoot } from './root-lock.ts';

export interface BuilderConfig {
  listen: { host: string; port: number };
  baseRepository: string;
  workspaceRepository: string;
  stateDir: string;
  /** A docker config.json with the installation's registry credentials (re-read on change). */
  dockerAuth?: string;
  plainHttpHosts: string[];
  platform: Platform;
  parallelism: number;
  maxQueued: number;
  timeoutMs: number;
  keepFinishedMs: number;
  cacheMaxBytes: number;
  /**
   * The build logs' budget: bytes kept of each build's log, and how many finished builds' logs are kept.
   * On disk that is at most (keepBuilds + running and queued builds) × maxBytesPerBuild.
   */
  logs: { maxBytesPerBuild: number; keepBuilds: number };
  storageDriver: string;
  secrets: string[];
  allowFileRemotes: boolean;
  gitTimeoutMs: number;
  /** Bytes one git source may take: its git objects, and apart from those its checkout's files. */
  repositoryMaxBytes: number;
  metrics?: { host: string; port: number };
  tls?: { cert: string; key: string };
  /** Limits of the gRPC listener's connections (unset: the server's defaults). */
  connections?: GrpcConnectionLimits;
  /** The Redis builder replicas share, so that each build runs once among them, and its keys' prefix. */
  redis?: RedisEndpoint & { keyPrefix?: string };
}

/** Every key the builder's config file accepts (docs/configuration.md is tested against it). */
export const BUILDER_KEYS = {
  listen: null,
  baseRepository: null,
  workspaceRepository: null,
  stateDir: null,
  dockerAuth: null,
  plainHttpHosts: null,
  platform: null,
  parallelism: null,
  maxQueued: null,
  timeoutSeconds: null,
  keepFinishedSeconds: null,
  cacheMax: null,
  logs: { maxPerBuild: null, keepBuilds: null },
  storageDriver: null,
  secrets: null,
  allowFileRemotes: null,
  gitTimeoutSeconds: null,
  repositoryMax: null,
  metrics: null,
  tls: { cert: null, key: null },
  connections: GRPC_CONNECTION_KEYS,
  redis: { url: null, passwordFile: null, tls: TLS_CLIENT_KEYS, keyPrefix: null },
} as const satisfies KeyTree;

function fail(where: string, what: string): never {
  throw invalidArgument(`builder config ${where}: ${what}`);
}

function repository(v: unknown, where: string): string {
  if (typeof v !== 'string' || v === '')
    fail(where, 'want a repository such as registry.example.com/workspace-images');
  const r = parseNormalizedReference(v);
  if (r.tag !== undefined || r.digest !== undefined) fail(where, 'want a repository without tag or digest');
  return `${r.domain}/${r.path}`;
}

function positive(v: unknown, where: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0)
    fail(where, `want a positive number, got ${JSON.stringify(v)}`);
  return v;
}

function count(v: unknown, where: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1)
    fail(where, `want a whole number of at least 1, got ${JSON.stringify(v)}`);
  return v;
}

function bytes(v: unknown, where: string, fallback: number, min = 0): number {
  if (v === undefined) return fallback;
  const n = parseByteSize(v, where, fail);
  if (n < min) fail(where, `want at least ${min} ${min === 1 ? 'byte' : 'bytes'}, got ${JSON.stringify(v)}`);
  return n;
}

/** `logs`: the build logs' budget. */
function logsFrom(v: unknown): BuilderConfig['logs'] {
  const o = (v ?? {}) as Record<string, unknown>;
  if (typeof o !== 'object' || Array.isArray(o)) fail('logs', 'want a mapping with maxPerBuild, keepBuilds');
  for (const k of unknownKeys(o, BUILDER_KEYS.logs)) fail(`logs.${k}`, 'unknown key');
  return {
    maxBytesPerBuild: bytes(o.maxPerBuild, 'logs.maxPerBuild', DEFAULT_LOG_BYTES_PER_BUILD, 1024),
    keepBuilds: o.keepBuilds === undefined ? DEFAULT_KEPT_LOGS : count(o.keepBuilds, 'logs.keepBuilds'),
  };
}

function strings(v: unknown, where: string): string[] {
  if (!Array.isArray(v) || v.some((s) => typeof s !== 'string')) fail(where, 'want a list of strings');
  return v as string[];
}

/** `redis`: a URL, or a mapping with the URL, a password file, TLS files and the keys' prefix. */
function redisEndpoint(
  v: unknown,
  path: (v: unknown, where: string) => string,
): RedisEndpoint & { keyPrefix?: string } {
  const o = (typeof v === 'string' ? { url: v } : v) as Record<string, unknown>;
  if (typeof o !== 'object' || o === null || Array.isArray(o))
    fail('redis', 'want a URL such as redis://host:6379, or a mapping with url');
  for (const k of unknownKeys(o, BUILDER_KEYS.redis)) fail(`redis.${k}`, 'unknown key');
  const url = o.url;
  checkRedisUrl(url, 'redis', fail);
  const e: RedisEndpoint = { url };
  if (o.passwordFile !== undefined) e.passwordFile = path(o.passwordFile, 'redis.passwordFile');
  if (o.tls !== undefined) e.tls = tlsClientFilesFrom(o.tls, 'redis.tls', path, fail);
  checkRedisEndpoint(e, 'redis', fail);
  if (o.keyPrefix !== undefined && typeof o.keyPrefix !== 'string') fail('redis.keyPrefix', 'want a string');
  return { ...e, ...(o.keyPrefix !== undefined && { keyPrefix: o.keyPrefix }) };
}

/** The configuration from a parsed document (YAML or JSON); relative paths are relative to `base`. */
export function builderConfigFrom(doc: unknown, base: string): BuilderConfig {
  const o = (doc ?? {}) as Record<string, unknown>;
  if (typeof o !== 'object' || Array.isArray(o)) fail('', 'want a mapping');
  for (const k of unknownKeys(o, BUILDER_KEYS)) fail(k, 'unknown key');
  const path = (v: unknown, where: string) => {
    if (typeof v !== 'string' || v === '') fail(where, 'want a path');
    return resolve(base, v);
  };
  const tls = o.tls as { cert?: unknown; key?: unknown } | undefined;
  if (tls !== undefined) {
    if (typeof tls !== 'object' || tls === null) fail('tls', 'want a mapping with cert and key');
    for (const k of unknownKeys(tls, BUILDER_KEYS.tls)) fail(`tls.${k}`, 'unknown key');
  }
  return {
    listen: parseListen(typeof o.listen === 'string' ? o.listen : '127.0.0.1:8080', 'listen'),
    baseRepository: o.baseRepository === undefined ? '' : repository(o.baseRepository, 'baseRepository'),
    workspaceRepository:
      o.workspaceRepository === undefined ? '' : repository(o.workspaceRepository, 'workspaceRepository'),
    stateDir: o.stateDir === undefined ? '/var/lib/strata/builder' : path(o.stateDir, 'stateDir'),
    ...(o.dockerAuth !== undefined && { dockerAuth: path(o.dockerAuth, 'dockerAuth') }),
    plainHttpHosts:
      o.plainHttpHosts === undefined
        ? []
        : strings(o.plainHttpHosts, 'plainHttpHosts').map((h) => h.toLowerCase()),
    platform: parsePlatform(typeof o.platform === 'string' ? o.platform : 'linux/amd64'),
    parallelism: o.parallelism === undefined ? 2 : Math.floor(positive(o.parallelism, 'parallelism')),
    maxQueued: o.maxQueued === undefined ? 100 : Math.floor(positive(o.maxQueued, 'maxQueued')),
    timeoutMs: (o.timeoutSeconds === undefined ? 3600 : positive(o.timeoutSeconds, 'timeoutSeconds')) * 1000,
    keepFinishedMs:
      (o.keepFinishedSeconds === undefined ? 3600 : positive(o.keepFinishedSeconds, 'keepFinishedSeconds')) *
      1000,
    cacheMaxBytes: bytes(o.cacheMax, 'cacheMax', 20 * 1024 ** 3),
    logs: logsFrom(o.logs),
    storageDriver: typeof o.storageDriver === 'string' ? o.storageDriver : 'overlay',
    secrets: o.secrets === undefined ? [] : strings(o.secrets, 'secrets'),
    allowFileRemotes: o.allowFileRemotes === true,
    gitTimeoutMs:
      (o.gitTimeoutSeconds === undefined ? 600 : positive(o.gitTimeoutSeconds, 'gitTimeoutSeconds')) * 1000,
    repositoryMaxBytes: bytes(o.repositoryMax, 'repositoryMax', 4 * 1024 ** 3, 1),
    ...(typeof o.metrics === 'string' && { metrics: parseListen(o.metrics, 'metrics') }),
    ...(tls && { tls: { cert: path(tls.cert, 'tls.cert'), key: path(tls.key, 'tls.key') } }),
    ...(o.connections !== undefined && {
      connections: grpcConnectionsFrom(o.connections, 'connections', fail),
    }),
    ...(o.redis !== undefined && { redis: redisEndpoint(o.redis, path) }),
  };
}

/** The config file (when given) with `overrides` (keys of the file, e.g. from flags) on top. */
export async function loadBuilderConfig(
  file: string | undefined,
  overrides: Record<string, unknown> = {},
): Promise<BuilderConfig> {
  if (!file) return builderConfigFrom(overrides, process.cwd());
  let doc: unknown;
  try {
    doc = parseYaml(await readFile(file, 'utf8'));
  } catch (err) {
    throw invalidArgument(`builder config ${file}: ${messageOf(err)}`);
  }
  const fromFile = (doc ?? {}) as Record<string, unknown>;
  const hosts = [fromFile.plainHttpHosts ?? [], overrides.plainHttpHosts ?? []].flat();
  const merged: Record<string, unknown> = { ...fromFile, ...overrides, plainHttpHosts: hosts };
  // `--redis URL` (and its flags) set those keys of the file's redis mapping; its TLS, password file and
  // prefix stay.
  if (isObj(fromFile.redis) && overrides.redis !== undefined) {
    const flags = typeof overrides.redis === 'string' ? { url: overrides.redis } : overrides.redis;
    merged.redis = { ...fromFile.redis, ...(flags as Record<string, unknown>) };
  }
  return builderConfigFrom(merged, dirname(resolve(file)));
}

/** Prometheus metrics of the builder, and the observer the orchestrator reports to. */
export class BuilderMetrics implements BuilderObserver {
  readonly registry: Registry;
  private readonly startedTotal: Counter;
  private readonly doneTotal: Counter<'outcome'>;
  private readonly duration: Histogram<'outcome'>;
  private readonly joinedTotal: Counter;
  private readonly queue: Gauge;

  /** With a registry of its own (and the process defaults on it) unless one is given. */
  constructor(shared?: Registry) {
    this.registry = shared ?? new Registry();
    if (!shared) collectDefaultMetrics({ register: this.registry, prefix: 'strata_builder_' });
    const registers = [this.registry];
    this.startedTotal = new Counter({
      name: 'strata_builder_builds_started_total',
      help: 'Builds started',
      registers,
    });
    this.doneTotal = new Counter({
      name: 'strata_builder_builds_done_total',
      help: 'Builds finished, by outcome',
      labelNames: ['outcome'],
      registers,
    });
    this.duration = new Histogram({
      name: 'strata_builder_build_duration_seconds',
      help: 'Build duration (queue included), by outcome',
      labelNames: ['outcome'],
      buckets: [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600],
      registers,
    });
    this.joinedTotal = new Counter({
      name: 'strata_builder_joined_requests_total',
      help: 'Build requests that joined a build already running',
      registers,
    });
    this.queue = new Gauge({
      name: 'strata_builder_queue_length',
      help: 'Builds waiting for a slot',
      registers,
    });
  }
  started(): void {
    this.startedTotal.inc();
  }
  finished(outcome: 'success' | 'failure', seconds: number): void {
    this.doneTotal.inc({ outcome });
    this.duration.observe({ outcome }, seconds);
  }
  joined(): void {
    this.joinedTotal.inc();
  }
  queueLength(n: number): void {
    this.queue.set(n);
  }
  /** Reports at each scrape whether the Redis that builds are shared through is reachable. */
  watchRedis(connected: () => boolean): void {
    new Gauge({
      name: 'strata_builder_redis_connected',
      help: 'Whether the Redis that builds are shared through is reachable (1) or not (0)',
      registers: [this.registry],
      collect() {
        this.set(connected() ? 1 : 0);
      },
    });
  }
}

export interface RunningBuilder {
  port: number;
  metricsPort?: number;
  builder: Builder;
  metrics: BuilderMetrics;
  close(): Promise<void>;
}

/**
 * Wires and starts a builder; `engine` replaces buildah (tests of the orchestration), `registry` is a
 * metrics registry shared with other parts of the process, and `instrument` counts its gRPC calls there.
 */
export async function startBuilder(
  config: BuilderConfig,
  logger: Logger,
  overrides: {
    engine?: BuildEngine;
    registry?: Registry;
    instrument?: (reg: ServiceRegistration) => ServiceRegistration;
    /**
     * The system's own registry (`strata up`'s hosted one) and the credentials the builder has there:
     * used for it before the docker auth file, and by every request for its pulls (see AuthPolicy).
     */
    systemRegistry?: { host: string; credentials: Credentials };
  } = {},
): Promise<RunningBuilder> {
  const instrument = overrides.instrument ?? ((reg: ServiceRegistration) => reg);
  if (!config.baseRepository) throw invalidArgument('a base repository is required (--base-repo)');
  if (!config.workspaceRepository)
    throw invalidArgument('a workspace repository is required (--workspace-repo)');
  await mkdir(config.stateDir, { recursive: true, mode: 0o700 });
  // One builder per state directory (replicas each have their own): its start removes the previous
  // process's work below, and its build history is written through one temp file per source.
  const unlock = await lockRoot(config.stateDir, 'builder');
  const undo: Array<() => Promise<void>> = [unlock];
  const unwind = async () => {
    for (const fn of undo.reverse())
      await fn().catch((err: unknown) => logger.warn({ err: messageOf(err) }, 'cleanup failed'));
  };
  try {
    const fromFile = config.dockerAuth ? new DockerConfigCredentials({ path: config.dockerAuth }) : anonymous;
    const system = overrides.systemRegistry;
    const systemHost = system && canonicalHost(system.host);
    const installation: CredentialStore = system
      ? {
          get: async (host, signal) =>
            canonicalHost(host) === systemHost ? system.credentials : fromFile.get(host, signal),
        }
      : fromFile;
    const registries = new RegistryAccess({ hosts: { insecure: config.plainHttpHosts }, installation });
    undo.push(() => registries.close());
    // git and buildah run with environments of their own: the process's proxy settings are passed on.
    const proxy = proxyVariables(process.env);
    const engine =
      overrides.engine ??
      (await BuildahEngine.open({
        storageRoot: join(config.stateDir, 'buildah', 'storage'),
        runRoot: join(config.stateDir, 'buildah', 'run'),
        driver: config.storageDriver,
        cacheMaxBytes: config.cacheMaxBytes,
        configDir: join(config.stateDir, 'buildah', 'config'),
        proxy,
      }));
    // The work of builds a previous process was running when it ended (checkouts, registry auth files):
    // nothing runs yet, so none of it is in use.
    await rm(join(config.stateDir, 'work'), { recursive: true, force: true });
    const logs = await LogStore.open({ dir: join(config.stateDir, 'logs'), ...config.logs });
    // Redis's client (~650 modules) only for replicas that share builds.
    const shared = config.redis
      ? await (await import('../builder/shared-builds.ts')).SharedBuilds.connect({
          url: config.redis.url,
          credentials: await redisCredentials(config.redis),
          ...(config.redis.keyPrefix !== undefined && { keyPrefix: config.redis.keyPrefix }),
        })
      : undefined;
    if (shared) undo.push(async () => shared.close());
    const metrics = new BuilderMetrics(overrides.registry);
    if (shared) metrics.watchRedis(() => shared.connected);
    const builderLogger = logger.child({ component: 'builder' });
    const builder = new Builder({
      stateDir: config.stateDir,
      baseRepository: config.baseRepository,
      workspaceRepository: config.workspaceRepository,
      registries,
      installation,
      ...(systemHost && { systemRegistries: new Set([systemHost]) }),
      engine,
      logs,
      history: new SourceHistory(join(config.stateDir, 'sources'), builderLogger),
      logger: builderLogger,
      platform: config.platform,
      insecureHosts: config.plainHttpHosts,
      parallelism: config.parallelism,
      maxQueued: config.maxQueued,
      timeoutMs: config.timeoutMs,
      keepFinishedMs: config.keepFinishedMs,
      secrets: config.secrets,
      allowFileRemotes: config.allowFileRemotes,
      gitTimeoutMs: config.gitTimeoutMs,
      repositoryMaxBytes: config.repositoryMaxBytes,
      proxy,
      observer: metrics,
      ...(shared && { shared }),
    });
    undo.push(() => builder.close());
    // The log URL names the bound port: the configured one may be 0 (any free port).
    let logUrl = '';
    const grpc = createGrpcServer({
      logger: logger.child({ component: 'grpc' }),
      services: [instrument(builderService({ builder, logUrl: () => logUrl }))],
      ...(config.connections && { connections: config.connections }),
      onConnectionDropped: countGrpcDrops(metrics.registry, 'builder'),
      ...(config.tls && {
        tls: { cert: await readFile(config.tls.cert), key: await readFile(config.tls.key) },
      }),
    });
    // Unwound in reverse: builds are cancelled first (their callers get a final message), then the server stops.
    undo.splice(undo.length - 1, 0, () => grpc.shutdown());
    const port = await grpc.listenTcp(config.listen.host, config.listen.port);
    logUrl = `grpc://${joinHostPort(config.listen.host, port)}`;
    let metricsPort: number | undefined;
    if (config.metrics) {
      const served = await serveMetrics(metrics, config.metrics.host, config.metrics.port);
      undo.push(() => served.close());
      metricsPort = served.port;
    }
    logger.info(
      { port, base: config.baseRepository, workspace: config.workspaceRepository },
      'builder started',
    );
    let closing: Promise<void> | undefined;
    return {
      port,
      ...(metricsPort !== undefined && { metricsPort }),
      builder,
      metrics,
      close() {
        closing ??= unwind();
        return closing;
      },
    };
  } catch (err) {
    await unwind();
    throw err;
  }
}
