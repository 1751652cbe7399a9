// `strata daemon`: the containerd-compatible image store on a unix socket. Runs until SIGTERM or SIGINT,
// then stops gracefully (a second signal exits at once).
import type { Command } from 'commander';
import { pino } from 'pino';
import {
  type DaemonConfigInput,
  DEFAULT_ADDRESS,
  DEFAULT_ROOT,
  daemonConfig,
  loadDaemonConfigFile,
} from '../server/config.ts';
import { startDaemon } from '../server/lifecycle.ts';
import { traceToStderr } from '../server/trace-log.ts';
import { hiddenAlias } from './flag-names.ts';
import { tuneGcForStreaming } from './gc-tuning.ts';
import { runUntilSignalled, startFailed } from './until-signalled.ts';

interface DaemonFlags {
  config?: string;
  root?: string;
  address?: string;
  logLevel?: string;
  metrics?: string;
  snapshotter?: string;
}

/** The config file (when given) with the flags given on top. */
export async function daemonInputWithFlags(flags: DaemonFlags): Promise<DaemonConfigInput> {
  const input = flags.config ? await loadDaemonConfigFile(flags.config) : {};
  if (flags.root !== undefined) input.root = flags.root;
  if (flags.address !== undefined) input.address = flags.address;
  if (flags.logLevel !== undefined) input.logLevel = flags.logLevel;
  if (flags.metrics !== undefined) input.metricsAddress = flags.metrics;
  if (flags.snapshotter !== undefined) input.snapshotter = flags.snapshotter;
  return input;
}

export function registerDaemon(program: Command): void {
  const cmd = program
    .command('daemon')
    .description(
      'serve the containerd-compatible image store (Images, Content, Leases, Namespaces, …) over gRPC',
    )
    .option('--config <file>', 'YAML config file (flags override it)')
    .option('--root <dir>', `state directory: metadata database, content store (default ${DEFAULT_ROOT})`)
    .option('--address <socket>', `unix socket to listen on (default ${DEFAULT_ADDRESS})`)
    .option('--log-level <level>', 'fatal, error, warn, info (default), debug, trace or silent')
    .option('--metrics <host:port>', 'serve Prometheus metrics on http://HOST:PORT/metrics')
    .option(
      '--snapshotter <name>',
      'default snapshotter of namespaces: overlayfs (the default; needs a root that can do overlay) or native (copies, any file system)',
    );
  hiddenAlias(cmd, '--metrics-address <host:port>', 'metrics');
  cmd.action(async (flags: DaemonFlags) => {
    tuneGcForStreaming();
    traceToStderr();
    const logger = pino({ level: 'info', base: { pid: process.pid, service: 'daemon' } });
    let config: ReturnType<typeof daemonConfig>;
    try {
      config = daemonConfig(await daemonInputWithFlags(flags));
    } catch (err) {
      startFailed(logger, 'daemon', err, 2);
      return;
    }
    logger.level = config.logLevel;
    let daemon: Awaited<ReturnType<typeof startDaemon>>;
    try {
      daemon = await startDaemon(config, logger);
    } catch (err) {
      startFailed(logger, 'daemon', err);
      return;
    }
    await runUntilSignalled(logger, 'daemon', () => daemon.stop());
  });
}
