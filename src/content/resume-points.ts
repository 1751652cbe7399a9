// The running digests of ingests whose writer closed before the commit, so the next writer of the ref
// goes on from there instead of reading all the data back to hash it. A registry upload opens a writer
// per request: without this, the PUT that ends a 45 MiB PATCH re-hashed 45 MiB from disk. A point holds
// only while the data file is as the writer left it (same inode, size and modification time); anything
// else falls back to hashing the file. Memory only, bounded: the oldest points go first.
import type { Stats } from 'node:fs';
import type { Algorithm, Digester } from '../oci/digest.ts';

const DEFAULT_MAX_POINTS = 256;

interface Point {
  digester: Digester;
  ino: number;
  size: number;
  mtimeMs: number;
}

type FileState = Pick<Stats, 'ino' | 'size' | 'mtimeMs'>;

export class ResumePoints {
  private readonly points = new Map<string, Point>();
  private readonly max: number;

  constructor(max = DEFAULT_MAX_POINTS) {
    this.max = max;
  }

  /** Keeps `digester` (which nothing updates any more) for the ref's data file in state `file`. */
  remember(ref: string, digester: Digester, file: FileState): void {
    if (digester.size !== file.size) return;
    this.points.delete(ref);
    this.points.set(ref, { digester, ino: file.ino, size: file.size, mtimeMs: file.mtimeMs });
    if (this.points.size > this.max) this.points.delete(this.points.keys().next().value!);
  }

  /** The ref's digester when its data file is still in state `file` (used once: it is removed). */
  take(ref: string, file: FileState, algorithm: Algorithm): Digester | undefined {
    const p = this.points.get(ref);
    if (p === undefined) return undefined;
    this.points.delete(ref);
    const same = p.ino === file.ino && p.size === file.size && p.mtimeMs === file.mtimeMs;
    return same && p.digester.algorithm === algorithm ? p.digester : undefined;
  }

  forget(ref: string): void {
    this.points.delete(ref);
  }
}
