// Copying a committed snapshot's tree into a new snapshot directory, as containerd's native snapshotter
// does on Prepare: modes (setuid and sticky bits included), owners, times, symlinks verbatim, fifos, and
// files that share an inode inside the tree stay hard-linked, extended attributes. Devices and sockets are
// skipped (creating devices needs privileges a snapshot copy should not rely on). Symlinks are never
// followed: every path is reached through directories lstat saw.
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
import { dumpTree, restoreTreeXattrs, type XattrDumper } from '../xattr.ts';
import { CopyRunner } from './copy-runner.ts';

const CHILD_TIMEOUT_MS = 10_000;

export interface CopyTreeOptions {
  signal?: AbortSignal;
  /** Change owners to the source's. Default: when running as root. */
  chown?: boolean;
  /** Dumps the source's extended attributes; without one, getfattr runs as a process of its own. */
  xattrs?: XattrDumper;
  /** The worker thread to copy on; without one the copy starts a worker of its own and stops it after. */
  runner?: CopyRunner;
}

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

/**
 * Copies the tree under `src` into the existing, empty directory `dst`, including the root directory's own
 * mode, owner and times.
 */
export async function copyTree(
  src: string,
  dst: string,
  opts: CopyTreeOptions = {},
): Promise<CopyTreeResult> {
  if (opts.signal?.aborted) throw aborted('snapshot copy aborted', { cause: opts.signal.reason });
  const runner = opts.runner ?? new CopyRunner();
  // The source is a committed tree: its attributes are dumped while the copy walks it.
  const dumping = dumpTree(src, opts.xattrs);
  dumping.catch(() => {}); // awaited after the copy; a failure meanwhile must not go unhandled
  let result: CopyTreeResult;
  try {
    result = await runner.copy(src, dst, opts.chown ?? process.getuid?.() === 0, opts.signal);
  } finally {
    if (!opts.runner) await runner.close();
  }
  try {
    await restoreTreeXattrs(src, dst, await dumping);
  } catch (err) {
    throw internal(`copying of parent failed: ${messageOf(err)}`, { cause: err });
  }
  return result;
}
