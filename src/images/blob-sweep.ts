// The content half of garbage collection, as containerd's metadata GC does it: after the metadata sweep,
// every blob file that no namespace holds is deleted from the shared disk store, whoever orphaned it (a
// collection, a Content.Delete, a crash between commit and link). One streaming pass over blobs/, no list
// of the store in memory.
//
// When a blob is spared although no namespace holds it (the rule, and why it is enough):
// 1. An ingest record names it as its expected digest. A writer that shares bytes already on disk, or whose
//    commit finds them there, links an old blob; its record (which goes in the same synchronous step that
//    adds the membership) is what says so.
// 2. Its file is not older than the cutoff: the run's start, or the time the oldest ref lock still held by
//    a live process was taken, if earlier. The store stamps a blob's mtime at commit, after taking the
//    ref's lock and before linking it into blobs/, and the lock is released only after that link, with no
//    I/O between the release and the namespace link. So a commit that is still linking its new bytes
//    either held its lock when the run started (the cutoff is at or before the stamp) or took it later
//    (the stamp is after the start). A writer held open for long makes the cutoff old, so blobs committed
//    since it opened wait for a later run: conservative, never wrong.
// The "is it held?" checks, the stat and the unlink of one blob run synchronously, so no request handler
// of this process can link the digest in between. What remains is a writer that declared no digest, whose
// bytes equal an orphan already on disk and being deleted at that moment: its commit re-checks the bytes
// after linking and answers Unavailable ("try again"), so a namespace never points at missing bytes.
import { lstatSync, unlinkSync } from 'node:fs';
import { lstat, opendir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { isENOENT } from '../content/fs-util.ts';
import { ALGORITHMS, type Layout } from '../content/layout.ts';
import { type LockOwner, ownerAlive } from '../content/ref-lock.ts';
import { messageOf } from '../errors.ts';
import type { MetadataDb, Statement } from '../metadata/db.ts';
import { type Digest, isDigest } from '../oci/digest.ts';

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

export class BlobSweeper {
  private readonly layout: Layout;
  private readonly logger: Logger;
  private readonly held: Statement;
  private readonly expectedByIngest: Statement;

  constructor(deps: { db: MetadataDb; layout: Layout; logger: Logger }) {
    this.layout = deps.layout;
    this.logger = deps.logger;
    this.held = deps.db.sql.prepare('SELECT 1 FROM content WHERE digest = ? LIMIT 1');
    this.expectedByIngest = deps.db.sql.prepare('SELECT 1 FROM ingests WHERE expected = ? LIMIT 1');
  }

  /**
   * The mtime (ms since the epoch) a blob must be older than to be deleted by a run starting at `startMs`:
   * call it at the start of the run, before the sweep.
   */
  async cutoff(startMs: number): Promise<number> {
    let cut = startMs;
    let names: string[];
    try {
      names = await readdir(this.layout.locksDir);
    } catch (err) {
      if (isENOENT(err)) return cut;
      throw err;
    }
    for (const name of names) {
      if (!name.endsWith('.lock')) continue;
      let owner: Awaited<ReturnType<typeof lockOwner>>;
      try {
        owner = await lockOwner(join(this.layout.locksDir, name));
      } catch (err) {
        if (isENOENT(err)) continue; // released meanwhile: its commit, if any, is linked
        throw err;
      }
      // A lock of a dead process guards no commit; one that names no owner is taken as live.
      const live = owner.pid === undefined || ownerAlive(owner as LockOwner);
      if (live && owner.since < cut) cut = owner.since;
    }
    return cut;
  }

  /**
   * Deletes every blob file that nothing holds and that is older than `cutoffMs`. A directory that cannot
   * be read is logged and skipped: what is left waits for the next run.
   */
  async sweep(cutoffMs: number): Promise<SweepResult> {
    const out: SweepResult = { deleted: 0, bytes: 0 };
    for (const alg of ALGORITHMS) {
      const dirPath = this.layout.blobDir(alg);
      try {
        // Read in small batches; the loop closes the directory when it ends or throws.
        for await (const ent of await opendir(dirPath)) {
          const d = `${alg}:${ent.name}`;
          if (!isDigest(d)) continue;
          const size = this.deleteIfOrphan(d, join(dirPath, ent.name), cutoffMs);
          if (size !== undefined) {
            out.deleted++;
            out.bytes += size;
          }
        }
      } catch (err) {
        if (!isENOENT(err)) this.logger.warn({ dir: dirPath, err: messageOf(err) }, 'cannot sweep blobs');
      }
    }
    return out;
  }

  /** Synchronous from the checks to the unlink (see the top of the file). Returns the size deleted. */
  private deleteIfOrphan(d: Digest, path: string, cutoffMs: number): number | undefined {
    if (this.held.get(d) !== undefined) return undefined;
    if (this.expectedByIngest.get(d) !== undefined) return undefined;
    try {
      const st = lstatSync(path);
      if (!st.isFile() || st.mtimeMs >= cutoffMs) return undefined;
      unlinkSync(path);
      return st.size;
    } catch (err) {
      if (!isENOENT(err)) this.logger.warn({ digest: d, err: messageOf(err) }, 'cannot delete blob');
      return undefined;
    }
  }
}
