// copyTree's walk (copy-tree.ts): what the copy worker (copy-worker.ts) runs. Extended attributes are not
// its part: copyTree restores them after the walk.
import { execFileSync } from 'node:child_process';
import {
  type BigIntStats,
  copyFileSync,
  constants as fsc,
  lstatSync,
  readdirSync,
  renameSync,
} from 'node:fs';
import { join } from 'node:path';
import { aborted, internal, messageOf, StrataError } from '../../errors.ts';
import { chmod, lchown, link, lutimes, mkdir, readlink, symlink } from '../apply/fs-names.ts';
import { decodeName, fsPath, hasEscapes } from '../byte-names.ts';
import { canMakeDevices } from '../devices.ts';
import { devMajor, devMinor } from '../diff/compare.ts';

const CHILD_TIMEOUT_MS = 10_000;

export interface CopyTreeResult {
  entries: number;
  /** Sockets not copied, and devices when this process cannot make them. */
  skipped: number;
}

const seconds = (ns: bigint): number => Number(ns) / 1e9;

/**
 * The walk itself, with synchronous file-system calls: it runs on a worker thread (copy-worker.ts), where
 * a call costs microseconds instead of a thread-pool round trip (each entry takes about five).
 */
class TreeCopier {
  readonly root: string;
  readonly chown: boolean;
  readonly devices: boolean;
  readonly isAborted: () => boolean;
  /** Temporary names handed out by viaPlainName. */
  private temps = 0;
  entries = 0;
  skipped = 0;
  /** dev:ino → the copy's path, for files that share an inode inside the tree. */
  private readonly inodes = new Map<string, string>();

  constructor(root: string, chown: boolean, isAborted: () => boolean) {
    this.root = root;
    this.chown = chown;
    // As containerd's copy: devices too, where this process can make them.
    this.devices = chown && canMakeDevices();
    this.isAborted = isAborted;
  }

  /**
   * Runs a command that makes the node at `path`. A child's arguments are UTF-8 strings, so a name that is
   * not valid UTF-8 is made under a plain temporary name beside it and renamed into place.
   */
  private viaPlainName(path: string, cmd: string, args: (p: string) => string[]): void {
    // The copy's root has a plain name (the snapshotter made it); a parent on the way may not.
    const target = hasEscapes(path) ? join(this.root, `.strata-new-${process.pid}-${++this.temps}`) : path;
    execFileSync(cmd, args(target), { timeout: CHILD_TIMEOUT_MS, stdio: 'ignore' });
    if (target !== path) renameSync(target, fsPath(path));
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
    // Names as bytes (byte-names.ts): a name that is not valid UTF-8 is copied as it is.
    for (const name of readdirSync(fsPath(src), { encoding: 'buffer' })) {
      const n = decodeName(name);
      this.copyEntry(join(src, n), join(dst, n));
    }
    // Last, so creating the children does not change the directory's times.
    this.setMeta(dst, st);
  }

  private copyEntry(s: string, d: string): void {
    this.checkAborted();
    const st = lstatSync(fsPath(s), { bigint: true });
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
      copyFileSync(fsPath(s), fsPath(d), fsc.COPYFILE_FICLONE | fsc.COPYFILE_EXCL);
      this.setMeta(d, st);
      if (key !== undefined) this.inodes.set(key, d);
    } else if (st.isSymbolicLink()) {
      symlink(readlink(s), d);
      this.setMeta(d, st);
    } else if (st.isFIFO()) {
      // Node cannot make a fifo; the coreutils command can, without privileges.
      this.viaPlainName(d, 'mkfifo', (p) => ['--', p]);
      this.setMeta(d, st);
    } else if ((st.isCharacterDevice() || st.isBlockDevice()) && this.devices) {
      const kind = st.isCharacterDevice() ? 'c' : 'b';
      const numbers = [String(devMajor(st.rdev)), String(devMinor(st.rdev))];
      this.viaPlainName(d, 'mknod', (p) => ['-m', '000', '--', p, kind, ...numbers]);
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
  const copier = new TreeCopier(dst, chown, isAborted);
  try {
    const st = lstatSync(fsPath(src), { bigint: true });
    if (!st.isDirectory()) throw internal(`snapshot copy: ${src} is not a directory`);
    copier.copyDir(src, dst, st);
  } catch (err) {
    if (err instanceof StrataError) throw err;
    throw internal(`copying of parent failed: ${messageOf(err)}`, { cause: err });
  }
  return { entries: copier.entries, skipped: copier.skipped };
}
