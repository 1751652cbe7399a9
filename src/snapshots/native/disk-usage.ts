// Disk usage of a snapshot directory as containerd reports it: every inode once (hard links count once),
// the root included, size in allocated 512-byte blocks rather than apparent length.
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { aborted } from '../../errors.ts';
import type { SnapshotUsage } from '../store.ts';

const BLOCK_UNIT = 512n;

export async function diskUsage(root: string, signal?: AbortSignal): Promise<SnapshotUsage> {
  const seen = new Set<string>();
  let size = 0n;
  const visit = async (path: string): Promise<void> => {
    if (signal?.aborted) throw aborted('disk usage walk aborted', { cause: signal.reason });
    const st = await lstat(path, { bigint: true });
    const key = `${st.dev}:${st.ino}`;
    if (!seen.has(key)) {
      seen.add(key);
      size += st.blocks * BLOCK_UNIT;
    }
    if (st.isDirectory()) {
      for (const name of await readdir(path)) await visit(join(path, name));
    }
  };
  await visit(root);
  return { size: Number(size), inodes: seen.size };
}
