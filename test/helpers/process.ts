// Child processes for tests: long-running servers in their own process group (so stop() takes their
// children with them) and one-shot commands with a time limit. Anything still running when the test
// process exits or is interrupted is killed.
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { deadlineExceeded, internal, messageOf, unavailable } from '../../src/errors.ts';

/** The part of node:test's TestContext the helpers need: a hook that runs after the test, pass or fail. */
export interface AfterHook {
  after(fn: () => Promise<void> | void): void;
}

const livePids = new Set<number>();
let hooksInstalled = false;

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // ESRCH: the group is already gone.
  }
}

function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  const killAll = (): void => {
    for (const pid of livePids) killGroup(pid, 'SIGKILL');
    livePids.clear();
  };
  process.on('exit', killAll);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      killAll();
      // Let the default action (termination) happen now that our listener is gone.
      process.kill(process.pid, signal);
    });
  }
}

function track(proc: ChildProcess): void {
  if (proc.pid === undefined) return;
  installExitHooks();
  const pid = proc.pid;
  livePids.add(pid);
  proc.once('exit', () => {
    // Members of the group may outlive the leader; they go with it.
    killGroup(pid, 'SIGKILL');
    livePids.delete(pid);
  });
}

/** Keeps the last `limit` bytes written, for error messages. */
class Tail {
  private chunks: Buffer[] = [];
  private bytes = 0;
  private readonly limit: number;
  constructor(limit: number) {
    this.limit = limit;
  }
  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    while (this.bytes - (this.chunks[0]?.length ?? 0) >= this.limit && this.chunks.length > 1) {
      this.bytes -= this.chunks.shift()!.length;
    }
  }
  toString(): string {
    const all = Buffer.concat(this.chunks);
    return all.subarray(Math.max(0, all.length - this.limit)).toString('utf8');
  }
}

export interface SpawnServerOptions {
  /** Added to (and overriding) the parent's environment. */
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Polled until it resolves true; a throw counts as "not yet". */
  readyCheck: () => Promise<boolean>;
  /** How long to wait for readiness (default 20 s). */
  timeoutMs?: number;
  /** stdout and stderr are appended here; without it the last 64 KiB are kept in memory. */
  logFile?: string;
  /** Name used in error messages (default: the command). */
  name?: string;
  /** When given, stop() is registered with t.after so the server dies with the test, pass or fail. */
  t?: AfterHook;
}

export interface ServerProcess {
  proc: ChildProcess;
  /** Ends the whole process group: SIGTERM, then SIGKILL after 5 s. Idempotent. */
  stop(): Promise<void>;
  /** The last lines the server printed (from logFile or the in-memory tail). */
  logTail(): Promise<string>;
}

/**
 * Starts a long-running server in its own process group and resolves once `readyCheck` says so.
 * If the server exits first or is not ready in time it is killed and the error carries its last output.
 */
export async function spawnServer(
  cmd: string,
  args: string[],
  opts: SpawnServerOptions,
): Promise<ServerProcess> {
  const name = opts.name ?? cmd;
  const tail = new Tail(64 * 1024);
  let fd: number | undefined;
  if (opts.logFile) fd = openSync(opts.logFile, 'a');
  let proc: ChildProcess;
  try {
    proc = spawn(cmd, args, {
      cwd: opts.cwd,
      env: { ...process.env, ...opts.env },
      detached: true,
      stdio: ['ignore', fd ?? 'pipe', fd ?? 'pipe'],
    });
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  proc.stdout?.on('data', (c: Buffer) => tail.push(c));
  proc.stderr?.on('data', (c: Buffer) => tail.push(c));
  track(proc);

  let exitInfo: string | undefined;
  const exited = new Promise<void>((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) resolve();
    proc.once('exit', (code, signal) => {
      exitInfo = signal ? `signal ${signal}` : `code ${code}`;
      resolve();
    });
  });
  let spawnError: Error | undefined;
  // Either 'spawn' or 'error' comes first; a missing binary must not pass a lenient readyCheck.
  await new Promise<void>((resolve) => {
    proc.once('spawn', resolve);
    proc.once('error', (err) => {
      spawnError = err;
      resolve();
    });
  });

  const logTail = async (): Promise<string> => {
    if (!opts.logFile) return tail.toString();
    const text = await readFile(opts.logFile, 'utf8').catch(() => '');
    return text.slice(-8192);
  };

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (proc.pid === undefined || exitInfo !== undefined) return;
      killGroup(proc.pid, 'SIGTERM');
      const timer = sleep(5000).then(() => 'timeout' as const);
      if ((await Promise.race([exited.then(() => 'exited' as const), timer])) === 'timeout') {
        killGroup(proc.pid, 'SIGKILL');
        await exited;
      }
    })();
    return stopping;
  };
  opts.t?.after(stop);

  const timeoutMs = opts.timeoutMs ?? 20_000;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    if (spawnError) {
      await stop();
      throw unavailable(`${name}: could not start: ${spawnError.message}`, { cause: spawnError });
    }
    if (exitInfo !== undefined) {
      throw unavailable(`${name} exited (${exitInfo}) before it was ready:\n${await logTail()}`);
    }
    try {
      if (await opts.readyCheck()) return { proc, stop, logTail };
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      const output = await logTail();
      await stop();
      const why = lastError ? ` (last check: ${messageOf(lastError)})` : '';
      throw deadlineExceeded(`${name} not ready after ${timeoutMs} ms${why}:\n${output}`);
    }
    await sleep(50);
  }
}

/**
 * Polls `fn` until it returns something other than undefined/false/null/'' and returns that value (an
 * empty string is output not there yet). Throws (DeadlineExceeded, with the last error seen) after
 * `timeoutMs`.
 */
export async function waitFor<T>(
  fn: () => Promise<T | undefined | null | false | ''> | T | undefined | null | false | '',
  timeoutMs = 10_000,
  opts: { intervalMs?: number; what?: string } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await fn();
      if (value !== undefined && value !== null && value !== false && value !== '') return value as T;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      const why = lastError ? `: ${messageOf(lastError)}` : '';
      throw deadlineExceeded(`timed out after ${timeoutMs} ms waiting for ${opts.what ?? 'condition'}${why}`);
    }
    await sleep(opts.intervalMs ?? 50);
  }
}

/** `p`, or a DeadlineExceeded naming `what` after `timeoutMs`: a wait in a test that cannot hang it. */
export async function within<T>(p: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(deadlineExceeded(`${what}: not done after ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

export interface RunOptions {
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Kill the command's process group after this long (default 120 s). */
  timeoutMs?: number;
  /** Written to stdin, then stdin is closed. */
  input?: string | Buffer;
}

/**
 * Runs a command to completion in its own process group and returns its stdout. A non-zero exit or a
 * timeout throws with the command line and the end of its stderr.
 */
export function runCommand(cmd: string, args: string[], opts: RunOptions = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const proc = spawn(cmd, args, {
      cwd: opts.cwd,
      env: { ...process.env, ...opts.env },
      detached: true,
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    track(proc);
    const out: Buffer[] = [];
    let outBytes = 0;
    const err = new Tail(16 * 1024);
    const line = [cmd, ...args].join(' ');
    let timedOut = false;
    const timeoutMs = opts.timeoutMs ?? 120_000;
    const timer = setTimeout(() => {
      timedOut = true;
      if (proc.pid !== undefined) killGroup(proc.pid, 'SIGKILL');
    }, timeoutMs);
    proc.stdout!.on('data', (c: Buffer) => {
      // Outputs we parse are small; a runaway command is cut off rather than filling memory.
      if (outBytes > 64 * 1024 * 1024) return;
      out.push(c);
      outBytes += c.length;
    });
    proc.stderr!.on('data', (c: Buffer) => err.push(c));
    if (opts.input !== undefined) proc.stdin!.end(opts.input);
    proc.once('error', (e) => {
      clearTimeout(timer);
      reject(unavailable(`${cmd}: could not start: ${e.message}`, { cause: e }));
    });
    proc.once('close', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) {
        reject(deadlineExceeded(`${line}: killed after ${timeoutMs} ms\n${err.toString()}`));
      } else if (code !== 0) {
        reject(internal(`${line}: exit ${signal ?? code}\n${err.toString()}`));
      } else {
        resolve(Buffer.concat(out).toString('utf8'));
      }
    });
  });
}

export interface ProcessResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command to its end with stdout and stderr as pipes (not a terminal) and reports how it went;
 * unlike runCommand, never throws on a non-zero exit. Killed after `timeoutMs` (default 120 s).
 */
export function runProcess(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<ProcessResult> {
  return new Promise((resolve, reject) => {
    const proc = spawn(cmd, args, { env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    proc.stdout.on('data', (c: Buffer) => out.push(c));
    proc.stderr.on('data', (c: Buffer) => err.push(c));
    const timer = setTimeout(() => proc.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    proc.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    proc.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        code: code ?? (signal ? 128 : 1),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      });
    });
  });
}

/**
 * Runs `f` with this process's effective user set to nobody (65534) when it is root, which reads any file
 * whatever its mode; as any other user, just runs it. Only for code whose file access `f` awaits.
 */
export async function asUnprivileged<T>(f: () => Promise<T>): Promise<T> {
  if (process.getuid?.() !== 0 || !process.seteuid) return f();
  process.seteuid(65534);
  try {
    return await f();
  } finally {
    process.seteuid(0);
  }
}
