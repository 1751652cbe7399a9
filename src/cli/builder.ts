// `strata builder`: the builder.ImageBuilder gRPC service on buildah. Config file first, flags on top;
// JSON logs; graceful stop on SIGTERM/SIGINT (running builds are cancelled and their work removed).
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { pino } from 'pino';
import { invalidArgument } from '../errors.ts';
import { loadBuilderConfig, startBuilder } from '../server/builder.ts';
import { hiddenAlias, parseLogLevel } from './flag-names.ts';
import { runUntilSignalled, startFailed } from './until-signalled.ts';

interface BuilderFlags {
  listen?: string;
  baseRepo?: string;
  workspaceRepo?: string;
  config?: string;
  root?: string;
  dockerAuth?: string;
  plainHttpHost: string[];
  tlsCert?: string;
  tlsKey?: string;
  parallelism?: string;
  metrics?: string;
  storageDriver?: string;
  allowFileRemotes?: boolean;
  redis?: string;
  redisPasswordFile?: string;
  redisKeyPrefix?: string;
  logLevel: string;
}

const collect = (v: string, prev: string[]): string[] => [...prev, v];

/** The config file's keys that flags set, with paths made absolute from the working directory. */
export function builderFlagsAsConfig(flags: BuilderFlags): Record<string, unknown> {
  const o: Record<string, unknown> = { plainHttpHosts: flags.plainHttpHost };
  if (flags.listen) o.listen = flags.listen;
  if (flags.baseRepo) o.baseRepository = flags.baseRepo;
  if (flags.workspaceRepo) o.workspaceRepository = flags.workspaceRepo;
  if (flags.root) o.stateDir = resolve(flags.root);
  if (flags.dockerAuth) o.dockerAuth = resolve(flags.dockerAuth);
  if (flags.parallelism) o.parallelism = Number(flags.parallelism);
  if (flags.metrics) o.metrics = flags.metrics;
  if (flags.storageDriver) o.storageDriver = flags.storageDriver;
  if (flags.allowFileRemotes) o.allowFileRemotes = true;
  if (flags.redisPasswordFile && !flags.redis)
    throw invalidArgument('--redis-password-file goes with --redis');
  if (flags.redisKeyPrefix !== undefined && !flags.redis)
    throw invalidArgument('--redis-key-prefix goes with --redis');
  if (flags.redis) {
    o.redis =
      flags.redisPasswordFile || flags.redisKeyPrefix !== undefined
        ? {
            url: flags.redis,
            ...(flags.redisPasswordFile && { passwordFile: resolve(flags.redisPasswordFile) }),
            ...(flags.redisKeyPrefix !== undefined && { keyPrefix: flags.redisKeyPrefix }),
          }
        : flags.redis;
  }
  if (flags.tlsCert || flags.tlsKey) {
    if (!flags.tlsCert || !flags.tlsKey) throw invalidArgument('--tls-cert and --tls-key go together');
    o.tls = { cert: resolve(flags.tlsCert), key: resolve(flags.tlsKey) };
  }
  return o;
}

export function registerBuilder(program: Command): void {
  const cmd = program
    .command('builder')
    .description('serve builder.ImageBuilder: workspace images built with buildah, content-derived refs')
    .option('--listen <host:port>', 'gRPC address (default 127.0.0.1:8080)')
    .option('--base-repo <repo>', 'repository for built base images')
    .option('--workspace-repo <repo>', 'repository for workspace images')
    .option('--config <file>', 'YAML/JSON config file (flags override it)')
    .option(
      '--root <dir>',
      'state directory: logs, build history, layer cache (default /var/lib/strata/builder)',
    )
    .option('--docker-auth <file>', "docker config.json with the installation's registry credentials")
    .option('--plain-http-host <host[:port]>', 'registry reached over plain HTTP (repeatable)', collect, [])
    .option('--parallelism <n>', 'builds run at once; more wait in a queue (default 2)')
    .option('--metrics <host:port>', 'serve Prometheus metrics on /metrics')
    .option('--storage-driver <name>', 'buildah storage driver: overlay (default) or vfs')
    .option('--allow-file-remotes', 'accept file:// git remotes (they read this machine)')
    .option(
      '--redis <url>',
      "Redis shared by builder replicas: each build runs once among them (the config's other redis keys stay)",
    )
    .option('--redis-password-file <file>', "file holding Redis's password (not in the URL, so not in ps)")
    .option('--redis-key-prefix <prefix>', "prefix of the builder's Redis keys (default strata:builder:)")
    .option('--tls-cert <file>', 'serve gRPC over TLS with this PEM certificate')
    .option('--tls-key <file>', "the certificate's PEM private key")
    .option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent', parseLogLevel, 'info');
  hiddenAlias(cmd, '--state-dir <dir>', 'root');
  hiddenAlias(cmd, '--plain-http <host[:port]>', 'plainHttpHost', true);
  cmd.action(async (flags: BuilderFlags) => {
    const logger = pino({ level: flags.logLevel, base: { pid: process.pid, service: 'builder' } });
    let running: Awaited<ReturnType<typeof startBuilder>>;
    try {
      running = await startBuilder(
        await loadBuilderConfig(flags.config, builderFlagsAsConfig(flags)),
        logger,
      );
    } catch (err) {
      startFailed(logger, 'builder', err);
      return;
    }
    await runUntilSignalled(logger, 'builder', () => running.close());
    logger.info('builder stopped');
  });
}
