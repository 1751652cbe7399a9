// Child processes of the builder (git, buildah): their own process group (a timeout or cancel ends
// everything they started), output handed over line by line, bounded capture, and a clear error.
import { spawn } from 'node:child_process';
import { StringDecoder } from 'node:string_decoder';
import { aborted, deadlineExceeded, failedPrecondition, resourceExhausted, unavailable } from '../errors.ts';

export interface CommandOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  timeoutMs: number;
  signal?: AbortSignal;
  /** Each output line (stdout and stderr interleaved), without its newline. */
  onLine?: (line: string) => void;
  /** Bytes written to stdin. */
  input?: string;
  /** How much stdout is kept for the result (default 16 MiB; more fails the command). */
  maxStdout?: number;
}

export interface CommandResult {
  stdout: string;
  /** The last lines of stderr, for error messages. */
  stderrTail: string;
}

/** Thrown when a command exits non-zero: carries its exit code and the tail of its output. */
export class CommandFailed extends Error {
  readonly exitCode: number | null;
  readonly tail: string;
  constructor(what: string, exitCode: number | null, tail: string) {
    super(`${what} failed (exit ${exitCode ?? 'signal'})${tail ? `: ${tail}` : ''}`);
    this.exitCode = exitCode;
    this.tail = tail;
  }
}

const TAIL_LINES = 20;

export function runCommand(
  cmd: string,
  args: readonly string[],
  options: CommandOptions,
): Promise<CommandResult> {
  const what = `${cmd} ${args.find((a) => !a.startsWith('-')) ?? ''}`.trim();
  if (options.signal?.aborted) return Promise.reject(aborted(`${what}: cancelled`));
  const maxStdout = options.maxStdout ?? 16 << 20;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
    });
    const out: Buffer[] = [];
    let outBytes = 0;
    const tail: string[] = [];
    let settled = false;
    const kill = () => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    };
    const finish = (err?: Error, result?: CommandResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      if (err) {
        kill();
        reject(err);
      } else resolve(result as CommandResult);
    };
    const onAbort = () => finish(aborted(`${what}: cancelled`, { cause: options.signal?.reason }));
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const timer = setTimeout(
      () =>
        finish(deadlineExceeded(`${what} did not finish within ${Math.round(options.timeoutMs / 1000)} s`)),
      options.timeoutMs,
    );
    const collect = (chunk: Buffer) => {
      outBytes += chunk.length;
      if (outBytes > maxStdout)
        return finish(resourceExhausted(`${what}: more than ${maxStdout} bytes of output`));
      out.push(chunk);
    };
    const emit = (line: string) => {
      tail.push(line);
      if (tail.length > TAIL_LINES) tail.shift();
      options.onLine?.(line);
    };
    // A stream's lines; the decoder keeps a character split between two chunks whole.
    const lines = () => {
      const decoder = new StringDecoder('utf8');
      let partial = '';
      return {
        push: (chunk: Buffer) => {
          partial += decoder.write(chunk);
          const parts = partial.split('\n');
          partial = parts.pop() ?? '';
          // A line without end is handed over in pieces rather than held without bound.
          if (partial.length > 64 * 1024) {
            parts.push(partial);
            partial = '';
          }
          for (const line of parts) emit(line);
        },
        // The last line, when the output does not end with a newline.
        end: () => {
          partial += decoder.end();
          if (partial !== '') emit(partial);
          partial = '';
        },
      };
    };
    const errLines = lines();
    const outLines = options.onLine ? lines() : undefined;
    child.stdout.on('data', outLines ? outLines.push : collect);
    child.stderr.on('data', errLines.push);
    child.stdin.on('error', () => {});
    child.stdin.end(options.input ?? '');
    child.on('error', (e: NodeJS.ErrnoException) => {
      finish(
        e.code === 'ENOENT'
          ? failedPrecondition(`${cmd} is not installed`)
          : unavailable(`${what}: ${e.message}`),
      );
    });
    child.on('close', (code) => {
      outLines?.end();
      errLines.end();
      const stderrTail = tail.join('\n').trim();
      if (code !== 0) return finish(new CommandFailed(what, code, stderrTail));
      finish(undefined, { stdout: Buffer.concat(out).toString('utf8'), stderrTail });
    });
  });
}
