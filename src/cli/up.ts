// `strata up`: the daemon, the registry (hosted repositories and composed images), the spec store's
// SpecProvider and the builder in one process. Prints where each part listens and a line to try on stdout;
// JSON logs go to stderr. Stops cleanly on SIGTERM/SIGINT (a second signal exits at once); SIGHUP reloads.
import type { Command } from 'commander';
import { pino } from 'pino';
import { DEFAULT_ADDRESS, DEFAULT_ROOT } from '../server/config.ts';
import { startUp, type UpApp } from '../server/up.ts';
import { loadUpConfig, UP_DEFAULTS, type UpFlags } from '../server/up-config.ts';
import { hiddenAlias } from './flag-names.ts';
import { tuneGcForStreaming } from './gc-tuning.ts';
import { runUntilSignalled, StartupHup, startFailed } from './until-signalled.ts';

interface Flags extends UpFlags {
  config?: string;
}

/** What `strata up` prints once every part is up. */
export function upSummary(app: UpApp): string {
  const sock = app.socket;
  const lines = [
    `strata up: running, state in ${app.root}`,
    `  daemon        unix://${sock}   (ctr --address ${sock} …, strata … --address ${sock})`,
    `  registry      ${app.registryUrl}   (push anything; composed images at ${app.registryHost}/remote/<spec id>)`,
    app.specsWritable
      ? `  spec provider ${app.specProvider}   (registryfacade.SpecProvider, writable; strata spec put <id> --address ${app.specProvider})`
      : `  spec provider ${app.specProvider}   (registryfacade.SpecProvider; strata spec put <id> --spec-store ${app.specsDir})`,
    `  builder       ${app.builder}   (builder.ImageBuilder; pushes to ${app.baseRepository}, ${app.workspaceRepository})`,
    `  metrics       ${app.opsUrl}/metrics   (readiness ${app.opsUrl}/readyz)`,
    'try:',
    `  skopeo copy --dest-tls-verify=false${app.authenticated ? ' --dest-creds USER:PASSWORD' : ''} oci:DIR docker://${app.registryHost}/apps/app:latest && \\`,
    `    ctr --address ${sock} images pull --plain-http${app.authenticated ? ' --user USER:PASSWORD' : ''} ${app.registryHost}/apps/app:latest`,
  ];
  return `${lines.join('\n')}\n`;
}

export function registerUp(program: Command): void {
  const cmd = program
    .command('up')
    .description(
      'run the whole system in one process: daemon, registry with hosted repositories, spec store and builder',
    )
    .option('--root <dir>', `state directory of every part (default ${DEFAULT_ROOT})`)
    .option('--config <file>', 'YAML config file, a section per part (flags override it)')
    .option('--address <socket>', `the daemon's unix socket (default ${DEFAULT_ADDRESS})`)
    .option('--listen <host:port>', `the registry's address (default ${UP_DEFAULTS.registry})`)
    .option(
      '--metrics <host:port>',
      `serve Prometheus metrics, /readyz and /healthz for the whole (default ${UP_DEFAULTS.metrics})`,
    )
    .option(
      '--snapshotter <name>',
      'default snapshotter of namespaces: overlayfs (needs a root that can do overlay) or native',
    )
    .option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent (default info)');
  hiddenAlias(cmd, '--metrics-address <host:port>', 'metrics');
  cmd.action(async (flags: Flags) => {
    const startupHup = new StartupHup();
    tuneGcForStreaming();
    // stdout carries the summary; logs go to stderr, written as they come: pino's destination is
    // asynchronous by default, and a failed start's last log lines (the daemon stopping) then landed after
    // the one-line reason, which must be the last line on stderr.
    const logger = pino(
      { level: 'info', base: { pid: process.pid } },
      pino.destination({ dest: 2, sync: true }),
    );
    let app: UpApp;
    try {
      const config = await loadUpConfig(flags.config, flags);
      logger.level = config.logLevel;
      app = await startUp(config, logger);
    } catch (err) {
      startFailed(logger, 'up', err);
      startupHup.take();
      return;
    }
    process.stdout.write(upSummary(app));
    // SIGHUP re-reads the registry's watched files, as `strata facade` does.
    await runUntilSignalled(
      logger,
      'system',
      () => app.stop(),
      () => app.reload(),
      startupHup,
    );
  });
}
