// copyTree's walk (copy-tree.ts): what the copy worker (copy-worker.ts) runs. Extended attributes are not
// its part: copyTree restores them after the walk.
import { execFileSync } from 'node:child_process';
import {
  type BigIntStats,
  chmodSync as chmod,
  copyFileSync as copyFile,
  constants as fsc,
  lchownSync as lchown,
  linkSync as link,
  lstatSync as lstat,
  lutimesSync as lutimes,
  mkdirSync as mkdir,
  readdirSync as readdir,
  readlinkSync as readlink,
  symlinkSync as symlink,
} from 'node:fs';
import { join } from 'node:path';
import { aborted, internal, messageOf, StrataError } from '../../errors.ts';

const CHILD_TIMEOUT_MS = 10_000;

export interface CopyTreeResult {
  entries: number;
  /** Devices and sockets not copied. */
  skipped: number;
}

const seconds = (ns: bigint): number => Number(ns) / 1e9;

/**
 * The walk itself, with synchronous file-system calls: it runs on a worker thread (copy-worker.ts), where
 * a call costs microseconds instead of a thread-pool round trip (each entry takes about five).
 */
class TreeCopier {
  readonly chown: boolean;
  readonly isAborted: () => boolean;
  entries = 0;
  skipped = 0;
  /** dev:ino → the copy's path, for files that share an inode inside the tree. */
  private readonly inodes = new Map<string, string>();

  constructor(chown: boolean, isAborted: () => boolean) {
    this.chown = chown;
    this.isAborted = isAborted;
  }

  private checkAborted(): void {
    if (this.isAborted()) throw aborted('snapshot copy aborted');
  }

  /** Owner, then mode (chown clears setuid), then times; symlinks get owner and times only. */
  private setMeta(path: string, st: BigIntStats): void {
    if (this.chown) lchown(path, Number(st.uid), Number(st.gid));
    if (!st.isSymbolicLink()) chmod(path, Number(st.mode) & 0o7777);
    lutimes(path, seconds(st.atimeNs), seconds(st.mtimeNs));
  }

  /** Copies the children of `src` into the existing `dst`, then gives `dst` the metadata `st`. */
  copyDir(src: string, dst: string, st: BigIntStats): void {
    this.checkAborted();
    for (const name of readdir(src)) this.copyEntry(join(src, name), join(dst, name));
    // Last, so creating the children does not change the directory's times.
    this.setMeta(dst, st);
  }

  private copyEntry(s: string, d: string): void {
    this.checkAborted();
    const st = lstat(s, { bigint: true });
    this.entries++;
    if (st.isDirectory()) {
      mkdir(d, { mode: 0o700 });
      this.copyDir(s, d, st);
    } else if (st.isFile()) {
      const key = st.nlink > 1n ? `${st.dev}:${st.ino}` : undefined;
      const first = key === undefined ? undefined : this.inodes.get(key);
      if (first !== undefined) {
        link(first, d);
        return;
      }
      // A reflink where the file system can, a plain copy otherwise; never overwrites.
      copyFile(s, d, fsc.COPYFILE_FICLONE | fsc.COPYFILE_EXCL);
      this.setMeta(d, st);
      if (key !== undefined) this.inodes.set(key, d);
    } else if (st.isSymbolicLink()) {
      symlink(readlink(s), d);
      this.setMeta(d, st);
    } else if (st.isFIFO()) {
      // Node cannot make a fifo; the coreutils command can, without privileges.
      execFileSync('mkfifo', ['--', d], { timeout: CHILD_TIMEOUT_MS, stdio: 'ignore' });
      this.setMeta(d, st);
    } else {
      this.skipped++;
    }
  }
}

/** copyTree's walk, in the calling thread with synchronous calls: only for a worker thread. */
export function copyTreeInThread(
  src: string,
  dst: string,
  chown: boolean,
  isAborted: () => boolean,
): CopyTreeResult {
  const copier = new TreeCopier(chown, isAborted);
  try {
    const st = lstat(src, { bigint: true });
    if (!st.isDirectory()) throw internal(`snapshot copy: ${src} is not a directory`);
    copier.copyDir(src, dst, st);
  } catch (err) {
    if (err instanceof StrataError) throw err;
    throw internal(`copying of parent failed: ${messageOf(err)}`, { cause: err });
  }
  return { entries: copier.entries, skipped: copier.skipped };
}
