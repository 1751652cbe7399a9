// One name per thing across the strata commands: the table below is what src/cli/main.test.ts holds every
// command's options to. A name a command used before keeps working as a hidden alias.
import { type Command, InvalidArgumentError, Option } from 'commander';
import { LOG_LEVELS, type LogLevel } from '../server/config.ts';

/** The shared flags: the same name means the same thing, with the same kind of value, in every command. */
export const FLAG_NAMES: Readonly<Record<string, string>> = {
  '--config <file>': 'a YAML (or JSON) config file; flags given as well override it',
  '--root <dir>': "the service's state directory",
  '--listen <host:port>': 'the TCP address a service serves on',
  '--address <socket>': "the daemon's unix socket (serve on it, or talk to it)",
  '--metrics <host:port>': 'serve Prometheus metrics there on /metrics',
  '--log-level <level>': 'fatal, error, warn, info, debug, trace or silent',
  '--tls-cert <file>': 'PEM certificate to serve TLS with',
  '--tls-key <file>': "PEM private key of --tls-cert's certificate",
  '--tls-client-ca <file>': 'a TLS listener serves only clients showing a certificate this PEM CA signed',
  '--tls-ca <file>': "a client connects over TLS, trusting this PEM CA for the server's certificate",
  '--tls-client-cert <file>': 'a client connects over TLS, showing this PEM certificate (mutual TLS)',
  '--tls-client-key <file>': "PEM private key of --tls-client-cert's certificate",
  '--max-connections <n>': 'open connections a listener keeps in all',
  '--plain-http-host <host[:port]>': 'a registry reached over plain HTTP (repeatable)',
  '--plain-http': "the command's one registry is reached over plain HTTP",
  '--docker-auth <file>': 'docker config.json with registry credentials',
  '--spec-store <dir>': "Strata's own spec store directory",
  '--platform <platform>': 'os/arch[/variant]',
  '--snapshotter <name>': 'overlayfs or native',
  '-n, --namespace <ns>': 'daemon namespace',
};

/**
 * Flags whose name is shared but whose value differs by command, and why. `--address` is the address of
 * the server a client command talks to: the daemon's socket, or a gRPC service's host:port.
 */
export const SAME_NAME_OTHER_VALUE: Readonly<Record<string, readonly string[]>> = {
  '--address': ['--address <socket>', '--address <host:port>'],
};

/** Older names, each kept as a hidden alias of the current one. */
export const RETIRED_FLAGS: Readonly<Record<string, string>> = {
  '--metrics-address': '--metrics',
  '--state-dir': '--root',
  '--data-dir': '--spec-store',
  '--plain-http <host[:port]>': '--plain-http-host',
};

/**
 * Adds `flags` to `cmd` as a hidden older name of the option whose attribute is `target`: a value given
 * to it is given to `target` (appended when `target` collects a list).
 */
export function hiddenAlias<C extends Command>(cmd: C, flags: string, target: string, repeatable = false): C {
  const opt = new Option(flags, `older name of the option ${target}`).hideHelp();
  cmd.addOption(opt);
  cmd.on(`option:${opt.name()}`, (value: string) => {
    const prev = cmd.getOptionValue(target) as unknown;
    cmd.setOptionValue(target, repeatable ? [...(Array.isArray(prev) ? prev : []), value] : value);
  });
  return cmd;
}

/**
 * Parses `--log-level` for the commands that take it only as a flag (facade, builder, spec serve): a
 * level pino does not know is a usage error naming the levels, not a crash when the logger is made.
 */
export function parseLogLevel(value: string): LogLevel {
  const level = LOG_LEVELS.find((l) => l === value);
  if (level === undefined) throw new InvalidArgumentError(`Allowed levels are ${LOG_LEVELS.join(', ')}.`);
  return level;
}
