// `strata daemon`: the containerd-compatible image store on a unix socket. Runs until SIGTERM or SIGINT,
// then stops gracefully (a second signal exits at once).
import type { Command } from 'commander';
import { pino } from 'pino';
import { messageOf } from '../errors.ts';
import { DEFAULT_ADDRESS, DEFAULT_ROOT, daemonConfig } from '../server/config.ts';
import { startDaemon } from '../server/lifecycle.ts';
import { traceToStderr } from '../server/trace-log.ts';
import { tuneGcForStreaming } from './gc-tuning.ts';
import { runUntilSignalled } from './until-signalled.ts';

interface DaemonFlags {
  root: string;
  address?: string;
  logLevel: string;
  metricsAddress?: string;
}

export function registerDaemon(program: Command): void {
  program
    .command('daemon')
    .description(
      'serve the containerd-compatible image store (Images, Content, Leases, Namespaces, …) over gRPC',
    )
    .option('--root <dir>', 'state directory (metadata database, content store)', DEFAULT_ROOT)
    .option('--address <socket>', 'unix socket to listen on', DEFAULT_ADDRESS)
    .option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent', 'info')
    .option('--metrics-address <host:port>', 'serve Prometheus metrics on http://HOST:PORT/metrics')
    .option(
      '--snapshotter <name>',
      'default snapshotter of namespaces: overlayfs (needs a root that can do overlay) or native (copies, any file system)',
      'overlayfs',
    )
    .action(async (flags: DaemonFlags) => {
      tuneGcForStreaming();
      traceToStderr();
      const logger = pino({ level: 'info', base: { pid: process.pid } });
      let config: ReturnType<typeof daemonConfig>;
      try {
        config = daemonConfig(flags);
      } catch (err) {
        logger.fatal(messageOf(err));
        process.exitCode = 2;
        return;
      }
      logger.level = config.logLevel;
      let daemon: Awaited<ReturnType<typeof startDaemon>>;
      try {
        daemon = await startDaemon(config, logger);
      } catch (err) {
        logger.fatal({ err: messageOf(err) }, 'daemon failed to start');
        process.exitCode = 1;
        return;
      }
      await runUntilSignalled(logger, 'daemon', () => daemon.stop());
    });
}
