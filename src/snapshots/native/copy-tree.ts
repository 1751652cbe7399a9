// Copying a committed snapshot's tree into a new snapshot directory, as containerd's native snapshotter
// does on Prepare: modes (setuid and sticky bits included), owners, times, symlinks verbatim, fifos, and
// files that share an inode inside the tree stay hard-linked, extended attributes. Devices and sockets are
// skipped (creating devices needs privileges a snapshot copy should not rely on). Symlinks are never
// followed: every path is reached through directories lstat saw.
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
import { Limiter } from '../../limiter.ts';
import { copyTreeXattrs, type XattrDumper } from '../xattr.ts';

const run = promisify(execFile);

/**
 * File-system operations in flight for one copy, over the whole tree. Every entry costs a few thread-pool
 * round trips (lstat, create, owner, mode, times); done one after another, a layer of small files took
 * tens of ms per Prepare even when its bytes were nothing.
 */
const COPY_CONCURRENCY = 16;
const CHILD_TIMEOUT_MS = 10_000;

export interface CopyTreeOptions {
  signal?: AbortSignal;
  /** Change owners to the source's. Default: when running as root. */
  chown?: boolean;
  /** Dumps the source's extended attributes; without one, getfattr runs as a process of its own. */
  xattrs?: XattrDumper;
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
  private readonly limit = new Limiter(COPY_CONCURRENCY);

  constructor(opts: CopyTreeOptions) {
    this.chown = opts.chown ?? process.getuid?.() === 0;
    this.signal = opts.signal;
  }

  private checkAborted(): void {
    if (this.signal?.aborted) throw aborted('snapshot copy aborted', { cause: this.signal.reason });
  }

  /** Owner, then mode (chown clears setuid), then times; symlinks get owner and times only. */
  private async setMeta(path: string, st: BigIntStats): Promise<void> {
    if (this.chown) await lchown(path, Number(st.uid), Number(st.gid));
    if (!st.isSymbolicLink()) await chmod(path, Number(st.mode) & 0o7777);
    await lutimes(path, seconds(st.atimeNs), seconds(st.mtimeNs));
  }

  /** Copies the children of `src` into the existing `dst`, then gives `dst` the metadata `st`. */
  async copyDir(src: string, dst: string, st: BigIntStats): Promise<void> {
    this.checkAborted();
    const names = await this.limit.run(() => readdir(src));
    await pool(names, COPY_CONCURRENCY, (name) => this.copyEntry(join(src, name), join(dst, name)));
    // Last, so creating the children does not change the directory's times.
    await this.limit.run(() => this.setMeta(dst, st));
  }

  private async copyEntry(s: string, d: string): Promise<void> {
    this.checkAborted();
    const st = await this.limit.run(async () => {
      const cst = await lstat(s, { bigint: true });
      this.entries++;
      if (cst.isDirectory()) await mkdir(d, { mode: 0o700 });
      return cst;
    });
    if (st.isDirectory()) return this.copyDir(s, d, st);
    if (st.isFile()) return this.copyFile(s, d, st);
    if (st.isSymbolicLink()) {
      return this.limit.run(async () => {
        await symlink(await readlink(s), d);
        await this.setMeta(d, st);
      });
    }
    if (st.isFIFO()) {
      return this.limit.run(async () => {
        // Node cannot make a fifo; the coreutils command can, without privileges.
        await run('mkfifo', ['--', d], { timeout: CHILD_TIMEOUT_MS });
        await this.setMeta(d, st);
      });
    }
    this.skipped++;
  }

  private async copyFile(src: string, dst: string, st: BigIntStats): Promise<void> {
    if (st.nlink > 1n) {
      const key = `${st.dev}:${st.ino}`;
      const first = this.inodes.get(key);
      if (first) {
        // Waits without holding a slot: the first copy may still need one.
        const target = await first;
        await this.limit.run(() => link(target, dst));
        return;
      }
      const done = this.limit.run(() => this.copyData(src, dst, st)).then(() => dst);
      this.inodes.set(key, done);
      await done;
      return;
    }
    await this.limit.run(() => this.copyData(src, dst, st));
  }

  private async copyData(src: string, dst: string, st: BigIntStats): Promise<void> {
    this.checkAborted();
    // A reflink where the file system can, a plain copy otherwise; never overwrites.
    await copyFile(src, dst, fsc.COPYFILE_FICLONE | fsc.COPYFILE_EXCL);
    await this.setMeta(dst, st);
  }
}

/**
 * Runs `fn` over the items with at most `width` at a time (so a huge directory is not turned into as many
 * pending promises at once); the first failure wins after the running ones settle.
 */
async function pool<T>(items: readonly T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { err: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (next < items.length && failure === undefined) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
  if (failure) throw failure.err;
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
    await copyTreeXattrs(src, dst, opts.xattrs);
  } catch (err) {
    if (err instanceof StrataError) throw err;
    throw internal(`copying of parent failed: ${messageOf(err)}`, { cause: err });
  }
  return { entries: copier.entries, skipped: copier.skipped };
}
