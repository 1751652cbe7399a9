// The daemon's configuration: where its state lives, where it listens, how it logs and collects garbage.
// Validated once, up front, so a bad flag fails before anything is opened.
import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { invalidArgument, messageOf } from '../errors.ts';
import { parseHostPort } from '../host-port.ts';
import { type KeyTree, unknownKeys } from './config-keys.ts';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** sun_path holds 108 bytes on Linux, one of them the terminating NUL. */
export const MAX_SOCKET_PATH_BYTES = 107;

export interface GcConfig {
  /** Wait after a deletion before a background collection. */
  delayMs: number;
  /** Share of wall time background collection may take. */
  pauseThreshold: number;
  /** Longest wait the pacing may impose. */
  maxDelayMs: number;
}

export interface DaemonConfig {
  /** State directory: meta.db, content/, server-uuid. */
  root: string;
  /** Absolute path of the unix socket to serve gRPC on. */
  address: string;
  logLevel: LogLevel;
  /** Prometheus endpoint (`/metrics`), off unless set. */
  metrics?: { host: string; port: number };
  gc: GcConfig;
  /** The namespaces' default snapshotter; when it is `overlayfs`, a root that cannot do overlay is fatal. */
  snapshotter: SnapshotterName;
}

/** The snapshotters the daemon serves, the first being the default, as in containerd. */
export const SNAPSHOTTERS = ['overlayfs', 'native'] as const;
export type SnapshotterName = (typeof SNAPSHOTTERS)[number];

export interface DaemonConfigInput {
  root?: string;
  address?: string;
  logLevel?: string;
  /** `HOST:PORT` or `[V6HOST]:PORT`. */
  metricsAddress?: string;
  gc?: Partial<GcConfig>;
  snapshotter?: string;
}

export const DEFAULT_GC: GcConfig = { delayMs: 100, pauseThreshold: 0.02, maxDelayMs: 5000 };

function hostPort(value: string, what: string): { host: string; port: number } {
  const address = parseHostPort(value);
  if (!address) throw invalidArgument(`${what} must be HOST:PORT, got ${JSON.stringify(value)}`);
  return address;
}

/** Where the daemon keeps its state and listens unless told otherwise, as containerd's defaults do. */
export const DEFAULT_ROOT = '/var/lib/strata';
export const DEFAULT_ADDRESS = '/run/strata/strata.sock';

/** Relative paths are taken from the current directory. */
export function daemonConfig(input: DaemonConfigInput): DaemonConfig {
  if (input.root === '') throw invalidArgument('--root must not be empty');
  const root = resolve(input.root ?? DEFAULT_ROOT);
  const address = resolve(socketFile(input.address ?? DEFAULT_ADDRESS));
  if (!isAbsolute(address)) throw invalidArgument(`socket path must be absolute: ${address}`);
  const bytes = Buffer.byteLength(address);
  if (bytes > MAX_SOCKET_PATH_BYTES) {
    throw invalidArgument(
      `socket path is ${bytes} bytes, longer than the ${MAX_SOCKET_PATH_BYTES} a unix socket allows: ${address}`,
    );
  }
  const logLevel = (input.logLevel ?? 'info') as LogLevel;
  if (!LOG_LEVELS.includes(logLevel)) {
    throw invalidArgument(
      `log level must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(input.logLevel)}`,
    );
  }
  const gc = { ...DEFAULT_GC, ...input.gc };
  if (
    !(gc.delayMs >= 0) ||
    !(gc.maxDelayMs >= gc.delayMs) ||
    !(gc.pauseThreshold > 0 && gc.pauseThreshold <= 1)
  ) {
    throw invalidArgument(`invalid garbage collection settings ${JSON.stringify(gc)}`);
  }
  const snapshotter = (input.snapshotter ?? SNAPSHOTTERS[0]) as SnapshotterName;
  if (!SNAPSHOTTERS.includes(snapshotter)) {
    throw invalidArgument(
      `snapshotter must be one of ${SNAPSHOTTERS.join(', ')}, got ${JSON.stringify(input.snapshotter)}`,
    );
  }
  return {
    root,
    address,
    logLevel,
    snapshotter,
    ...(input.metricsAddress !== undefined && {
      metrics: hostPort(input.metricsAddress, '--metrics'),
    }),
    gc,
  };
}

/** Every key the daemon's config file accepts (docs/configuration.md is tested against it). */
export const DAEMON_KEYS = {
  root: null,
  address: null,
  logLevel: null,
  metrics: null,
  snapshotter: null,
  gc: { delayMs: null, pauseThreshold: null, maxDelayMs: null },
} as const satisfies KeyTree;

/** A socket address as a config or flag writes it: `unix://` comes off, before a relative path is resolved. */
export function socketFile(address: string): string {
  return address.replace(/^unix:\/\//, '');
}

/** The numbers of a gc section (the daemon's config file and `strata up`'s check them alike). */
export function gcNumbers(
  section: Record<string, unknown>,
  fail: (key: string, what: string) => never,
): Partial<GcConfig> {
  const gc: Partial<GcConfig> = {};
  for (const k of Object.keys(DAEMON_KEYS.gc) as (keyof GcConfig)[]) {
    const v = section[k];
    if (v === undefined || v === null) continue;
    if (typeof v !== 'number' || !Number.isFinite(v)) fail(k, `want a number, got ${JSON.stringify(v)}`);
    gc[k] = v;
  }
  return gc;
}

function configFail(where: string, what: string): never {
  throw invalidArgument(`daemon config: ${where}: ${what}`);
}

/** A parsed config document as daemonConfig's input; relative paths are taken from `base`. */
export function daemonConfigInputFrom(doc: unknown, base: string): DaemonConfigInput {
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) configFail('(top level)', 'want a map');
  const d = doc as Record<string, unknown>;
  for (const k of unknownKeys(d, DAEMON_KEYS))
    configFail(k, `unknown key (expected one of ${Object.keys(DAEMON_KEYS).join(', ')})`);
  const text = (k: string): string | undefined => {
    const v = d[k];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string' || v === '') configFail(k, `want a non-empty string, got ${JSON.stringify(v)}`);
    return v;
  };
  const input: DaemonConfigInput = {};
  const root = text('root');
  if (root !== undefined) input.root = resolve(base, root);
  const address = text('address');
  if (address !== undefined) input.address = resolve(base, socketFile(address));
  const logLevel = text('logLevel');
  if (logLevel !== undefined) input.logLevel = logLevel;
  const metrics = text('metrics');
  if (metrics !== undefined) input.metricsAddress = metrics;
  const snapshotter = text('snapshotter');
  if (snapshotter !== undefined) input.snapshotter = snapshotter;
  if (d.gc !== undefined && d.gc !== null) {
    if (typeof d.gc !== 'object' || Array.isArray(d.gc)) configFail('gc', 'want a map');
    const g = d.gc as Record<string, unknown>;
    for (const k of unknownKeys(g, DAEMON_KEYS.gc)) configFail(`gc.${k}`, 'unknown key');
    input.gc = gcNumbers(g, (k, what) => configFail(`gc.${k}`, what));
  }
  return input;
}

/** The daemon's config file (YAML or JSON) as daemonConfig's input. */
export async function loadDaemonConfigFile(file: string): Promise<DaemonConfigInput> {
  let doc: unknown;
  try {
    // Loaded here, not at the top: commands that only need this module's defaults (`strata spec put`)
    // start without the YAML parser's ~70 modules.
    const { parse: parseYaml } = await import('yaml');
    doc = parseYaml(await readFile(file, 'utf8'), { maxAliasCount: 100 });
  } catch (err) {
    throw invalidArgument(`daemon config ${file}: ${messageOf(err)}`);
  }
  return daemonConfigInputFrom(doc, dirname(resolve(file)));
}
