// Long-running commands (daemon, facade, spec serve) stop the same way: the first SIGTERM or SIGINT
// stops the service cleanly; a second one exits at once, for a stop that hangs.
import type { Logger } from 'pino';
import { messageOf } from '../errors.ts';

/** Resolves once `stop` has finished after a signal; a failed stop sets exit code 1. */
export function runUntilSignalled(logger: Logger, what: string, stop: () => Promise<void>): Promise<void> {
  return new Promise<void>((done) => {
    let signalled = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (signalled) {
        logger.warn({ signal }, 'second signal: exiting without a clean stop');
        process.exit(1);
      }
      signalled = true;
      logger.info({ signal }, `signal received, stopping the ${what}`);
      stop().then(done, (err: unknown) => {
        logger.error({ err: messageOf(err) }, `${what} stopped with an error`);
        process.exitCode = 1;
        done();
      });
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
