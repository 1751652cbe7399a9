// `strata pull REF`: containerd's client-side pull through the daemon's gRPC API, with live progress.
import type { Command } from 'commander';
import {
  DEFAULT_PULL_CONCURRENCY,
  imageName,
  type PullImageResult,
  pullImage,
  resolveSnapshotter,
} from '../client/pull/pull.ts';
import { invalidArgument, isUnauthenticated, unauthenticated } from '../errors.ts';
import { parsePlatform } from '../oci/platform.ts';
import { RegistryClient } from '../registry/client.ts';
import { DockerConfigCredentials } from '../registry/docker-config.ts';
import { traceToStderr } from '../server/trace-log.ts';
import { tracePhase } from '../trace.ts';
import { type DaemonFlags, withDaemon, withDaemonFlags } from './daemon-flags.ts';
import { interruptSignal } from './interrupt.ts';
import { createProgress, formatBytes, formatDuration } from './progress.ts';

interface PullFlags extends DaemonFlags {
  platform?: string;
  plainHttp?: boolean;
  snapshotter?: string;
  concurrency: string;
  unpack: boolean;
  registered?: boolean;
  progress?: 'auto' | 'tty' | 'plain' | 'none';
}

function positiveInt(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 1 || n > 64)
    throw invalidArgument(`${flag} must be 1..64, got ${value}`);
  return n;
}

/**
 * What the fetch did. When the daemon's content store had every blob (the registry is `strata up`'s own,
 * or another namespace pulled the image), that is said outright: nothing crossed the network.
 */
export function fetchSummary(r: Pick<PullImageResult, 'fetched' | 'present' | 'linked' | 'bytes'>): string {
  if (r.fetched === 0 && r.linked > 0)
    return `all ${r.present + r.linked} blobs already in the content store, 0 B transferred (${r.linked} linked, ${r.present} present)`;
  const linked = r.linked > 0 ? `, ${r.linked} linked from the content store` : '';
  return `${r.fetched} blobs fetched (${formatBytes(r.bytes)}), ${r.present} present${linked}`;
}

/**
 * A registry that wants credentials it did not get: where `strata pull` takes them from (it has no flag for
 * them, as ctr's --user would put a password in the process list), so the person knows what to do next.
 */
export function withCredentialsHint(err: unknown, configPath: string, host: string): unknown {
  if (!isUnauthenticated(err)) return err;
  return unauthenticated(
    `${err.message}. strata pull reads credentials from ${configPath} (auths, credHelpers or credsStore), as \`docker login ${host}\` writes them; DOCKER_CONFIG names another directory`,
    { cause: err },
  );
}

export function registerPull(program: Command): void {
  withDaemonFlags(
    program
      .command('pull <ref>')
      .summary('pull an image into the daemon and unpack it (what `ctr images pull` does)')
      .description(
        'pull an image into the daemon and unpack it (what `ctr images pull` does); registry credentials come from the docker config ($DOCKER_CONFIG/config.json, as `docker login` writes it)',
      )
      .option('--platform <platform>', 'platform to pull, os/arch[/variant] (default: this host)')
      .option('--plain-http', 'talk to the registry over plain HTTP')
      .option(
        '--snapshotter <name>',
        'snapshotter to unpack into (default: the namespace default, else overlayfs)',
      )
      .option('--concurrency <n>', 'blobs fetched at once', String(DEFAULT_PULL_CONCURRENCY))
      .option('--no-unpack', 'fetch only, do not unpack')
      .option(
        '--registered',
        "fetch and unpack what the daemon's image <ref> points at, instead of resolving <ref> at the registry",
      )
      .option(
        '--progress <mode>',
        'auto (bars on a terminal at least 70 columns wide unless TERM=dumb, else plain lines), tty, plain or none',
        'auto',
      ),
  ).action(async (ref: string, flags: PullFlags) => {
    // No tuneGcForStreaming() here, unlike the daemon: with external memory counted in V8's global limit
    // the pull kept ~250 MiB of spent registry chunks alive between collections, and that memory was
    // taken from the page cache the daemon's unpack writes next (bench/pull-unpack: client peak RSS
    // 254 -> 190 MiB, pull 3412 -> 2991 ms median, for ~0.1 s more client CPU).
    // Ends with the process's age when the command started: its start-up cost.
    traceToStderr();
    const endPull = tracePhase('pull');
    const startup = performance.now();
    await withDaemon('pull', flags, async (daemon) => {
      const { ref: parsed } = imageName(ref);
      const platform = flags.platform === undefined ? undefined : parsePlatform(flags.platform);
      const concurrency = positiveInt(flags.concurrency, '--concurrency');
      const mode = flags.progress ?? 'auto';
      if (!['auto', 'tty', 'plain', 'none'].includes(mode)) {
        throw invalidArgument(`--progress must be auto, tty, plain or none, got ${mode}`);
      }
      const credentials = new DockerConfigCredentials();
      const registry = new RegistryClient({
        hosts: flags.plainHttp ? { insecure: [parsed.domain] } : {},
        credentials,
      });
      const progress =
        mode === 'none'
          ? undefined
          : createProgress(process.stdout, mode === 'auto' ? {} : { tty: mode === 'tty' });
      const started = performance.now();
      const stop = interruptSignal();
      try {
        const result = await pullImage(registry, daemon, ref, {
          ...(platform ? { platform } : {}),
          snapshotter: await resolveSnapshotter(daemon, flags.snapshotter),
          concurrency,
          unpack: flags.unpack,
          registered: flags.registered === true,
          signal: stop.signal,
          ...(progress ? { onEvent: (e) => progress.onEvent(e) } : {}),
        });
        progress?.finish();
        const ms = performance.now() - started;
        process.stdout.write(
          `pulled ${result.name} ${result.descriptor.digest} in ${formatDuration(ms)}: ${fetchSummary(result)}, ` +
            `${result.layersApplied} layers unpacked, ${result.layersPresent} already unpacked\n`,
        );
      } catch (err) {
        throw withCredentialsHint(err, credentials.path, parsed.domain);
      } finally {
        progress?.finish();
        stop.dispose();
        await registry.close();
      }
    });
    endPull(`after ${startup.toFixed(0)} ms of start-up`);
  });
}
