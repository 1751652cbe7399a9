// A private containerd 1.6 for tests and benchmarks: its own temp root, state and socket, a minimal config
// (CRI off, no TCP), and ctr pointed at it with the native snapshotter as default (works on any file
// system, no overlay mounts). Stopped and removed after the test, pass or fail.
import { type ChildProcessByStdio, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { type AfterHook, runCommand, type ServerProcess, spawnServer } from './process.ts';
import { removeTempDir, tempDir } from './tmp.ts';

export interface CtrRunOptions {
  /** Kill ctr after this long (default 120 s). */
  timeoutMs?: number;
}

export interface TestContainerd {
  /** The socket path (what `ctr --address` takes). */
  address: string;
  /** The temp dir holding root/, state/, the config, the socket and containerd.log. */
  root: string;
  logFile: string;
  /** Runs `ctr --address SOCK …` (snapshotter native unless the args say otherwise); stdout, or throws. */
  ctr(args: string[], opts?: CtrRunOptions): Promise<string>;
  /**
   * `ctr run --rm REF NAME COMMAND…` through the image's `sh`, which waits 0.2 s after COMMAND before it
   * exits with COMMAND's status: ctr 1.6 cancels the container's output copy as soon as the task is gone,
   * so what a command prints right before exiting is sometimes lost (containerd issue 770; seen here
   * about once in a hundred runs). Returns stdout.
   */
  run(ref: string, name: string, command: string[], opts?: CtrRunOptions): Promise<string>;
  /** Starts the same `ctr` as ctr() does, for a caller that watches its output as it comes. */
  spawnCtr(args: string[]): ChildProcessByStdio<null, Readable, Readable>;
  /** Stops containerd and removes its dirs. Idempotent. */
  stop(): Promise<void>;
}

export interface StartContainerdOptions {
  /** containerd is stopped and its dirs removed after the test. */
  t?: AfterHook;
  /** containerd's log level (default warn). */
  logLevel?: string;
}

export async function startContainerd(opts: StartContainerdOptions = {}): Promise<TestContainerd> {
  const dir = await tempDir('containerd');
  const address = join(dir, 'containerd.sock');
  const logFile = join(dir, 'containerd.log');
  const config = join(dir, 'config.toml');
  await writeFile(
    config,
    [
      'version = 2',
      `root = "${join(dir, 'root')}"`,
      `state = "${join(dir, 'state')}"`,
      'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
      '[grpc]',
      `  address = "${address}"`,
      '[debug]',
      `  level = "${opts.logLevel ?? 'warn'}"`,
      '',
    ].join('\n'),
  );
  let server: ServerProcess | undefined;
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      try {
        await server?.stop();
      } finally {
        await removeTempDir(dir);
      }
    })();
    return stopping;
  };
  opts.t?.after(stop);
  // ctr reads its default snapshotter from here; `--snapshotter` in args still wins.
  const ctrEnv = { CONTAINERD_SNAPSHOTTER: 'native' };
  const ctr = (args: string[], o: CtrRunOptions = {}): Promise<string> =>
    runCommand('ctr', ['--address', address, ...args], { env: ctrEnv, timeoutMs: o.timeoutMs ?? 120_000 });
  const run = (ref: string, name: string, command: string[], o: CtrRunOptions = {}) =>
    ctr(['run', '--rm', ref, name, 'sh', '-c', '"$@"; s=$?; sleep 0.2; exit $s', 'sh', ...command], o);
  const spawnCtr = (args: string[]) =>
    spawn('ctr', ['--address', address, ...args], {
      env: { ...process.env, ...ctrEnv },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  try {
    server = await spawnServer('containerd', ['--config', config], {
      name: 'containerd',
      logFile,
      readyCheck: async () => {
        if (!existsSync(address)) return false;
        await ctr(['version'], { timeoutMs: 5000 });
        return true;
      },
      timeoutMs: 30_000,
    });
  } catch (err) {
    await stop();
    throw err;
  }
  return { address, root: dir, logFile, ctr, run, spawnCtr, stop };
}
