// Extended attributes (security.capability, ACLs, user.*) of layer entries and snapshot trees. Node has
// no xattr API, so the attr package's setfattr/getfattr do the work: while applying a layer, one restore
// process for a batch of entries that have any, and for a whole tree copy one dump (through a long-lived
// shell, see XattrDumper) plus a restore when there is anything to restore.
import { type ChildProcessWithoutNullStreams, execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { decodeName, encodeName, hasEscapes } from './byte-names.ts';

const run = promisify(execFile);
const TIMEOUT_MS = 30_000;
const MAX_DUMP_BYTES = 256 * 1024 * 1024;

/** A value as setfattr takes it (`-v` or a restore line). */
const hexOf = (value: Uint8Array) =>
  `0x${Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('hex')}`;

/** Sets one attribute on `path` itself (a symlink is not followed). Rejects when the kernel refuses. */
export async function setXattr(path: string, name: string, value: Uint8Array): Promise<void> {
  const hex = hexOf(value);
  if (!hasEscapes(path)) {
    await run('setfattr', ['-h', '-n', name, '-v', hex, '--', path], { timeout: TIMEOUT_MS });
    return;
  }
  // An argument cannot carry bytes that are not UTF-8; a restore file names the path octal-escaped. The
  // attribute's name comes from the layer too: unquoted, a newline in it would start a line naming
  // another file (any file on the host), and `=` would end it early.
  await restore(`# file: ${restoreQuoted(path)}\n${restoreQuoted(name)}=${hex}\n`);
}

/** One path's attributes, for setManyXattrs. */
export interface XattrSet {
  path: string;
  attrs: readonly (readonly [string, Uint8Array])[];
}

/**
 * Sets each path's attributes (symlinks not followed) in one setfattr process: a layer whose every entry
 * is labelled (SELinux, ostree exports) costs a few processes, not one per entry. Resolves to how many of
 * each set's attributes were refused, by the kernel or, when setfattr could not run, all of them.
 */
export function setManyXattrs(sets: readonly XattrSet[]): Promise<number[]> {
  const refused = sets.map(() => 0);
  const total = sets.reduce((n, s) => n + s.attrs.length, 0);
  if (total === 0) return Promise.resolve(refused);
  // A blank line ends a file's section: without one, setfattr reads the next `# file:` as a comment and
  // gives that file's attributes to this one.
  const text = sets
    .filter((s) => s.attrs.length > 0)
    .map(
      (s) =>
        `# file: ${restoreQuoted(s.path)}\n${s.attrs
          .map(([name, value]) => `${restoreQuoted(name)}=${hexOf(value)}\n`)
          .join('')}\n`,
    )
    .join('');
  return new Promise<number[]>((resolve) => {
    const child = execFile(
      'setfattr',
      ['-h', '--restore=-'],
      { timeout: TIMEOUT_MS, maxBuffer: MAX_DUMP_BYTES, encoding: 'buffer' },
      (err, _stdout, stderr) => {
        if (!err) return resolve(refused);
        const said = refusals(stderr);
        if (said.length === 0) return resolve(sets.map((s) => s.attrs.length));
        attribute(said, sets, refused);
        resolve(refused);
      },
    );
    child.stdin?.on('error', () => {}); // a setfattr that failed to start: reported by the callback
    child.stdin?.end(text);
  });
}

const SAYS = Buffer.from('setfattr: ');

/** setfattr's stderr lines: it goes on after a refused attribute and says so on a line of its own. */
function refusals(stderr: Buffer): Buffer[] {
  const lines: Buffer[] = [];
  for (let at = 0; at < stderr.length; ) {
    const nl = stderr.indexOf(0x0a, at);
    const line = stderr.subarray(at, nl < 0 ? stderr.length : nl);
    at = nl < 0 ? stderr.length : nl + 1;
    if (line.subarray(0, SAYS.length).equals(SAYS)) lines.push(line);
  }
  return lines;
}

/**
 * Counts each refusal line (`setfattr: PATH: error`, PATH raw) against the set it names: the longest path
 * that prefixes it, among sets with attributes left to refuse. A line naming none (a path setfattr quoted)
 * goes to the first set with some left, so the total stays right.
 */
function attribute(lines: readonly Buffer[], sets: readonly XattrSet[], refused: number[]): void {
  const prefixes = sets.map((s) => Buffer.concat([SAYS, encodeName(s.path), Buffer.from(': ')]));
  for (const line of lines) {
    let best = -1;
    for (let i = 0; i < sets.length; i++) {
      if (refused[i]! >= sets[i]!.attrs.length) continue;
      const p = prefixes[i]!;
      if (line.subarray(0, p.length).equals(p) && (best < 0 || p.length > prefixes[best]!.length)) best = i;
    }
    if (best < 0) best = sets.findIndex((s, i) => refused[i]! < s.attrs.length);
    if (best < 0) return;
    refused[best] = refused[best]! + 1;
  }
}

/** A path or attribute name for a restore file: its bytes, those setfattr would misread octal-escaped. */
function restoreQuoted(text: string): string {
  return [...encodeName(text)]
    .map((b) =>
      b < 0x21 || b > 0x7e || b === 0x5c || b === 0x3d
        ? `\\${b.toString(8).padStart(3, '0')}`
        : String.fromCharCode(b),
    )
    .join('');
}

/** Runs `setfattr --restore` (symlinks not followed) on a getfattr-style dump. */
function restore(dump: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const child = execFile('setfattr', ['-h', '--restore=-'], { timeout: TIMEOUT_MS }, (err) =>
      err ? reject(err) : resolve(),
    );
    child.stdin?.end(dump);
  });
}

/** The file capability attribute (what `setcap` sets). */
export const CAPABILITY = 'security.capability';

/**
 * The file capability of every path under `dir` that has one, by path relative to `dir` (names as
 * byte-names decodes them): one getfattr over the tree, which prints only the paths that have it.
 */
export async function capabilities(dir: string): Promise<Map<string, Buffer>> {
  const { stdout } = await run(
    'getfattr',
    ['-R', '-h', '-d', '-m', '^security\\.capability$', '-e', 'hex', '--absolute-names', '--', dir],
    { timeout: TIMEOUT_MS, maxBuffer: MAX_DUMP_BYTES, encoding: 'buffer' },
  );
  const out = new Map<string, Buffer>();
  const prefix = Buffer.concat([encodeName(dir), Buffer.from('/')]);
  let file: Buffer | undefined;
  for (let at = 0; at < stdout.length; ) {
    const nl = stdout.indexOf(0x0a, at);
    const line = stdout.subarray(at, nl < 0 ? stdout.length : nl);
    at = nl < 0 ? stdout.length : nl + 1;
    if (line.subarray(0, 8).toString('latin1') === '# file: ') file = unescapeName(line.subarray(8));
    const value = /^security\.capability=0x([0-9a-f]*)$/.exec(line.toString('latin1'));
    if (value && file?.subarray(0, prefix.length).equals(prefix)) {
      out.set(decodeName(file.subarray(prefix.length)), Buffer.from(value[1]!, 'hex'));
    }
  }
  return out;
}

/** getfattr's quoted name back to its bytes (`\ooo` is one byte). */
function unescapeName(quoted: Buffer): Buffer {
  const out: number[] = [];
  for (let i = 0; i < quoted.length; i++) {
    const c = quoted[i]!;
    const digits = quoted.subarray(i + 1, i + 4).toString('latin1');
    if (c === 0x5c && /^[0-7]{3}$/.test(digits)) {
      out.push(Number.parseInt(digits, 8));
      i += 3;
    } else out.push(c);
  }
  return Buffer.from(out);
}

/** Every attribute of `path` itself, by name. */
export async function getXattrs(path: string): Promise<Record<string, Buffer>> {
  const { stdout } = await run(
    'getfattr',
    ['-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', '--', path],
    {
      timeout: TIMEOUT_MS,
      maxBuffer: MAX_DUMP_BYTES,
    },
  );
  const attrs: Record<string, Buffer> = {};
  for (const line of stdout.split('\n')) {
    const m = /^([^#=][^=]*)=0x([0-9a-f]*)$/.exec(line);
    if (m) attrs[m[1]!] = Buffer.from(m[2]!, 'hex');
  }
  return attrs;
}

/** Ends each answer of the dump helper; getfattr's own comment lines start `# file:`. */
const END_MARK = '#strata-xattr-end ';
/** The last line of an answer: END_MARK and getfattr's exit status. */
const END_LINE = new RegExp(`(?:^|\\n)${END_MARK}(\\d+)\\n$`);
/** stderr kept for the message when a dump fails. */
const MAX_STDERR_BYTES = 4096;

/**
 * A shell that runs `getfattr -R` on each path written to it and ends each answer with END_MARK and the
 * exit status. Forking the daemon costs more than the dump: afterwards every page of its heap takes a
 * write fault again (a 200 MiB heap: ~50k faults, ~50 ms), and a pull copies a parent tree per layer.
 * The shell is forked once, while the heap is small, and forks getfattr itself. Its owner (the native
 * snapshotter) stops it; its stdin also closes, and so it exits, when this process ends.
 */
export class XattrDumper {
  private child: ChildProcessWithoutNullStreams | undefined;
  private tail: Promise<unknown> = Promise.resolve();

  /** Starts the shell now (cheap while the heap is small); later dumps use it. */
  start(): ChildProcessWithoutNullStreams {
    const alive = (c: ChildProcessWithoutNullStreams) => c.exitCode === null && c.signalCode === null;
    if (this.child && alive(this.child)) return this.child;
    const script = `while IFS= read -r p; do getfattr -R -h -d -m - -e hex --absolute-names -- "$p"; echo "${END_MARK}$?"; done`;
    const child = spawn('/bin/sh', ['-c', script], { stdio: ['pipe', 'pipe', 'pipe'] });
    child.on('error', () => {}); // surfaces through the request that notices (exit, closed pipes)
    child.stdin.on('error', () => {});
    // Idle, it must not keep the process alive; a request's timer does while one runs.
    child.unref();
    for (const s of [child.stdin, child.stdout, child.stderr]) (s as unknown as { unref(): void }).unref();
    this.child = child;
    return child;
  }

  /** Ends the shell; a later dump starts a new one. */
  stop(): void {
    this.child?.stdin.end();
    this.child = undefined;
  }

  /** getfattr's dump of the tree at `path` (no newline in it), as text. */
  dump(path: string): Promise<string> {
    const run = this.tail.then(
      () => this.request(path),
      () => this.request(path),
    );
    this.tail = run.catch(() => {});
    return run;
  }

  private request(path: string): Promise<string> {
    const child = this.start();
    return new Promise<string>((resolve, reject) => {
      const out: Buffer[] = [];
      let outBytes = 0;
      let err = '';
      /** `broken`: the helper is in an unknown state and is not reused. */
      const done = (fail: Error | undefined, text = '', broken = fail !== undefined): void => {
        clearTimeout(timer);
        child.stdout.off('data', onOut);
        child.stderr.off('data', onErr);
        child.off('exit', onExit);
        if (broken) {
          child.kill('SIGKILL');
          if (this.child === child) this.child = undefined;
        }
        if (fail) reject(fail);
        else resolve(text);
      };
      let last = '';
      const onOut = (chunk: Buffer): void => {
        out.push(chunk);
        outBytes += chunk.length;
        if (outBytes > MAX_DUMP_BYTES) {
          done(new Error(`getfattr dump of ${path} is too big`));
          return;
        }
        // The answer is complete when its last line is the end mark; only the tail needs looking at.
        last = (last + chunk.toString('latin1')).slice(-64);
        const mark = END_LINE.exec(last);
        if (!mark) return;
        if (mark[1] !== '0') {
          done(new Error(`getfattr -R ${path} exited with ${mark[1]}: ${err.trim()}`), '', false);
          return;
        }
        const text = Buffer.concat(out).toString('utf8');
        done(undefined, text.slice(0, text.length - mark[0].length + (mark[0].startsWith('\n') ? 1 : 0)));
      };
      const onErr = (chunk: Buffer): void => {
        err = (err + chunk.toString('utf8')).slice(-MAX_STDERR_BYTES);
      };
      const onExit = (): void => done(new Error(`getfattr helper exited: ${err.trim()}`));
      const timer = setTimeout(() => done(new Error(`getfattr -R ${path} timed out`)), TIMEOUT_MS);
      child.stdout.on('data', onOut);
      child.stderr.on('data', onErr);
      child.once('exit', onExit);
      child.stdin.write(`${path}\n`);
    });
  }
}

/** getfattr's dump of every attribute in the tree at `src` (for restoreTreeXattrs), through `dumper` when there is one. */
export async function dumpTree(src: string, dumper: XattrDumper | undefined): Promise<string> {
  if (dumper && !src.includes('\n')) return dumper.dump(src);
  // The dumper reads one path per line; other paths, and callers without one, get a process of their own.
  const { stdout } = await run(
    'getfattr',
    ['-R', '-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', '--', src],
    { timeout: TIMEOUT_MS, maxBuffer: MAX_DUMP_BYTES },
  );
  return stdout;
}

/**
 * Gives every path under `dst` the attributes of the same path under `src` (trees of identical shape, as
 * after a copy). Attributes the kernel refuses (e.g. security.* without privileges) are left out.
 */
export async function copyTreeXattrs(src: string, dst: string, dumper?: XattrDumper): Promise<void> {
  await restoreTreeXattrs(src, dst, await dumpTree(src, dumper));
}

/** Gives the paths under `dst` the attributes `stdout` (dumpTree of `src`) lists for the same paths under `src`. */
export async function restoreTreeXattrs(src: string, dst: string, stdout: string): Promise<void> {
  if (stdout.trim() === '') return;
  // getfattr names each file on a `# file: PATH` line (PATH octal-escaped); swap the tree's prefix.
  const prefix = `# file: ${escapeName(src)}`;
  const dump = stdout
    .split('\n')
    .map((line) =>
      line.startsWith(prefix) ? `# file: ${escapeName(dst)}${line.slice(prefix.length)}` : line,
    )
    .join('\n');
  await restore(dump);
}

/** getfattr's quoting of a path: backslash and control characters as octal escapes. */
function escapeName(path: string): string {
  return path.replace(/[\\\x00-\x1f\x7f]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
}
