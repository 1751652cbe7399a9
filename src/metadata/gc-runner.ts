// Runs garbage collection: the metadata mark-and-sweep (src/metadata/gc.ts, in slices between which the
// daemon serves requests) decides which records go, then
// the content store is swept of every blob file no namespace holds (ContentStore.sweep), and the
// snapshotters of every directory no snapshot record names. Deletions schedule a background run (debounced,
// and paced so collection takes a bounded share of the time), and so do many writes without a deletion, as
// containerd's mutation_threshold; synchronous deletes (`Images.Delete{sync}`, `Leases.Delete{sync}`) wait
// for a run that starts after their change.
import type { Logger } from 'pino';
import type { ContentStore } from '../content/store.ts';
import { aborted, messageOf } from '../errors.ts';
import type { Digest } from '../oci/digest.ts';
import type { MetadataDb } from './db.ts';
import { collectGarbageSliced, type GcResult } from './gc.ts';

export interface GcStats {
  /** Namespace memberships of content removed. */
  content: number;
  /** Blob files deleted from disk: those this run orphaned and any other file no namespace holds. */
  blobsDeleted: number;
  /** Bytes of the blob files deleted. */
  blobBytesDeleted: number;
  leases: number;
  ingests: number;
  snapshots: number;
  /** Wall time of the whole run, milliseconds. */
  ms: number;
  /** Turns the metadata collection took on the event loop, other requests served in between. */
  slices: number;
  /** The longest of those turns, milliseconds: the longest the collection held everything else up. */
  longestSliceMs: number;
}

export interface GcRunnerOptions {
  db: MetadataDb;
  content: ContentStore;
  logger: Logger;
  /** Wait this long after a deletion before a background run, gathering further deletions. Default 100 ms. */
  delayMs?: number;
  /** Share of wall time background collection may take; the next run waits accordingly. Default 0.02. */
  pauseThreshold?: number;
  /** Upper bound on the wait the pause threshold imposes. Default 5 s. */
  maxDelayMs?: number;
  /**
   * Committed writes after which a background run is scheduled though nothing was deleted (what expired
   * and what was written unheld goes then). Default 100, containerd's mutation_threshold.
   */
  mutationThreshold?: number;
  /** Time the metadata collection runs before it lets other work run (collectGarbageSliced). Default 4 ms. */
  sliceMs?: number;
  /** Called after every run, for metrics. */
  onRun?: (stats: GcStats, result: GcResult) => void;
  /**
   * Called for each ingest record the collection removed (expired, no lease), so the owner of the ingest
   * data on disk can delete it. Errors are logged.
   */
  removeIngest?: (namespace: string, ref: string) => Promise<void>;
  /**
   * Called after every run with the snapshot records it removed (maybe none), so the snapshotters delete
   * each directory no record names: those of the collected records, and any a failed removal or a crash
   * left behind. Awaited (a synchronous delete waits for the space); errors are logged.
   */
  removeSnapshots?: (removed: GcResult['snapshots']) => Promise<void>;
}

export class GcRunner {
  private readonly db: MetadataDb;
  private readonly content: ContentStore;
  private readonly blobHeld: (d: Digest) => boolean;
  private readonly logger: Logger;
  private readonly delayMs: number;
  private readonly pauseThreshold: number;
  private readonly maxDelayMs: number;
  private readonly mutationThreshold: number;
  private readonly sliceMs: number | undefined;
  /** Writes since the last run; those made while it ran count as seen by it. */
  private mutations = 0;
  /** A run is under way: writes now, its own sweep transactions included, count as seen by it. */
  private collecting = false;
  private readonly onRun: GcRunnerOptions['onRun'];
  private readonly removeIngest: GcRunnerOptions['removeIngest'];
  private readonly removeSnapshots: GcRunnerOptions['removeSnapshots'];
  private readonly unsubscribe: () => void;
  /** The run in progress (or the last one); runs never overlap. */
  private running: Promise<unknown> = Promise.resolve();
  /** A run queued behind the current one; callers arriving now share it. */
  private queued: Promise<GcStats> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private lastEnd = 0;
  private lastMs = 0;
  private closed = false;
  /** Aborted by close(): a collection under way stops between two of its slices. */
  private readonly stop = new AbortController();

  constructor(opts: GcRunnerOptions) {
    this.db = opts.db;
    this.logger = opts.logger;
    this.content = opts.content;
    this.blobHeld = blobHeld(opts.db);
    this.delayMs = opts.delayMs ?? 100;
    this.pauseThreshold = opts.pauseThreshold ?? 0.02;
    this.maxDelayMs = opts.maxDelayMs ?? 5000;
    this.onRun = opts.onRun;
    this.removeIngest = opts.removeIngest;
    this.removeSnapshots = opts.removeSnapshots;
    this.mutationThreshold = opts.mutationThreshold ?? 100;
    this.sliceMs = opts.sliceMs;
    const unsubscribeDirty = opts.db.onDirty(() => this.schedule());
    const unsubscribeMutation = opts.db.onMutation(() => {
      if (!this.collecting && ++this.mutations >= this.mutationThreshold) this.schedule();
    });
    this.unsubscribe = () => {
      unsubscribeDirty();
      unsubscribeMutation();
    };
  }

  /** Asks for a background run soon; many calls before it starts make one run. */
  schedule(): void {
    if (this.closed || this.timer || this.queued) return;
    const paced = this.lastMs / this.pauseThreshold - (Date.now() - this.lastEnd);
    const wait = Math.min(this.maxDelayMs, Math.max(this.delayMs, paced));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.collect().catch((err: unknown) => {
        if (!this.closed) this.logger.error({ err: messageOf(err) }, 'background garbage collection failed');
      });
    }, wait);
    this.timer.unref();
  }

  /**
   * Runs a collection that starts after this call and resolves when it is done, blob files included.
   * Concurrent callers waiting behind the same running collection share the next one.
   */
  collect(): Promise<GcStats> {
    if (this.closed) return Promise.reject(new Error('garbage collector is closed'));
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (!this.queued) {
      const next = this.running.then(() => {
        this.queued = undefined;
        return this.runOnce();
      });
      this.queued = next;
      this.running = next.catch(() => {});
    }
    return this.queued;
  }

  /**
   * Stops scheduling and stops a run in progress between two slices of its metadata collection (so a
   * shutdown need not wait for a collection of a large database); its callers get an Aborted error.
   */
  async close(): Promise<void> {
    this.closed = true;
    this.unsubscribe();
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.stop.abort(aborted('garbage collector is closed: collection stopped'));
    await this.running;
  }

  private async runOnce(): Promise<GcStats> {
    this.collecting = true;
    try {
      return await this.collectOnce();
    } finally {
      this.collecting = false;
    }
  }

  private async collectOnce(): Promise<GcStats> {
    const start = performance.now();
    this.mutations = 0;
    // Blobs committed from here on (or by a writer holding its lock now) are not this run's to judge.
    const cutoff = await this.content.sweepCutoff(Date.now()).catch((err: unknown) => {
      this.logger.warn({ err: messageOf(err) }, 'cannot read the ref locks: no blob is swept this run');
      return undefined;
    });
    // In slices: requests are served meanwhile, and what they write is kept (see collection in gc.ts).
    const { result, stopped, slices, longestSliceMs } = await collectGarbageSliced(this.db, {
      ...(this.sliceMs !== undefined ? { sliceMs: this.sliceMs } : {}),
      signal: this.stop.signal,
    });
    if (stopped) {
      // Closing. The ingest records gone take their data along now: nothing would name it later. Blob
      // files and snapshot directories no record names wait for the next run, which removes all of those.
      await this.removeIngests(result.ingests);
      throw this.stop.signal.reason;
    }
    const swept =
      cutoff === undefined
        ? { deleted: 0, bytes: 0 }
        : await this.content.sweep({
            cutoffMs: cutoff,
            isHeld: this.blobHeld,
            warn: (what, msg) => this.logger.warn(what, msg),
          });
    await this.removeIngests(result.ingests);
    if (this.removeSnapshots) {
      await this.removeSnapshots(result.snapshots).catch((err: unknown) =>
        this.logger.warn({ err: messageOf(err) }, 'snapshot cleanup after collection failed'),
      );
    }
    const ms = performance.now() - start;
    // As containerd: writes during the run (its own included) count as seen by it.
    this.mutations = 0;
    this.lastMs = ms;
    this.lastEnd = Date.now();
    const stats: GcStats = {
      content: result.content.length,
      blobsDeleted: swept.deleted,
      blobBytesDeleted: swept.bytes,
      leases: result.leases.length,
      ingests: result.ingests.length,
      snapshots: result.snapshots.length,
      ms: Math.round(ms * 10) / 10,
      slices,
      longestSliceMs: Math.round(longestSliceMs * 10) / 10,
    };
    const removed = stats.content + stats.blobsDeleted + stats.leases + stats.ingests + stats.snapshots;
    if (removed > 0) this.logger.info(stats, 'garbage collected');
    else this.logger.debug(stats, 'garbage collection found nothing to remove');
    this.onRun?.(stats, result);
    return stats;
  }

  private async removeIngests(ingests: GcResult['ingests']): Promise<void> {
    if (!this.removeIngest) return;
    for (const g of ingests) {
      await this.removeIngest(g.namespace, g.ref).catch((err: unknown) =>
        this.logger.warn(
          { namespace: g.namespace, ref: g.ref, err: messageOf(err) },
          'ingest cleanup failed',
        ),
      );
    }
  }
}

/**
 * Whether a blob file is still needed, as containerd's metadata GC decides it: every blob file that no
 * namespace holds is deleted, whoever orphaned it (a collection, a Content.Delete, a crash between commit
 * and link). A blob no namespace holds is still spared when an ingest record names it as its expected
 * digest: a writer that shares bytes already on disk, or whose commit finds them there, links an old blob,
 * and its record (written in the same synchronous step that adds the membership) is what says so. What
 * remains is a writer that declared no digest, whose bytes equal an orphan being deleted at that moment:
 * its commit re-checks the bytes after linking and answers Unavailable ("try again").
 */
function blobHeld(db: MetadataDb): (d: Digest) => boolean {
  const member = db.sql.prepare('SELECT 1 FROM content WHERE digest = ? LIMIT 1');
  const expected = db.sql.prepare('SELECT 1 FROM ingests WHERE expected = ? LIMIT 1');
  return (d) => member.get(d) !== undefined || expected.get(d) !== undefined;
}
