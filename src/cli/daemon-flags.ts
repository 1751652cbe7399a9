// The flags every daemon-facing command takes, and running a command against a connected client.
import { DEFAULT_NAMESPACE, GrpcDaemonApi } from '../client/grpc-daemon-api.ts';
import { DEFAULT_ADDRESS } from '../server/config.ts';
import { wasInterrupted } from './interrupt.ts';

/** Flags every daemon-facing command takes. */
export interface DaemonFlags {
  address: string;
  namespace: string;
}

/** Adds `--address` and `--namespace` (defaults from STRATA_ADDRESS / STRATA_NAMESPACE) to a command. */
export function withDaemonFlags<C extends { option(flags: string, description: string, value?: string): C }>(
  cmd: C,
): C {
  return cmd
    .option('--address <socket>', 'daemon socket', process.env.STRATA_ADDRESS || DEFAULT_ADDRESS)
    .option('-n, --namespace <ns>', 'namespace', process.env.STRATA_NAMESPACE || DEFAULT_NAMESPACE);
}

/** Runs `fn` with a connected client, closed afterwards; errors print as `strata <what>: …` and exit 1. */
export async function withDaemon(
  what: string,
  flags: DaemonFlags,
  fn: (api: GrpcDaemonApi) => Promise<void>,
): Promise<void> {
  let api: GrpcDaemonApi | undefined;
  try {
    api = GrpcDaemonApi.connect(flags.address, flags.namespace);
    await fn(api);
  } catch (err) {
    process.stderr.write(`strata ${what}: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = wasInterrupted() ? 130 : 1;
  } finally {
    api?.close();
  }
}
