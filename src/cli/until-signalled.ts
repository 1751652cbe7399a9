// Long-running commands (daemon, facade, builder, up, spec serve) start and stop the same way: a start
// that fails says why in the log and on stderr; the first SIGTERM or SIGINT stops the service cleanly; a
// second one exits at once, for a stop that hangs. Those with files to reload (facade, up, spec serve with
// TLS) do so on SIGHUP, whose default action would otherwise end the process uncleanly, also while they
// start.
import type { Logger } from 'pino';
import { messageOf } from '../errors.ts';

/**
 * A service that could not start (a port in use, a bad config, a socket it cannot make): the reason as a
 * fatal log line for whatever collects the logs, as one readable line on stderr for whoever ran the
 * command (the daemon, facade and builder log JSON to stdout, where a person reading a terminal would
 * not look for it), and a non-zero exit status (2 for a config refused before anything started).
 */
export function startFailed(logger: Logger, command: string, err: unknown, exitCode = 1): void {
  const reason = messageOf(err);
  logger.fatal({ err: reason }, `${command} failed to start`);
  process.stderr.write(`strata ${command}: ${reason}\n`);
  process.exitCode = exitCode;
}

/**
 * Catches SIGHUP while a service starts (a config manager reloading as it comes up), which would otherwise
 * end the process; runUntilSignalled then reloads once for what came meanwhile.
 */
export class StartupHup {
  private seen = false;
  private readonly onHup = () => {
    this.seen = true;
  };

  constructor() {
    process.on('SIGHUP', this.onHup);
  }

  /** Stops catching; whether a SIGHUP came meanwhile. */
  take(): boolean {
    process.off('SIGHUP', this.onHup);
    return this.seen;
  }
}

/**
 * Resolves once `stop` has finished after a signal; a failed stop sets exit code 1. `startup` hands over
 * a SIGHUP caught while the service started.
 */
export function runUntilSignalled(
  logger: Logger,
  what: string,
  stop: () => Promise<void>,
  reload?: () => Promise<void>,
  startup?: StartupHup,
): Promise<void> {
  return new Promise<void>((done) => {
    let signalled = false;
    const onHup = () => {
      logger.info('SIGHUP: reloading');
      reload?.().catch((err: unknown) => logger.error({ err: messageOf(err) }, 'reload failed'));
    };
    const onSignal = (signal: NodeJS.Signals) => {
      if (signalled) {
        logger.warn({ signal }, 'second signal: exiting without a clean stop');
        process.exit(1);
      }
      signalled = true;
      logger.info({ signal }, `signal received, stopping the ${what}`);
      const finished = () => {
        if (reload) process.off('SIGHUP', onHup);
        done();
      };
      stop().then(finished, (err: unknown) => {
        logger.error({ err: messageOf(err) }, `${what} stopped with an error`);
        process.exitCode = 1;
        finished();
      });
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    if (reload) process.on('SIGHUP', onHup);
    // After the handler above is on, so no SIGHUP finds the process without one.
    if (startup?.take() && reload) onHup();
  });
}
