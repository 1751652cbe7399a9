// `strata facade` as the integration tests run it: a child process on a config file, ready once /readyz
// answers 200, its output in a log file.
import { type ServerProcess, spawnServer } from './process.ts';

const STRATA = new URL('../../bin/strata', import.meta.url).pathname;

export interface FacadeSpawnOptions {
  /** The config file. */
  config: string;
  /** The facade's base URL (its `listen` address). */
  url: string;
  logFile: string;
  /** --log-level, when not the default. */
  logLevel?: string;
  /** The `strata` to run (default: this checkout's bin/strata). */
  strata?: string;
  /** How long to wait for readiness (spawnServer's default when not given). */
  timeoutMs?: number;
}

export function spawnFacade(o: FacadeSpawnOptions): Promise<ServerProcess> {
  const args = ['facade', '--config', o.config, ...(o.logLevel ? ['--log-level', o.logLevel] : [])];
  return spawnServer(o.strata ?? STRATA, args, {
    name: 'strata facade',
    logFile: o.logFile,
    readyCheck: async () => (await fetch(`${o.url}/readyz`)).status === 200,
    ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
  });
}
