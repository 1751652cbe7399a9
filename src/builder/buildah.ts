// The build engine: buildah with chroot isolation and `--layers`, on the builder's own storage (a cache
// kept between builds, trimmed when it outgrows its disk budget), a private configuration (no host
// registries.conf, containers.conf, storage.conf or auth), a per-build auth file and registries file,
// and a push by image id to the base reference. A build runs in a PID namespace of its own where it may, so
// no process a RUN step started outlives it. Output goes line by line to the build's log; a failure
// says which step failed and how its output ended.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { aborted, deadlineExceeded, errorKind, failedPrecondition, messageOf } from '../errors.ts';
import { CommandFailed, runCommand } from './command.ts';
import type { ProxyVariables } from './proxy-env.ts';

export interface BuildahOptions {
  /** Storage root and run root of the builder's buildah (the layer cache lives there). */
  storageRoot: string;
  runRoot: string;
  /** containers/storage driver: overlay (default) or vfs. */
  driver: string;
  /** Disk budget of the layer cache, in bytes; trimmed while no build runs (see Builder.afterBuild). */
  cacheMaxBytes: number;
  /** Where the builder keeps buildah's own configuration files. */
  configDir: string;
  /**
   * Proxy variables (see proxy-env.ts): buildah's pulls and pushes use them, and RUN steps get them as
   * docker build gives its predefined proxy args, in their environment only. None by default.
   */
  proxy?: ProxyVariables;
}

export interface EngineJob {
  /** The build's private directory (its TMPDIR too). */
  workDir: string;
  contextDir: string;
  dockerfile: string;
  buildArgs: Record<string, string>;
  /** Where the image is pushed (`host/path:tag`). */
  target: string;
  authFile: string;
  /** Registry hosts reached over plain HTTP. */
  insecureHosts: readonly string[];
  signal: AbortSignal;
  onLine: (line: string) => void;
  timeoutMs: number;
}

export interface EngineResult {
  /** Digest of the pushed manifest. */
  digest: string;
}

/** A build failure with the words a user needs: the step and the end of its output. */
export class BuildFailed extends Error {}

const TAIL = 15;
const TRIM_INTERVAL_MS = 60_000;
/** A PID namespace whose first process is buildah: when it ends, the kernel kills all the others. */
const PID_NAMESPACE = ['--pid', '--fork', '--kill-child'];

export class BuildahEngine {
  private readonly options: BuildahOptions;
  private readonly env: NodeJS.ProcessEnv;
  private lastMeasure = 0;
  /** Whether builds run in a PID namespace of their own (needs the right to unshare one, as root has). */
  private ownPids = false;

  private constructor(options: BuildahOptions) {
    this.options = options;
    this.env = {
      ...options.proxy,
      PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      HOME: options.configDir,
      BUILDAH_ISOLATION: 'chroot',
      CONTAINERS_CONF: join(options.configDir, 'containers.conf'),
      CONTAINERS_STORAGE_CONF: join(options.configDir, 'storage.conf'),
      CONTAINERS_REGISTRIES_CONF: join(options.configDir, 'registries.conf'),
      REGISTRY_AUTH_FILE: join(options.configDir, 'no-auth.json'),
    };
  }

  static async open(options: BuildahOptions): Promise<BuildahEngine> {
    const dir = options.configDir;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await mkdir(options.storageRoot, { recursive: true, mode: 0o700 });
    await writeFile(join(dir, 'containers.conf'), '');
    // Flags name root, run root and driver too; the file keeps buildah from reading the host's.
    await writeFile(
      join(dir, 'storage.conf'),
      `[storage]\ndriver = ${JSON.stringify(options.driver)}\ngraphroot = ${JSON.stringify(options.storageRoot)}\nrunroot = ${JSON.stringify(options.runRoot)}\n`,
    );
    await writeFile(join(dir, 'registries.conf'), 'unqualified-search-registries = []\n');
    await writeFile(join(dir, 'no-auth.json'), '{"auths":{}}\n', { mode: 0o600 });
    // Images are trusted by digest (the build key pins them); signature policy is not ours to apply.
    await writeFile(join(dir, 'policy.json'), '{"default":[{"type":"insecureAcceptAnything"}]}\n');
    const engine = new BuildahEngine(options);
    // chroot isolation gives RUN steps no PID namespace: a daemon a step starts (`service x start`,
    // anything that calls setsid) outlives the step, buildah and a kill of its process group.
    engine.ownPids = await runCommand('unshare', [...PID_NAMESPACE, 'true'], { timeoutMs: 10_000 }).then(
      () => true,
      () => false,
    );
    // Containers of builds a previous process left behind (nothing runs yet).
    await engine.buildah(['rm', '--all'], { timeoutMs: 120_000 }).catch(() => {});
    return engine;
  }

  private storageArgs(): string[] {
    const o = this.options;
    return ['--root', o.storageRoot, '--runroot', o.runRoot, '--storage-driver', o.driver];
  }

  private buildah(
    args: string[],
    extra: {
      timeoutMs: number;
      signal?: AbortSignal;
      onLine?: (l: string) => void;
      env?: NodeJS.ProcessEnv;
      ownPids?: boolean;
    },
  ) {
    const argv = ['buildah', ...this.storageArgs(), ...args];
    const [cmd, ...rest] = extra.ownPids && this.ownPids ? ['unshare', ...PID_NAMESPACE, ...argv] : argv;
    return runCommand(cmd as string, rest, {
      env: { ...this.env, ...extra.env },
      timeoutMs: extra.timeoutMs,
      ...(extra.signal && { signal: extra.signal }),
      ...(extra.onLine && { onLine: extra.onLine }),
    });
  }

  /** Builds the Dockerfile and pushes the image to `job.target`. */
  async build(job: EngineJob): Promise<EngineResult> {
    const tmp = join(job.workDir, 'tmp');
    await mkdir(tmp, { recursive: true });
    const registries = join(job.workDir, 'registries.conf');
    await writeFile(
      registries,
      [
        'unqualified-search-registries = []',
        ...job.insecureHosts.map((h) => `[[registry]]\nlocation = ${JSON.stringify(h)}\ninsecure = true`),
        '',
      ].join('\n'),
    );
    const env = { TMPDIR: tmp, CONTAINERS_REGISTRIES_CONF: registries, REGISTRY_AUTH_FILE: job.authFile };
    const policy = join(this.options.configDir, 'policy.json');
    const iidFile = join(job.workDir, 'iid');
    const digestFile = join(job.workDir, 'digest');
    const tail: string[] = [];
    let step = '';
    const onLine = (line: string) => {
      if (/^STEP \d+\/\d+: /.test(line)) step = line;
      tail.push(line);
      if (tail.length > TAIL) tail.shift();
      job.onLine(line);
    };
    const deadline = Date.now() + job.timeoutMs;
    const run = async (args: string[], what: string) => {
      try {
        await this.buildah(args, {
          timeoutMs: Math.max(1, deadline - Date.now()),
          signal: job.signal,
          onLine,
          env,
          ownPids: true,
        });
      } catch (err) {
        if (err instanceof CommandFailed) {
          const where = what === 'build' && step ? `${step} failed` : `${what} failed`;
          throw new BuildFailed(
            `${where} (exit ${err.exitCode ?? 'signal'}); last output:\n${tail.join('\n')}`,
          );
        }
        if (errorKind(err) === 'DeadlineExceeded') {
          throw deadlineExceeded(
            `the build did not finish within ${Math.round(job.timeoutMs / 1000)} s${step ? ` (at ${step})` : ''}`,
          );
        }
        if (errorKind(err) === 'Aborted')
          throw aborted(`the build was cancelled${step ? ` at ${step}` : ''}`);
        throw err;
      }
    };
    const buildArgs = Object.entries(job.buildArgs).flatMap(([k, v]) => ['--build-arg', `${k}=${v}`]);
    await run(
      [
        'build',
        '--layers',
        '--isolation',
        'chroot',
        '--force-rm',
        '--pull=false',
        // RUN steps get buildah's own proxy variables (its default, said here since builds rely on it).
        // Never as --build-arg: buildah names those in every ARG step's history, so a build behind a proxy
        // would make another image, and miss the layer cache of one without.
        '--http-proxy=true',
        '--signature-policy',
        policy,
        '--authfile',
        job.authFile,
        '--format',
        'oci',
        '--iidfile',
        iidFile,
        '-f',
        job.dockerfile,
        ...buildArgs,
        job.contextDir,
      ],
      'build',
    );
    const imageId = (await readFile(iidFile, 'utf8')).trim();
    job.onLine(`pushing ${job.target}`);
    await run(
      [
        'push',
        '--signature-policy',
        policy,
        '--authfile',
        job.authFile,
        '--digestfile',
        digestFile,
        '--format',
        'oci',
        '--retry',
        '2',
        imageId,
        `docker://${job.target}`,
      ],
      'push',
    );
    return { digest: (await readFile(digestFile, 'utf8')).trim() };
  }

  /** Disk use of the storage root in bytes (du: buildah's layers are plain directories). */
  async usage(signal?: AbortSignal): Promise<number> {
    const r = await runCommand('du', ['-sb', this.options.storageRoot], {
      timeoutMs: 120_000,
      ...(signal && { signal }),
    });
    return Number(r.stdout.split('\t')[0]);
  }

  /** Whether the storage is over its budget; false without measuring within a minute of the last measure. */
  async cacheOverBudget(signal?: AbortSignal): Promise<boolean> {
    // Measuring walks the whole storage: at most once a minute, not after every build.
    if (Date.now() - this.lastMeasure < TRIM_INTERVAL_MS) return false;
    this.lastMeasure = Date.now();
    return (await this.usage(signal)) > this.options.cacheMaxBytes;
  }

  /**
   * Keeps the layer cache within its budget: unnamed images first, then everything. Only call it when
   * no build runs (removing an image a build uses would break that build). `signal` ends it between its
   * steps; an image removal under way is let finish (bounded by its timeout) rather than killed halfway.
   */
  async trimCache(log: (msg: string) => void, signal?: AbortSignal): Promise<void> {
    const max = this.options.cacheMaxBytes;
    let used = await this.usage(signal);
    if (used <= max || signal?.aborted) return;
    await this.buildah(['rmi', '--prune'], { timeoutMs: 300_000 }).catch(() => {});
    if (signal?.aborted) return;
    used = await this.usage(signal);
    if (used <= max) return log(`layer cache pruned to ${used} bytes`);
    if (signal?.aborted) return;
    await this.buildah(['rmi', '--all', '--force'], { timeoutMs: 300_000 });
    log(`layer cache emptied: ${used} bytes exceeded the budget of ${max}`);
  }

  /** Removes every working container (builds a crash or kill left behind); only when no build runs. */
  async removeContainers(): Promise<void> {
    try {
      await this.buildah(['rm', '--all'], { timeoutMs: 120_000 });
    } catch (err) {
      throw failedPrecondition(`buildah rm --all: ${messageOf(err)}`);
    }
  }
}
