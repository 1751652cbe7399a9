// Copying a committed snapshot's tree into a new snapshot directory, as containerd's native snapshotter
// does on Prepare: modes (setuid and sticky bits included), owners, times, symlinks verbatim, fifos, and
// files that share an inode inside the tree stay hard-linked. Devices and sockets are skipped (creating
// devices needs privileges a snapshot copy should not rely on), and so are extended attributes (Node has
// no xattr API). Symlinks are never followed: every path is reached through directories lstat saw.
import { execFile } from 'node:child_process';
import { type BigIntStats, constants as fsc } from 'node:fs';
import {
  chmod,
  copyFile,
  lchown,
  link,
  lstat,
  lutimes,
  mkdir,
  readdir,
  readlink,
  symlink,
} from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { aborted, internal, messageOf, StrataError } from '../../errors.ts';

const run = promisify(execFile);

/** File copies in flight per directory. */
const COPY_CONCURRENCY = 8;
const CHILD_TIMEOUT_MS = 10_000;

export interface CopyTreeOptions {
  signal?: AbortSignal;
  /** Change owners to the source's. Default: when running as root. */
  chown?: boolean;
}

export interface CopyTreeResult {
  entries: number;
  /** Devices and sockets not copied. */
  skipped: number;
}

const seconds = (ns: bigint): number => Number(ns) / 1e9;

class TreeCopier {
  readonly chown: boolean;
  readonly signal: AbortSignal | undefined;
  entries = 0;
  skipped = 0;
  /** dev:ino → the copy's path, settled once its bytes and metadata are in place. */
  private readonly inodes = new Map<string, Promise<string>>();

  constructor(opts: CopyTreeOptions) {
    this.chown = opts.chown ?? process.getuid?.() === 0;
    this.signal = opts.signal;
  }

  /** Owner, then mode (chown clears setuid), then times; symlinks get owner and times only. */
  private async setMeta(path: string, st: BigIntStats): Promise<void> {
    if (this.chown) await lchown(path, Number(st.uid), Number(st.gid));
    if (!st.isSymbolicLink()) await chmod(path, Number(st.mode) & 0o7777);
    await lutimes(path, seconds(st.atimeNs), seconds(st.mtimeNs));
  }

  async copyDir(src: string, dst: string, st: BigIntStats): Promise<void> {
    if (this.signal?.aborted) throw aborted('snapshot copy aborted', { cause: this.signal.reason });
    const names = await readdir(src);
    const files: Array<() => Promise<void>> = [];
    for (const name of names) {
      const s = join(src, name);
      const d = join(dst, name);
      const cst = await lstat(s, { bigint: true });
      this.entries++;
      if (cst.isDirectory()) {
        await mkdir(d, { mode: 0o700 });
        await this.copyDir(s, d, cst);
      } else if (cst.isFile()) {
        files.push(() => this.copyFile(s, d, cst));
      } else if (cst.isSymbolicLink()) {
        await symlink(await readlink(s), d);
        await this.setMeta(d, cst);
      } else if (cst.isFIFO()) {
        // Node cannot make a fifo; the coreutils command can, without privileges.
        await run('mkfifo', ['--', d], { timeout: CHILD_TIMEOUT_MS });
        await this.setMeta(d, cst);
      } else {
        this.skipped++;
      }
    }
    await pool(files, COPY_CONCURRENCY);
    // Last, so creating the children does not change the directory's times.
    await this.setMeta(dst, st);
  }

  private async copyFile(src: string, dst: string, st: BigIntStats): Promise<void> {
    if (st.nlink > 1n) {
      const key = `${st.dev}:${st.ino}`;
      const first = this.inodes.get(key);
      if (first) {
        await link(await first, dst);
        return;
      }
      const done = (async () => {
        await this.copyData(src, dst, st);
        return dst;
      })();
      this.inodes.set(key, done);
      await done;
      return;
    }
    await this.copyData(src, dst, st);
  }

  private async copyData(src: string, dst: string, st: BigIntStats): Promise<void> {
    if (this.signal?.aborted) throw aborted('snapshot copy aborted', { cause: this.signal.reason });
    // A reflink where the file system can, a plain copy otherwise; never overwrites.
    await copyFile(src, dst, fsc.COPYFILE_FICLONE | fsc.COPYFILE_EXCL);
    await this.setMeta(dst, st);
  }
}

/** Runs the tasks with at most `limit` at a time; the first failure wins after the rest settle. */
async function pool(tasks: Array<() => Promise<void>>, limit: number): Promise<void> {
  let next = 0;
  let failure: unknown;
  const worker = async (): Promise<void> => {
    while (next < tasks.length && failure === undefined) {
      const task = tasks[next++]!;
      try {
        await task();
      } catch (err) {
        failure ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  if (failure !== undefined) throw failure;
}

/**
 * Copies the tree under `src` into the existing, empty directory `dst`, including the root directory's own
 * mode, owner and times.
 */
export async function copyTree(
  src: string,
  dst: string,
  opts: CopyTreeOptions = {},
): Promise<CopyTreeResult> {
  const copier = new TreeCopier(opts);
  try {
    const st = await lstat(src, { bigint: true });
    if (!st.isDirectory()) throw internal(`snapshot copy: ${src} is not a directory`);
    await copier.copyDir(src, dst, st);
  } catch (err) {
    if (err instanceof StrataError) throw err;
    throw internal(`copying of parent failed: ${messageOf(err)}`, { cause: err });
  }
  return { entries: copier.entries, skipped: copier.skipped };
}
