// `strata up`'s configuration: one YAML file with a section per part, each read by that part's own parser
// (the daemon's daemonConfig, the facade's facadeConfigFrom, the builder's builderConfigFrom), plus what
// only the whole has: the state root, the spec store's SpecProvider address, and the one metrics and
// readiness address. Unknown keys are refused in every section; relative paths are relative to the file.
// What `up` wires itself (hosted repositories on the daemon's store, the spec store as the `remote`
// provider) cannot be set in the registry section.
import { readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { GrpcConnectionLimits } from '../api/grpc/server.ts';
import { invalidArgument, messageOf } from '../errors.ts';
import type { TlsFiles } from '../facade/http/tls-files.ts';
import { parseHostPort } from '../host-port.ts';
import { type BuilderConfig, builderConfigFrom } from './builder.ts';
import {
  DAEMON_KEYS,
  type DaemonConfig,
  type DaemonConfigInput,
  DEFAULT_ADDRESS,
  DEFAULT_ROOT,
  daemonConfig,
  type GcConfig,
  gcNumbers,
  socketFile,
} from './config.ts';
import type { KeyTree } from './config-keys.ts';
import {
  type FacadeConfig,
  facadeConfigFrom,
  GRPC_CONNECTION_KEYS,
  grpcConnectionsFrom,
  LISTENER_TLS_KEYS,
  listenerTlsFilesFrom,
} from './facade-config.ts';

/** Where each part listens unless told otherwise. */
export const UP_DEFAULTS = {
  registry: '127.0.0.1:5000',
  specs: '127.0.0.1:5051',
  builder: '127.0.0.1:8080',
  metrics: '127.0.0.1:9500',
} as const;

export interface UpConfig {
  root: string;
  logLevel: DaemonConfig['logLevel'];
  /** The daemon, with no metrics address of its own (the whole has one). */
  daemon: DaemonConfig;
  /** The registry surface: the facade's configuration, without `hosted` (given the daemon's parts). */
  registry: FacadeConfig;
  /**
   * Strata's own spec store (the facade's `remote` provider) and its SpecProvider server; with `writable`,
   * that server also takes puts and removals (strata.specstore.v1.SpecStore); with `tls`, over (mutual) TLS.
   */
  specs: {
    dir: string;
    listen: { host: string; port: number };
    writable: boolean;
    tls?: TlsFiles;
    connections?: GrpcConnectionLimits;
  };
  /**
   * The builder; an empty base or workspace repository is filled in once the registry listens (a
   * repository on it), and that registry is reached over plain HTTP.
   */
  builder: BuilderConfig;
  /** `/metrics`, `/readyz` and `/healthz` for the whole process. */
  metrics: { host: string; port: number };
}

/** Flags of `strata up`, named as the other commands name the same things. */
export interface UpFlags {
  root?: string;
  address?: string;
  listen?: string;
  metrics?: string;
  snapshotter?: string;
  logLevel?: string;
}

type Obj = Record<string, unknown>;

/**
 * The keys of `strata up`'s own sections (docs/configuration.md is tested against it); `registry` and
 * `builder` hold the facade's and the builder's keys, checked by their parsers.
 */
export const UP_KEYS = {
  root: null,
  logLevel: null,
  metrics: null,
  daemon: { address: null, snapshotter: null, gc: DAEMON_KEYS.gc },
  registry: null,
  specs: {
    dir: null,
    listen: null,
    writable: null,
    tls: LISTENER_TLS_KEYS,
    connections: GRPC_CONNECTION_KEYS,
  },
  builder: null,
} as const satisfies KeyTree;
const TOP_KEYS = Object.keys(UP_KEYS);
const GC_KEYS = Object.keys(UP_KEYS.daemon.gc) as (keyof GcConfig)[];

function fail(where: string, what: string): never {
  throw invalidArgument(`up config: ${where}: ${what}`);
}

function section(v: unknown, where: string): Obj {
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v)) fail(where, 'want a map');
  return v as Obj;
}

function checkKeys(o: Obj, allowed: readonly string[], where: string): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k))
      fail(where === '' ? k : `${where}.${k}`, `unknown key (expected one of ${allowed.join(', ')})`);
  }
}

function optString(v: unknown, where: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string' || v === '') fail(where, `want a non-empty string, got ${JSON.stringify(v)}`);
  return v;
}

/** `host:port`, `[v6]:port` or `:port` (every interface). */
function listenAt(v: string, where: string): { host: string; port: number } {
  return (
    parseHostPort(v, '0.0.0.0') ?? fail(where, `want host:port (port 0-65535), got ${JSON.stringify(v)}`)
  );
}

/** Runs a part's own parser, naming the section in what it refuses. */
function inSection<T>(name: string, parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    throw invalidArgument(`up config: ${name}: ${messageOf(err)}`, { cause: err });
  }
}

/** Validates a parsed document with the flags on top; `base` is where relative paths start. */
export function upConfigFrom(doc: unknown, base: string, flags: UpFlags = {}): UpConfig {
  const d = section(doc, '(top level)');
  checkKeys(d, TOP_KEYS, '');
  const path = (v: string) => resolve(base, v);
  const rootText = flags.root ?? optString(d.root, 'root');
  if (rootText === '') fail('root', 'must not be empty');
  const root = flags.root !== undefined ? resolve(flags.root) : rootText ? path(rootText) : DEFAULT_ROOT;

  const ds = section(d.daemon, 'daemon');
  checkKeys(ds, Object.keys(UP_KEYS.daemon), 'daemon');
  const gcIn = section(ds.gc, 'daemon.gc');
  checkKeys(gcIn, GC_KEYS, 'daemon.gc');
  const gc = gcNumbers(gcIn, (k, what) => fail(`daemon.gc.${k}`, what));
  // The file's address is read (and checked) only when no flag overrides it.
  const written = flags.address === undefined ? optString(ds.address, 'daemon.address') : undefined;
  const address = flags.address ?? (written && socketFile(written));
  const input: DaemonConfigInput = {
    root,
    address: address === undefined ? DEFAULT_ADDRESS : flags.address ? address : path(address),
    gc,
  };
  const logLevel = flags.logLevel ?? optString(d.logLevel, 'logLevel');
  if (logLevel !== undefined) input.logLevel = logLevel;
  const snapshotter = flags.snapshotter ?? optString(ds.snapshotter, 'daemon.snapshotter');
  if (snapshotter !== undefined) input.snapshotter = snapshotter;
  const daemon = inSection('daemon', () => daemonConfig(input));

  const rs = section(d.registry, 'registry');
  if (rs.hosted !== undefined)
    fail('registry.hosted', 'strata up serves hosted repositories on its own root');
  const rc = section(rs.cache, 'registry.cache');
  if (rc.dir !== undefined)
    fail('registry.cache.dir', "strata up keeps the facade's blob cache in the daemon's content store");
  // The builder signs in with Basic credentials, and the challenge a client follows is the first one
  // sent: with Bearer tokens on, buildah would ask the token server for a user it does not know.
  if (section(rs.auth, 'registry.auth').token !== undefined)
    fail(
      'registry.auth.token',
      'strata up authenticates clients with auth.htpasswd only (its builder signs in with Basic credentials)',
    );
  const sp = section(rs.specProviders, 'registry.specProviders');
  if (sp.store !== undefined)
    fail('registry.specProviders.store', 'strata up keeps its spec store in `specs`');
  const registry = inSection('registry', () =>
    facadeConfigFrom(
      {
        ...rs,
        listen: flags.listen ?? rs.listen ?? UP_DEFAULTS.registry,
        // Not opened: startUp gives the facade's cache the daemon's content store (cache.maxBytes applies).
        cache: { dir: join(root, 'facade-cache'), ...rc },
      },
      base,
    ),
  );

  const ss = section(d.specs, 'specs');
  checkKeys(ss, Object.keys(UP_KEYS.specs), 'specs');
  const specsDir = optString(ss.dir, 'specs.dir');
  if (ss.writable !== undefined && ss.writable !== null && typeof ss.writable !== 'boolean') {
    fail('specs.writable', 'want true or false');
  }
  const specs: UpConfig['specs'] = {
    dir: specsDir === undefined ? join(root, 'specs') : path(specsDir),
    listen: listenAt(optString(ss.listen, 'specs.listen') ?? UP_DEFAULTS.specs, 'specs.listen'),
    writable: ss.writable === true,
  };
  if (ss.tls !== undefined && ss.tls !== null) {
    const file = (v: unknown, where: string) => path(optString(v, where) ?? fail(where, 'required'));
    specs.tls = listenerTlsFilesFrom(ss.tls, 'specs.tls', file, fail);
  }
  if (ss.connections !== undefined && ss.connections !== null)
    specs.connections = grpcConnectionsFrom(ss.connections, 'specs.connections', fail);
  registry.specProviders.store = { ...specs };

  const bs = section(d.builder, 'builder');
  const builder = inSection('builder', () =>
    // file:// remotes on: one machine, and the README's walkthrough builds a repository on it.
    builderConfigFrom(
      { listen: UP_DEFAULTS.builder, stateDir: join(root, 'builder'), allowFileRemotes: true, ...bs },
      base,
    ),
  );
  if (builder.metrics) fail('builder.metrics', 'strata up serves the metrics of every part at `metrics`');

  const metrics = listenAt(
    flags.metrics ?? optString(d.metrics, 'metrics') ?? UP_DEFAULTS.metrics,
    flags.metrics !== undefined ? '--metrics' : 'metrics',
  );
  return { root, logLevel: daemon.logLevel, daemon, registry, specs, builder, metrics };
}

/** The config file (when given) with the flags on top. */
export async function loadUpConfig(file: string | undefined, flags: UpFlags = {}): Promise<UpConfig> {
  if (!file) return upConfigFrom({}, process.cwd(), flags);
  let doc: unknown;
  try {
    doc = parseYaml(await readFile(file, 'utf8'), { maxAliasCount: 100 });
  } catch (err) {
    throw invalidArgument(`up config ${file}: ${messageOf(err)}`);
  }
  return upConfigFrom(doc, dirname(resolve(file)), flags);
}
