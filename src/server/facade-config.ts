// The facade's configuration: a YAML (or JSON) file, overridden by command-line flags. Validation names the
// key and says what is wanted; unknown keys are errors, so a typo does not silently fall back to a default.
// Relative paths are relative to the config file.
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { GrpcConnectionLimits } from '../api/grpc/server.ts';
import { DEFAULT_HEADER_TIMEOUT_MS } from '../connection-guard.ts';
import { invalidArgument, messageOf } from '../errors.ts';
import { DEFAULT_STALL_MS } from '../facade/blobs/cache.ts';
import { normalizePrefix } from '../facade/http/route.ts';
import type { TlsFiles } from '../facade/http/tls-files.ts';
import { DEFAULT_TAG_STALE_IF_ERROR_MS } from '../facade/service.ts';
import { DEFAULT_SHARED_MAX_VALUE_BYTES, DEFAULT_SHARED_TIMEOUT_MS } from '../facade/shared/shared-store.ts';
import type { StaticLayerConfig } from '../facade/static-layer.ts';
import { parseHostPort } from '../host-port.ts';
import type { Platform } from '../oci/descriptor.ts';
import { parsePlatform } from '../oci/platform.ts';
import { parseNormalizedReference } from '../oci/reference.ts';
import {
  checkRedisEndpoint,
  checkRedisUrl,
  type RedisEndpoint,
  TLS_CLIENT_KEYS,
  type TlsClientFiles,
  tlsClientFilesFrom,
} from './client-files.ts';
import { type KeyTree, unknownKeys } from './config-keys.ts';

export interface RemoteProviderConfig {
  address: string;
  timeoutMs: number;
  tls?: TlsClientFiles;
}

/** Client authentication: Basic from an htpasswd file, Bearer tokens, or both (see ClientAuth). */
export interface AuthConfig {
  htpasswd?: string;
  basicRealm: string;
  basicCacheMs: number;
  token?: { realm: string; service: string; issuer: string; keys: string };
}

/** The cache replicas share (see src/facade/shared). */
export interface RedisConfig extends RedisEndpoint {
  keyPrefix: string;
  /** Bound of every Redis call. */
  timeoutMs: number;
  /** How long a tag's resolution is shared. */
  tagTtlMs: number;
  /** How long a spec from a remote provider is shared. */
  specTtlMs: number;
  /** Largest value stored or read back. */
  maxValueBytes: number;
}

export type { StaticLayerConfig } from '../facade/static-layer.ts';

export interface FacadeConfig {
  listen: { host: string; port: number };
  /** Repository-name prefix, normalised to '' or `a/b/`. */
  prefix: string;
  tls?: TlsFiles;
  /** Unset: anyone may pull. */
  auth?: AuthConfig;
  /**
   * Hosted repositories (push and pull for names outside `<prefix>remote/` and `<prefix>fixed/`), kept in
   * the content store and metadata database under `root` (a daemon root). Unset: none.
   */
  hosted?: { root: string };
  /** Unset: each replica caches on its own. */
  redis?: RedisConfig;
  specProviders: {
    remote: RemoteProviderConfig[];
    fixedFile?: string;
    /**
     * Strata's own spec store; served over gRPC at `listen` (registryfacade.SpecProvider), and with
     * `writable` also strata.specstore.v1.SpecStore, which puts and removes specs; over TLS with `tls`,
     * mutual when it names a `clientCa`.
     */
    store?: {
      dir: string;
      listen?: { host: string; port: number };
      writable?: boolean;
      tls?: TlsFiles;
      connections?: GrpcConnectionLimits;
    };
    cacheTtlMs: number;
    cacheEntries: number;
  };
  staticLayers: StaticLayerConfig[];
  dockerAuth?: string;
  cache: { dir: string; maxBytes: number };
  platform: Platform;
  /** Registry and content-layer hosts (`host` or `host:port`) reached over plain HTTP. */
  plainHttpHosts: string[];
  caCerts: string[];
  contentLayers: { redirect: boolean };
  tagTtlMs: number;
  /** How long a tag's last resolution stands in while its registry cannot be reached (0: never). */
  tagStaleIfErrorMs: number;
  /**
   * A blob fetch (registry or content-layer host) that receives no byte for this long fails; so does a
   * manifest, tag or config request not answered within it, retries included.
   */
  upstreamStallMs: number;
  /** On SIGTERM, requests in flight get this long to finish before they are cut. */
  shutdownGraceMs: number;
  /** Client connection caps; unset ones are derived from the open-file limit at start. */
  connections: { max?: number; perClient?: number; headerTimeoutMs: number };
  /**
   * Prefetch of specs put in the own spec store (on by default; nothing to do without a store): blob fills
   * at once, how many of the specs already stored are prefetched at start (most recent first), and how
   * often and after how long a failed prefetch is tried again.
   */
  prefetch: {
    enabled: boolean;
    concurrency: number;
    startupSpecs: number;
    retries: number;
    retryDelayMs: number;
  };
  /**
   * Watch the reloadable files (fixed specs, static layer files, docker auth, htpasswd, token keys, TLS)
   * and reload them when they change (default). false: they are reloaded on SIGHUP only.
   */
  watchFiles: boolean;
}

export const DEFAULT_LISTEN = '127.0.0.1:5050';

const TLS_FILES = { cert: null, key: null } as const;
/** The keys of a gRPC listener's TLS files: the spec store's, in the facade's config and in `strata up`'s. */
export const LISTENER_TLS_KEYS = { cert: null, key: null, clientCa: null } as const;

/** The keys of a gRPC TCP listener's connection limits: the spec store's, the builder's, `strata up`'s. */
export const GRPC_CONNECTION_KEYS = {
  max: null,
  idleSeconds: null,
  keepaliveSeconds: null,
  keepaliveTimeoutSeconds: null,
  minPingIntervalSeconds: null,
} as const;

/** Every key the facade's config file accepts (docs/configuration.md is tested against it). */
export const FACADE_KEYS = {
  listen: null,
  prefix: null,
  tls: TLS_FILES,
  auth: {
    htpasswd: null,
    basicRealm: null,
    basicCacheSeconds: null,
    token: { realm: null, service: null, issuer: null, keys: null },
  },
  specProviders: {
    remote: { address: null, timeoutMs: null, tls: TLS_CLIENT_KEYS },
    fixedFile: null,
    store: {
      dir: null,
      listen: null,
      writable: null,
      tls: LISTENER_TLS_KEYS,
      connections: GRPC_CONNECTION_KEYS,
    },
    cacheTtlSeconds: null,
    cacheEntries: null,
  },
  staticLayers: { ref: null, file: null },
  dockerAuth: null,
  cache: { dir: null, maxBytes: null },
  platform: null,
  plainHttpHosts: null,
  caCerts: null,
  contentLayers: { redirect: null },
  tagTtlSeconds: null,
  tagStaleIfErrorSeconds: null,
  upstreamStallTimeoutSeconds: null,
  connections: { max: null, perClient: null, headerTimeoutSeconds: null },
  shutdownGraceSeconds: null,
  hosted: { root: null },
  prefetch: { enabled: null, concurrency: null, startupSpecs: null, retries: null, retryDelaySeconds: null },
  redis: {
    url: null,
    passwordFile: null,
    tls: TLS_CLIENT_KEYS,
    keyPrefix: null,
    timeoutMs: null,
    tagTtlSeconds: null,
    specTtlSeconds: null,
    maxValueBytes: null,
  },
  watchFiles: null,
} as const satisfies KeyTree;

export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const base =
    env.XDG_CACHE_HOME && isAbsolute(env.XDG_CACHE_HOME) ? env.XDG_CACHE_HOME : join(homedir(), '.cache');
  return join(base, 'strata', 'facade');
}

type Obj = Record<string, unknown>;

/** A YAML mapping (not a list, not null). */
export function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function fail(where: string, what: string): never {
  throw invalidArgument(`facade config: ${where}: ${what}`);
}
const facadeFail = fail;

function checkKeys(o: Obj, allowed: KeyTree, where: string): void {
  const [k] = unknownKeys(o, allowed);
  if (k !== undefined)
    fail(
      where === '' ? k : `${where}.${k}`,
      `unknown key (expected one of ${Object.keys(allowed).join(', ')})`,
    );
}

function str(v: unknown, where: string): string {
  if (typeof v !== 'string' || v === '') fail(where, `want a non-empty string, got ${JSON.stringify(v)}`);
  return v;
}

function optStr(v: unknown, where: string): string | undefined {
  return v === undefined || v === null ? undefined : str(v, where);
}

function obj(v: unknown, where: string): Obj {
  if (!isObj(v)) fail(where, 'want a map');
  return v;
}

function list(v: unknown, where: string): unknown[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) fail(where, 'want a list');
  return v;
}

function positive(v: unknown, where: string, fallback: number): number {
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0)
    fail(where, `want a positive number, got ${JSON.stringify(v)}`);
  return v;
}

/** A whole number of at least 1 (from a flag as text, or from the file). */
export function parseCount(v: unknown, where: string): number {
  const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 1)
    fail(where, `want a whole number of at least 1, got ${JSON.stringify(v)}`);
  return n;
}

function nonNegative(v: unknown, where: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0)
    fail(where, `want a number of at least 0, got ${JSON.stringify(v)}`);
  return v;
}

function wholeNumber(v: unknown, where: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
    fail(where, `want a whole number, got ${JSON.stringify(v)}`);
  return v;
}

/** A positive number of seconds given as text (a flag), in milliseconds. */
export function parseSeconds(v: string, where: string): number {
  const n = v.trim() === '' ? Number.NaN : Number(v);
  if (!Number.isFinite(n) || n <= 0)
    fail(where, `want a positive number of seconds, got ${JSON.stringify(v)}`);
  return n * 1000;
}

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1e3,
  kb: 1e3,
  kib: 1024,
  m: 1e6,
  mb: 1e6,
  mib: 1024 ** 2,
  g: 1e9,
  gb: 1e9,
  gib: 1024 ** 3,
  t: 1e12,
  tb: 1e12,
  tib: 1024 ** 4,
};

/** `10GiB`, `512MB`, `1e9` or a number of bytes; problems are reported through `fail` (the facade's own by default). */
export function parseByteSize(
  v: unknown,
  where: string,
  fail: (where: string, what: string) => never = facadeFail,
): number {
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v) || v < 0) fail(where, `want a whole number of bytes, got ${v}`);
    return v;
  }
  if (typeof v !== 'string') fail(where, `want a size such as 10GiB, got ${JSON.stringify(v)}`);
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(v);
  const unit = UNITS[m?.[2]?.toLowerCase() ?? 'x'];
  if (!m || unit === undefined) fail(where, `want a size such as 10GiB or 500MB, got ${JSON.stringify(v)}`);
  const n = Math.floor(Number(m[1]) * unit);
  if (!Number.isSafeInteger(n)) fail(where, `size ${v} is too large`);
  return n;
}

/**
 * A listener's TLS files (`cert` and `key`, and `clientCa` to ask clients for certificates): paths made
 * by `path`, problems reported through `fail` under `where`.
 */
export function listenerTlsFilesFrom(
  v: unknown,
  where: string,
  path: (v: unknown, where: string) => string,
  fail: (where: string, what: string) => never,
): TlsFiles {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(where, 'want a mapping');
  const t = v as Record<string, unknown>;
  for (const k of unknownKeys(t, LISTENER_TLS_KEYS)) fail(`${where}.${k}`, 'unknown key');
  const file = (k: keyof typeof LISTENER_TLS_KEYS): string =>
    t[k] === undefined || t[k] === null ? fail(`${where}.${k}`, 'required') : path(t[k], `${where}.${k}`);
  const files: TlsFiles = { cert: file('cert'), key: file('key') };
  if (t.clientCa !== undefined && t.clientCa !== null) files.clientCa = file('clientCa');
  return files;
}

/**
 * A gRPC listener's connection limits (`max`, `idleSeconds`, keepalive), problems reported through `fail`
 * under `where`; unset ones keep the server's defaults.
 */
export function grpcConnectionsFrom(
  v: unknown,
  where: string,
  fail: (where: string, what: string) => never,
): GrpcConnectionLimits {
  if (!isObj(v)) fail(where, 'want a mapping');
  const c = v;
  for (const k of unknownKeys(c, GRPC_CONNECTION_KEYS)) fail(`${where}.${k}`, 'unknown key');
  const limits: GrpcConnectionLimits = {};
  if (c.max !== undefined && c.max !== null) {
    if (typeof c.max !== 'number' || !Number.isSafeInteger(c.max) || c.max < 1)
      fail(`${where}.max`, `want a whole number of at least 1, got ${JSON.stringify(c.max)}`);
    limits.max = c.max;
  }
  const ms = (k: keyof typeof GRPC_CONNECTION_KEYS): number | undefined => {
    const v = c[k];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0)
      fail(`${where}.${k}`, `want a positive number, got ${JSON.stringify(v)}`);
    return v * 1000;
  };
  const idleMs = ms('idleSeconds');
  const keepaliveMs = ms('keepaliveSeconds');
  const keepaliveTimeoutMs = ms('keepaliveTimeoutSeconds');
  const minPingIntervalMs = ms('minPingIntervalSeconds');
  return {
    ...limits,
    ...(idleMs !== undefined && { idleMs }),
    ...(keepaliveMs !== undefined && { keepaliveMs }),
    ...(keepaliveTimeoutMs !== undefined && { keepaliveTimeoutMs }),
    ...(minPingIntervalMs !== undefined && { minPingIntervalMs }),
  };
}

/** `host:port`, `[v6]:port` or `:port` (all interfaces). */
export function parseListen(v: string, where: string): { host: string; port: number } {
  return (
    parseHostPort(v, '0.0.0.0') ?? fail(where, `want host:port (port 0-65535), got ${JSON.stringify(v)}`)
  );
}

/** Validates a parsed config document. `base` is the directory relative paths are taken from. */
export function facadeConfigFrom(doc: unknown, base: string): FacadeConfig {
  const d = doc === null || doc === undefined ? {} : obj(doc, '(top level)');
  checkKeys(d, FACADE_KEYS, '');
  const path = (v: unknown, where: string): string => resolve(base, str(v, where));
  const optPath = (v: unknown, where: string): string | undefined =>
    v === undefined || v === null ? undefined : path(v, where);
  const tlsClientFiles = (v: unknown, where: string) => tlsClientFilesFrom(v, where, path, fail);

  const listen = parseListen(optStr(d.listen, 'listen') ?? DEFAULT_LISTEN, 'listen');
  let prefix: string;
  try {
    prefix = normalizePrefix(
      typeof d.prefix === 'string' ? d.prefix : d.prefix === undefined ? '' : str(d.prefix, 'prefix'),
    );
  } catch (err) {
    fail('prefix', messageOf(err));
  }

  let tls: TlsFiles | undefined;
  if (d.tls !== undefined && d.tls !== null) {
    const t = obj(d.tls, 'tls');
    checkKeys(t, FACADE_KEYS.tls, 'tls');
    tls = { cert: path(t.cert, 'tls.cert'), key: path(t.key, 'tls.key') };
  }

  let auth: AuthConfig | undefined;
  if (d.auth !== undefined && d.auth !== null) {
    const a = obj(d.auth, 'auth');
    checkKeys(a, FACADE_KEYS.auth, 'auth');
    auth = {
      htpasswd: optPath(a.htpasswd, 'auth.htpasswd'),
      basicRealm: optStr(a.basicRealm, 'auth.basicRealm') ?? 'strata facade',
      basicCacheMs: positive(a.basicCacheSeconds, 'auth.basicCacheSeconds', 60) * 1000,
    };
    if (a.token !== undefined && a.token !== null) {
      const t = obj(a.token, 'auth.token');
      checkKeys(t, FACADE_KEYS.auth.token, 'auth.token');
      const realm = str(t.realm, 'auth.token.realm');
      if (!URL.canParse(realm) || !/^https?:$/.test(new URL(realm).protocol))
        fail('auth.token.realm', `want an http(s) URL, got ${JSON.stringify(realm)}`);
      auth.token = {
        realm,
        service: str(t.service, 'auth.token.service'),
        issuer: str(t.issuer, 'auth.token.issuer'),
        keys: path(t.keys, 'auth.token.keys'),
      };
    }
    if (!auth.htpasswd && !auth.token) fail('auth', 'want htpasswd, token or both');
  }

  const sp =
    d.specProviders === undefined || d.specProviders === null ? {} : obj(d.specProviders, 'specProviders');
  checkKeys(sp, FACADE_KEYS.specProviders, 'specProviders');
  const remote = list(sp.remote, 'specProviders.remote').map((r, i): RemoteProviderConfig => {
    const where = `specProviders.remote[${i}]`;
    const ro = typeof r === 'string' ? { address: r } : obj(r, where);
    checkKeys(ro, FACADE_KEYS.specProviders.remote, where);
    const out: RemoteProviderConfig = {
      address: str(ro.address, `${where}.address`),
      timeoutMs: positive(ro.timeoutMs, `${where}.timeoutMs`, 5000),
    };
    if (ro.tls !== undefined && ro.tls !== null) out.tls = tlsClientFiles(ro.tls, `${where}.tls`);
    return out;
  });
  let store: FacadeConfig['specProviders']['store'];
  if (sp.store !== undefined && sp.store !== null) {
    const so = typeof sp.store === 'string' ? { dir: sp.store } : obj(sp.store, 'specProviders.store');
    checkKeys(so, FACADE_KEYS.specProviders.store, 'specProviders.store');
    store = { dir: path(so.dir, 'specProviders.store.dir') };
    const l = optStr(so.listen, 'specProviders.store.listen');
    if (l !== undefined) store.listen = parseListen(l, 'specProviders.store.listen');
    if (so.writable !== undefined && so.writable !== null) {
      if (typeof so.writable !== 'boolean') fail('specProviders.store.writable', 'want true or false');
      if (so.writable && !store.listen) {
        fail('specProviders.store.writable', 'needs specProviders.store.listen, where the writes are served');
      }
      if (so.writable) store.writable = true;
    }
    if (so.tls !== undefined && so.tls !== null) {
      const where = 'specProviders.store.tls';
      if (!store.listen) fail(where, 'needs specProviders.store.listen, the listener it secures');
      store.tls = listenerTlsFilesFrom(so.tls, where, path, fail);
    }
    if (so.connections !== undefined && so.connections !== null) {
      const where = 'specProviders.store.connections';
      if (!store.listen) fail(where, 'needs specProviders.store.listen, the listener it limits');
      store.connections = grpcConnectionsFrom(so.connections, where, fail);
    }
  }
  const cacheEntries = positive(sp.cacheEntries, 'specProviders.cacheEntries', 1024);
  if (!Number.isSafeInteger(cacheEntries)) fail('specProviders.cacheEntries', 'want a whole number');

  const staticLayers = list(d.staticLayers, 'staticLayers').map((s, i): StaticLayerConfig => {
    const where = `staticLayers[${i}]`;
    const so = obj(s, where);
    checkKeys(so, FACADE_KEYS.staticLayers, where);
    if ((so.ref === undefined) === (so.file === undefined)) fail(where, 'want exactly one of ref or file');
    if (so.ref !== undefined) {
      const ref = str(so.ref, `${where}.ref`);
      try {
        parseNormalizedReference(ref);
      } catch (err) {
        fail(`${where}.ref`, messageOf(err));
      }
      return { ref };
    }
    return { file: path(so.file, `${where}.file`) };
  });

  const c = d.cache === undefined || d.cache === null ? {} : obj(d.cache, 'cache');
  checkKeys(c, FACADE_KEYS.cache, 'cache');
  const cache = {
    dir: optPath(c.dir, 'cache.dir') ?? defaultCacheDir(),
    maxBytes: c.maxBytes === undefined ? 10 * 1024 ** 3 : parseByteSize(c.maxBytes, 'cache.maxBytes'),
  };

  let platform: Platform;
  try {
    platform = parsePlatform(optStr(d.platform, 'platform') ?? 'linux/amd64');
  } catch (err) {
    fail('platform', messageOf(err));
  }

  const plainHttpHosts = list(d.plainHttpHosts, 'plainHttpHosts').map((h, i) => {
    const s = str(h, `plainHttpHosts[${i}]`).toLowerCase();
    if (/[/\s]/.test(s)) fail(`plainHttpHosts[${i}]`, `want host or host:port, got ${JSON.stringify(s)}`);
    return s;
  });
  const caCerts = list(d.caCerts, 'caCerts').map((p, i) => path(p, `caCerts[${i}]`));
  const cl =
    d.contentLayers === undefined || d.contentLayers === null ? {} : obj(d.contentLayers, 'contentLayers');
  checkKeys(cl, FACADE_KEYS.contentLayers, 'contentLayers');
  if (cl.redirect !== undefined && typeof cl.redirect !== 'boolean')
    fail('contentLayers.redirect', 'want true or false');

  const co = d.connections === undefined || d.connections === null ? {} : obj(d.connections, 'connections');
  checkKeys(co, FACADE_KEYS.connections, 'connections');
  const connections: FacadeConfig['connections'] = {
    headerTimeoutMs:
      positive(
        co.headerTimeoutSeconds,
        'connections.headerTimeoutSeconds',
        DEFAULT_HEADER_TIMEOUT_MS / 1000,
      ) * 1000,
  };
  if (co.max !== undefined && co.max !== null) connections.max = parseCount(co.max, 'connections.max');
  if (co.perClient !== undefined && co.perClient !== null)
    connections.perClient = parseCount(co.perClient, 'connections.perClient');

  let hosted: FacadeConfig['hosted'];
  if (d.hosted !== undefined && d.hosted !== null) {
    const ho = obj(d.hosted, 'hosted');
    checkKeys(ho, FACADE_KEYS.hosted, 'hosted');
    hosted = { root: path(ho.root, 'hosted.root') };
  }

  const pf = d.prefetch === undefined || d.prefetch === null ? {} : obj(d.prefetch, 'prefetch');
  checkKeys(pf, FACADE_KEYS.prefetch, 'prefetch');
  if (pf.enabled !== undefined && typeof pf.enabled !== 'boolean')
    fail('prefetch.enabled', 'want true or false');
  const prefetch: FacadeConfig['prefetch'] = {
    enabled: pf.enabled !== false,
    concurrency: pf.concurrency === undefined ? 4 : parseCount(pf.concurrency, 'prefetch.concurrency'),
    startupSpecs: pf.startupSpecs === undefined ? 100 : wholeNumber(pf.startupSpecs, 'prefetch.startupSpecs'),
    retries: pf.retries === undefined ? 3 : wholeNumber(pf.retries, 'prefetch.retries'),
    retryDelayMs: positive(pf.retryDelaySeconds, 'prefetch.retryDelaySeconds', 2) * 1000,
  };
  const tagTtlMs = positive(d.tagTtlSeconds, 'tagTtlSeconds', 60) * 1000;
  const specCacheTtlMs = positive(sp.cacheTtlSeconds, 'specProviders.cacheTtlSeconds', 30) * 1000;
  let redis: RedisConfig | undefined;
  if (d.redis !== undefined && d.redis !== null) {
    const ro = typeof d.redis === 'string' ? { url: d.redis } : obj(d.redis, 'redis');
    checkKeys(ro, FACADE_KEYS.redis, 'redis');
    const url = str(ro.url, 'redis.url');
    checkRedisUrl(url, 'redis.url', fail);
    const passwordFile = optPath(ro.passwordFile, 'redis.passwordFile');
    const tls = ro.tls === undefined || ro.tls === null ? undefined : tlsClientFiles(ro.tls, 'redis.tls');
    checkRedisEndpoint({ url, passwordFile, tls }, 'redis', fail);
    redis = {
      url,
      ...(passwordFile !== undefined && { passwordFile }),
      ...(tls && { tls }),
      keyPrefix: ro.keyPrefix === '' ? '' : (optStr(ro.keyPrefix, 'redis.keyPrefix') ?? 'strata:facade:'),
      timeoutMs: positive(ro.timeoutMs, 'redis.timeoutMs', DEFAULT_SHARED_TIMEOUT_MS),
      tagTtlMs: positive(ro.tagTtlSeconds, 'redis.tagTtlSeconds', tagTtlMs / 1000) * 1000,
      specTtlMs: positive(ro.specTtlSeconds, 'redis.specTtlSeconds', specCacheTtlMs / 1000) * 1000,
      maxValueBytes:
        ro.maxValueBytes === undefined
          ? DEFAULT_SHARED_MAX_VALUE_BYTES
          : parseByteSize(ro.maxValueBytes, 'redis.maxValueBytes'),
    };
    if (redis.maxValueBytes < 1024) fail('redis.maxValueBytes', 'want at least 1KiB');
  }

  if (d.watchFiles !== undefined && typeof d.watchFiles !== 'boolean')
    fail('watchFiles', 'want true or false');

  return {
    listen,
    prefix,
    redis,
    tls,
    auth,
    hosted,
    specProviders: {
      remote,
      fixedFile: optPath(sp.fixedFile, 'specProviders.fixedFile'),
      store,
      cacheTtlMs: specCacheTtlMs,
      cacheEntries,
    },
    staticLayers,
    dockerAuth: optPath(d.dockerAuth, 'dockerAuth'),
    cache,
    platform,
    plainHttpHosts,
    caCerts,
    contentLayers: { redirect: cl.redirect === true },
    tagTtlMs,
    tagStaleIfErrorMs:
      d.tagStaleIfErrorSeconds === undefined
        ? DEFAULT_TAG_STALE_IF_ERROR_MS
        : nonNegative(d.tagStaleIfErrorSeconds, 'tagStaleIfErrorSeconds') * 1000,
    upstreamStallMs:
      positive(d.upstreamStallTimeoutSeconds, 'upstreamStallTimeoutSeconds', DEFAULT_STALL_MS / 1000) * 1000,
    connections,
    shutdownGraceMs: positive(d.shutdownGraceSeconds, 'shutdownGraceSeconds', 25) * 1000,
    prefetch,
    watchFiles: d.watchFiles !== false,
  };
}

export function parseFacadeConfig(text: string, base: string, where = 'facade config'): FacadeConfig {
  let doc: unknown;
  try {
    doc = parseYaml(text, { maxAliasCount: 100 });
  } catch (err) {
    throw invalidArgument(`${where}: ${messageOf(err)}`);
  }
  return facadeConfigFrom(doc, base);
}

export async function loadFacadeConfig(file: string): Promise<FacadeConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw invalidArgument(`facade config ${file}: ${messageOf(err)}`);
  }
  return parseFacadeConfig(text, dirname(resolve(file)), `facade config ${file}`);
}

/** Whether a host (`host` or `host:port`) is configured for plain HTTP. */
export function plainHttpAllowed(config: Pick<FacadeConfig, 'plainHttpHosts'>): (host: string) => boolean {
  const hosts = new Set(config.plainHttpHosts);
  return (host) => {
    const h = host.toLowerCase();
    if (hosts.has(h)) return true;
    const i = h.lastIndexOf(':');
    return i > 0 && !h.endsWith(']') && hosts.has(h.slice(0, i));
  };
}
