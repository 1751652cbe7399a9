// Deleting every blob file that nothing holds (the content half of garbage collection), in one streaming
// pass over blobs/, with no list of the store in memory. The caller says what is held; the store knows
// which files a commit in flight may still be linking, and spares them:
//
// A blob is only deleted when its file is older than the cutoff: the run's start, or the time the oldest
// ref lock still held by a live process was taken, if earlier. A commit stamps the blob's mtime after
// taking the ref's lock and before linking it into blobs/, and releases the lock only after that link. So
// a commit that is still linking its new bytes either held its lock when the run started (the cutoff is at
// or before the stamp) or took it later (the stamp is after the start). A writer held open for long makes
// the cutoff old, so blobs committed since it opened wait for a later run: conservative, never wrong.
//
// The "is it held?" check, the stat and the unlink of one blob run synchronously, so nothing else in this
// process (a request linking the digest into a namespace) can run in between.
import { lstatSync, unlinkSync } from 'node:fs';
import { lstat, opendir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { messageOf } from '../errors.ts';
import { type Digest, isDigest } from '../oci/digest.ts';
import { isENOENT } from './fs-util.ts';
import { ALGORITHMS, type Layout } from './layout.ts';
import { type LockOwner, lockHeld } from './ref-lock.ts';

export interface SweepOptions {
  /** From sweepCutoff, taken when the run started. Files this new or newer are kept. */
  cutoffMs: number;
  /** Whether something still needs the blob; called synchronously right before its unlink. */
  isHeld: (d: Digest) => boolean;
  /** Told about a directory or file that could not be swept; what is left waits for the next run. */
  warn?: (what: { dir?: string; digest?: Digest; err: string }, msg: string) => void;
}

export interface SweepResult {
  /** Blob files deleted. */
  deleted: number;
  /** Their sizes, added up. */
  bytes: number;
}

/** Reads a lock file's owner (ENOENT when it is gone); one that does not parse counts from its mtime. */
async function lockOwner(path: string): Promise<Pick<LockOwner, 'since'> & Partial<LockOwner>> {
  const text = await readFile(path, 'utf8');
  try {
    const v = JSON.parse(text) as Partial<LockOwner>;
    if (Number.isSafeInteger(v.pid) && typeof v.since === 'number') return v as LockOwner;
  } catch {
    // fall through
  }
  return { since: (await lstat(path)).mtimeMs };
}

/** The mtime (ms since the epoch) a blob must be older than to be swept by a run starting at `startMs`. */
export async function sweepCutoff(layout: Layout, startMs: number): Promise<number> {
  let cut = startMs;
  let names: string[];
  try {
    names = await readdir(layout.locksDir);
  } catch (err) {
    if (isENOENT(err)) return cut;
    throw err;
  }
  for (const name of names) {
    if (!name.endsWith('.lock')) continue;
    let owner: Awaited<ReturnType<typeof lockOwner>>;
    try {
      owner = await lockOwner(join(layout.locksDir, name));
    } catch (err) {
      if (isENOENT(err)) continue; // released meanwhile: its commit, if any, is linked
      throw err;
    }
    // A lock of a dead process, or one this process released but could not remove, guards no commit; one
    // that names no owner is taken as live.
    const live = owner.pid === undefined || lockHeld(owner as LockOwner);
    if (live && owner.since < cut) cut = owner.since;
  }
  return cut;
}

export async function sweepBlobs(layout: Layout, o: SweepOptions): Promise<SweepResult> {
  const out: SweepResult = { deleted: 0, bytes: 0 };
  for (const alg of ALGORITHMS) {
    const dir = layout.blobDir(alg);
    try {
      // Read in small batches; the loop closes the directory when it ends or throws.
      for await (const ent of await opendir(dir)) {
        const d = `${alg}:${ent.name}`;
        if (!isDigest(d)) continue;
        const size = deleteIfOrphan(d, join(dir, ent.name), o);
        if (size !== undefined) {
          out.deleted++;
          out.bytes += size;
        }
      }
    } catch (err) {
      if (!isENOENT(err)) o.warn?.({ dir, err: messageOf(err) }, 'cannot sweep blobs');
    }
  }
  return out;
}

/** Synchronous from the check to the unlink (see the top of the file). Returns the size deleted. */
function deleteIfOrphan(d: Digest, path: string, o: SweepOptions): number | undefined {
  if (o.isHeld(d)) return undefined;
  try {
    const st = lstatSync(path);
    if (!st.isFile() || st.mtimeMs >= o.cutoffMs) return undefined;
    unlinkSync(path);
    return st.size;
  } catch (err) {
    if (!isENOENT(err)) o.warn?.({ digest: d, err: messageOf(err) }, 'cannot delete blob');
    return undefined;
  }
}
