// Deciding whether a path is unchanged between two trees, the way containerd's differ does: metadata
// first, and file contents only when the mtimes cannot tell (whole-second mtimes may have been truncated
// by a tar round trip, sub-microsecond ones by a copy).
import { type BigIntStats, constants as fsc } from 'node:fs';
import { open, readlink } from 'node:fs/promises';
import { fsPath } from '../byte-names.ts';

const CHUNK = 64 * 1024;

/** Linux (glibc) dev_t layout. */
export function devMajor(rdev: bigint): number {
  return Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
}
export function devMinor(rdev: bigint): number {
  return Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn));
}

async function sameContent(a: string, b: string): Promise<boolean> {
  const fa = await open(fsPath(a), fsc.O_RDONLY | fsc.O_NOFOLLOW);
  try {
    const fb = await open(fsPath(b), fsc.O_RDONLY | fsc.O_NOFOLLOW);
    try {
      const ba = Buffer.allocUnsafe(CHUNK);
      const bb = Buffer.allocUnsafe(CHUNK);
      for (;;) {
        const ra = await fa.read(ba, 0, CHUNK, null);
        let got = 0;
        // Regular files return full reads except at the end; loop anyway to line the two up.
        while (got < ra.bytesRead) {
          const rb = await fb.read(bb, got, ra.bytesRead - got, null);
          if (rb.bytesRead === 0) return false;
          got += rb.bytesRead;
        }
        if (ra.bytesRead === 0) return (await fb.read(bb, 0, 1, null)).bytesRead === 0;
        if (!ba.subarray(0, ra.bytesRead).equals(bb.subarray(0, ra.bytesRead))) return false;
      }
    } finally {
      await fb.close();
    }
  } finally {
    await fa.close();
  }
}

/**
 * How far apart two mtimes of one unchanged file can be after a copy through Node's utimes (the native
 * snapshotter's), which takes seconds as a double and so keeps them only to a fraction of a microsecond.
 * Within this the contents decide, so a wider margin costs reads, never a missed change.
 */
const COPY_MTIME_SLACK_NS = 2_000n;

/** True when `upper` holds nothing a layer would need to record over `lower`. */
export async function sameNode(
  lowerPath: string,
  l: BigIntStats,
  upperPath: string,
  u: BigIntStats,
): Promise<boolean> {
  if (l.dev === u.dev && l.ino === u.ino) return true;
  if (l.mode !== u.mode || l.uid !== u.uid || l.gid !== u.gid) return false;
  // As containerd: a directory's times are no change of its own (its entries' changes are recorded).
  if (u.isDirectory()) return true;
  const apart = l.mtimeNs > u.mtimeNs ? l.mtimeNs - u.mtimeNs : u.mtimeNs - l.mtimeNs;
  if (apart >= COPY_MTIME_SLACK_NS) return false;
  if (u.isSymbolicLink()) {
    const target = (p: string) => readlink(fsPath(p), { encoding: 'buffer' });
    return (await target(lowerPath)).equals(await target(upperPath));
  }
  if (u.isCharacterDevice() || u.isBlockDevice()) return l.rdev === u.rdev;
  if (!u.isFile()) return true;
  if (l.size !== u.size) return false;
  if (apart === 0n && u.mtimeNs % 1_000_000_000n !== 0n) return true;
  return sameContent(lowerPath, upperPath);
}
