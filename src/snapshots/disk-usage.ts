// Disk usage of a snapshot directory as containerd reports it: every inode once (hard links count once),
// the root included, size in allocated 512-byte blocks rather than apparent length.
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { aborted } from '../errors.ts';
import type { SnapshotUsage } from '../metadata/snapshots.ts';
import { decodeName, fsPath } from './byte-names.ts';

const BLOCK_UNIT = 512n;

/**
 * lstat calls in flight per directory: a commit walks the whole snapshot, and one call after another
 * made that a thread-pool round trip per entry on the unpack's critical path.
 */
const WALK_WIDTH = 16;

export interface DiskUsageOptions {
  signal?: AbortSignal;
  /**
   * Inodes (`dev:ino`) whose every name counts as an inode of its own: links to one shared device that
   * stand for what containerd makes one device node each for (the overlayfs whiteouts Strata links).
   */
  eachLinkCounts?: (key: string) => boolean;
}

export async function diskUsage(root: string, opts: DiskUsageOptions = {}): Promise<SnapshotUsage> {
  const { signal, eachLinkCounts } = opts;
  const seen = new Set<string>();
  let size = 0n;
  let extraInodes = 0;
  const visit = async (path: string): Promise<void> => {
    if (signal?.aborted) throw aborted('disk usage walk aborted', { cause: signal.reason });
    const st = await lstat(fsPath(path), { bigint: true });
    const key = `${st.dev}:${st.ino}`;
    if (!seen.has(key)) {
      seen.add(key);
      size += st.blocks * BLOCK_UNIT;
    } else if (eachLinkCounts?.(key)) {
      extraInodes++;
      size += st.blocks * BLOCK_UNIT;
    }
    if (st.isDirectory()) {
      // Names that are not UTF-8 must reach lstat as their bytes.
      const names = (await readdir(fsPath(path), { encoding: 'buffer' })).map(decodeName);
      let next = 0;
      let failure: { err: unknown } | undefined;
      const worker = async (): Promise<void> => {
        while (next < names.length && !failure) {
          try {
            await visit(join(path, names[next++]!));
          } catch (err) {
            failure ??= { err };
          }
        }
      };
      // The first failure wins once the running visits have settled.
      await Promise.all(Array.from({ length: Math.min(WALK_WIDTH, names.length) }, worker));
      if (failure) throw failure.err;
    }
  };
  await visit(root);
  return { size: Number(size), inodes: seen.size + extraInodes };
}
