// Copying a committed snapshot's tree into a new snapshot directory, as containerd's native snapshotter
// does on Prepare: modes (setuid and sticky bits included), owners, times, symlinks verbatim, fifos, and
// files that share an inode inside the tree stay hard-linked, extended attributes, devices where this
// process can make them (root outside a user namespace, as containerd), names byte for byte. Sockets are
// skipped, as containerd's copy skips them. Symlinks are never followed: every path is reached through
// directories lstat saw.
import { aborted, internal, messageOf } from '../../errors.ts';
import { dumpTree, restoreTreeXattrs, type XattrDumper } from '../xattr.ts';
import { CopyRunner } from './copy-runner.ts';
import type { CopyTreeResult } from './tree-copier.ts';

export interface CopyTreeOptions {
  signal?: AbortSignal;
  /** Change owners to the source's. Default: when running as root. */
  chown?: boolean;
  /** Dumps the source's extended attributes; without one, getfattr runs as a process of its own. */
  xattrs?: XattrDumper;
  /** The worker thread to copy on; without one the copy starts a worker of its own and stops it after. */
  runner?: CopyRunner;
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
