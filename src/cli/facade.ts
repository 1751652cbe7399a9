// `strata facade`: the registry facade. Config file first, flags on top; JSON logs (one line per request
// with request id, spec id, source, bytes and duration); SIGHUP reloads the watched files; graceful stop on
// SIGTERM/SIGINT (a second signal exits at once).

import { flushCompileCache } from 'node:module';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { pino } from 'pino';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { invalidArgument } from '../errors.ts';
import { normalizePrefix } from '../facade/http/route.ts';
import { parsePlatform } from '../oci/platform.ts';
import { startFacade } from '../server/facade.ts';
import {
  type FacadeConfig,
  facadeConfigFrom,
  loadFacadeConfig,
  parseByteSize,
  parseCount,
  parseListen,
  parseSeconds,
} from '../server/facade-config.ts';
import { hiddenAlias, parseLogLevel } from './flag-names.ts';
import { tuneGcForStreaming } from './gc-tuning.ts';
import { runUntilSignalled, StartupHup, startFailed } from './until-signalled.ts';

interface FacadeFlags {
  listen?: string;
  config?: string;
  prefix?: string;
  cacheDir?: string;
  cacheMax?: string;
  fixedSpecs?: string;
  specStore?: string;
  specProvider: string[];
  platform?: string;
  plainHttpHost: string[];
  tlsCert?: string;
  tlsKey?: string;
  dockerAuth?: string;
  contentRedirect?: boolean;
  upstreamStallTimeout?: string;
  maxConnections?: string;
  maxConnectionsPerClient?: string;
  htpasswd?: string;
  shutdownGrace?: string;
  /** false with --no-prefetch. */
  prefetch?: boolean;
  logLevel: string;
}

const collect = (v: string, prev: string[]): string[] => [...prev, v];

/** The config file (or defaults) with the flags applied over it. */
export async function facadeConfigWithFlags(flags: FacadeFlags): Promise<FacadeConfig> {
  const c = flags.config ? await loadFacadeConfig(flags.config) : facadeConfigFrom({}, process.cwd());
  if (flags.listen) c.listen = parseListen(flags.listen, '--listen');
  if (flags.prefix !== undefined) c.prefix = normalizePrefix(flags.prefix);
  if (flags.cacheDir) c.cache.dir = resolve(flags.cacheDir);
  if (flags.cacheMax) c.cache.maxBytes = parseByteSize(flags.cacheMax, '--cache-max');
  if (flags.fixedSpecs) c.specProviders.fixedFile = resolve(flags.fixedSpecs);
  if (flags.specStore) c.specProviders.store = { ...c.specProviders.store, dir: resolve(flags.specStore) };
  for (const address of flags.specProvider) c.specProviders.remote.push({ address, timeoutMs: 5000 });
  if (flags.platform) c.platform = parsePlatform(flags.platform);
  c.plainHttpHosts.push(...flags.plainHttpHost.map((h) => h.toLowerCase()));
  if ((flags.tlsCert === undefined) !== (flags.tlsKey === undefined))
    throw invalidArgument('--tls-cert and --tls-key go together');
  if (flags.tlsCert && flags.tlsKey) c.tls = { cert: resolve(flags.tlsCert), key: resolve(flags.tlsKey) };
  if (flags.dockerAuth) c.dockerAuth = resolve(flags.dockerAuth);
  if (flags.contentRedirect) c.contentLayers.redirect = true;
  if (flags.upstreamStallTimeout !== undefined)
    c.upstreamStallMs = parseSeconds(flags.upstreamStallTimeout, '--upstream-stall-timeout');
  if (flags.maxConnections !== undefined)
    c.connections.max = parseCount(flags.maxConnections, '--max-connections');
  if (flags.maxConnectionsPerClient !== undefined)
    c.connections.perClient = parseCount(flags.maxConnectionsPerClient, '--max-connections-per-client');
  if (flags.shutdownGrace !== undefined)
    c.shutdownGraceMs = parseSeconds(flags.shutdownGrace, '--shutdown-grace');
  if (flags.prefetch === false) c.prefetch.enabled = false;
  if (flags.htpasswd) {
    c.auth = {
      basicRealm: 'strata facade',
      basicCacheMs: 60_000,
      ...c.auth,
      htpasswd: resolve(flags.htpasswd),
    };
  }
  return c;
}

export function registerFacade(program: Command): void {
  const cmd = program
    .command('facade')
    .description('serve images composed from specs over the OCI distribution API (pull only)')
    .option('--listen <host:port>', 'address to serve on (default 127.0.0.1:5050)')
    .option('--config <file>', 'YAML config file (flags override it)')
    .option('--prefix <prefix>', 'repository-name prefix before remote/<id> and fixed/<name>')
    .option('--cache-dir <dir>', 'disk blob cache directory')
    .option('--cache-max <size>', 'byte cap of the blob cache, e.g. 10GiB')
    .option('--fixed-specs <file>', 'YAML/JSON map of name to spec, served as fixed/<name>')
    .option('--spec-store <dir>', "Strata's own spec store (see strata spec), served as remote/<id>")
    .option(
      '--spec-provider <host:port>',
      'remote registryfacade.SpecProvider, tried in order (repeatable)',
      collect,
      [],
    )
    .option('--platform <platform>', 'platform picked from multi-platform images (default linux/amd64)')
    .option(
      '--plain-http-host <host[:port]>',
      'registry or content-layer host reached over plain HTTP (repeatable)',
      collect,
      [],
    )
    .option('--docker-auth <file>', 'docker config.json with registry credentials (re-read on change)')
    .option('--content-redirect', 'redirect clients to remote content-layer URLs instead of proxying them')
    .option(
      '--upstream-stall-timeout <seconds>',
      'fail a blob fetch whose registry or content-layer host sends nothing for this long (default 20)',
    )
    .option(
      '--max-connections <n>',
      'open client connections in all (default: half the open-file limit, less a reserve; at most 16384)',
    )
    .option('--max-connections-per-client <n>', 'open connections from one client address (default max/8)')
    .option(
      '--htpasswd <file>',
      'require Basic credentials from this htpasswd file (bcrypt; reloaded on change)',
    )
    .option('--no-prefetch', 'do not prefetch the blobs of specs put in the spec store')
    .option(
      '--shutdown-grace <seconds>',
      'on SIGTERM, how long requests in flight get to finish (default 25)',
    )
    .option('--tls-cert <file>', 'serve HTTPS with this PEM certificate (reloaded on change)')
    .option('--tls-key <file>', "the certificate's PEM private key")
    .option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent', parseLogLevel, 'info');
  hiddenAlias(cmd, '--plain-http <host[:port]>', 'plainHttpHost', true);
  cmd.action(async (flags: FacadeFlags) => {
    const startupHup = new StartupHup();
    const logger = pino({ level: flags.logLevel, base: { pid: process.pid, service: 'facade' } });
    let app: Awaited<ReturnType<typeof startFacade>>;
    try {
      const config = await facadeConfigWithFlags(flags);
      // Hosted repositories take pushes: bulk bytes in, as into the daemon (bench/hosted-push-pull).
      if (config.hosted) tuneGcForStreaming();
      // The process's own figures (memory, CPU, event-loop lag, GC) beside the facade's, as the daemon has.
      const registry = new Registry();
      collectDefaultMetrics({ register: registry, prefix: 'strata_' });
      app = await startFacade(config, { logger, registry });
    } catch (err) {
      startFailed(logger, 'facade', err);
      startupHup.take();
      return;
    }
    // Node writes its compile cache only at a clean exit: after a facade that was killed (SIGKILL, the OOM
    // killer, a crash), the next start would strip types and compile every module again. Written now, before
    // the first request is read.
    flushCompileCache();
    // SIGHUP re-reads the watched files at once (they are also reloaded when they change).
    await runUntilSignalled(
      logger,
      'facade',
      () => app.close(),
      () => app.reload(),
      startupHup,
    );
    logger.info('facade stopped');
  });
}
