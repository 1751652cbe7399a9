// The facade's disk blob cache: blobs kept in a storage (cache-storage.ts: a content store of its own, or a
// namespace of the daemon's one content store; layout, ingests, verification, commit and deletion are the
// store's) plus an eviction policy (a byte cap, least recently used first) and one fill per
// digest at a time. A fill streams from its source into an ingest while any number of readers follow it,
// each from its own offset (Range), so the first client is served as the bytes arrive and late arrivals
// join instead of fetching again; the store hands out a blob's last byte only once it matched its digest.
// Entries being read or filled are never evicted. Caching is a wrapper around a blob: wrap() gives a Blob
// whose reads go through here. A blob found on disk at start is checked against its digest before it is
// first served (once, shared by the readers who ask meanwhile): a corrupt or truncated file is dropped and
// fetched again, so a client never gets its bytes. When the disk has no room for a blob, it is streamed
// from its source uncached rather than failing (paced-read.ts: a slow client holds no upstream connection
// while it catches up). A fill whose source went away (a registry restarting) keeps the bytes it got: the
// next fill of that blob resumes from there with a Range request. A fill whose disk write failed (no room
// after all, an I/O error, a read-only remount) keeps nothing, as those bytes cannot be trusted; its
// readers get the rest from the source uncached, as when there is no room; the same goes for a fill whose
// commit fails on the disk. A disk that fails for another reason than room (EIO, EROFS) still reports free
// space, so after such a failure no fill starts for a while (blobs are streamed uncached; a static layer,
// which has no source to be streamed from, is refused), and then one fill probes the disk; each failed
// probe doubles the pause. A blob the storage has bytes of without the cache holding it (the daemon's, in
// `strata up`) is linked in, not fetched.
import { addAbortSignal, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { appendStream } from '../../content/append-stream.ts';
import {
  aborted,
  dataLoss,
  deadlineExceeded,
  errorKind,
  failedPrecondition,
  isAlreadyExists,
  isDataLoss,
  isFailedPrecondition,
  isNotFound,
  messageOf,
  notFound,
  outOfRange,
  unavailable,
} from '../../errors.ts';
import type { Blob, ByteRange } from '../../oci/blob.ts';
import type { Descriptor } from '../../oci/descriptor.ts';
import { type Digest, VerifyingStream } from '../../oci/digest.ts';
import { type CacheStorage, type CacheWriter, DirCacheStorage } from './cache-storage.ts';
import { pacedRead } from './paced-read.ts';

/** `bypass`: not cached, streamed straight from the source (no room on the disk, or the disk failing). */
export type CacheOutcome = 'hit' | 'miss' | 'joined' | 'bypass';

export interface CacheEvents {
  /** A fill opened its source (once per attempt; a resume counts again). */
  onFetch?(digest: Digest, offset: number): void;
  onEvict?(digest: Digest, size: number): void;
  onFillError?(digest: Digest, err: unknown): void;
  /** A cached file was not the blob it is named after (it is dropped; the next read fetches again). */
  onCorrupt?(digest: Digest, err: unknown): void;
  /** The disk had no room for a blob, so blobs are streamed uncached (told once per such spell). */
  onNoRoom?(digest: Digest, free: number): void;
  /**
   * Writing to the disk failed for another reason than room: fills pause for `retryMs` (blobs are streamed
   * uncached). Told once per spell, not again for each failed probe.
   */
  onDiskFailing?(err: unknown, retryMs: number): void;
  /** A fill committed after a spell of disk failures: fills go on as before. */
  onDiskRecovered?(): void;
}

/** Fills are paused after the disk failed a write: why, since when, and when one fill probes it again. */
export interface DiskFailure {
  reason: string;
  since: Date;
  retryAt: Date;
  /** The current pause, doubled by each failed probe (up to MAX_DISK_RETRY_MS). */
  retryMs: number;
}

export interface BlobCacheOptions {
  /** Where the blobs are kept (closed by the cache's close); or `dir`, a content store of the cache's own. */
  storage?: CacheStorage;
  dir?: string;
  /** Byte cap over all cached blobs. A blob bigger than the cap is served and then dropped. */
  maxBytes: number;
  /** Times a broken fill resumes from the last byte written (default 3). */
  maxResumes?: number;
  /** A fill nobody reads any more is abandoned after this long (default 30 s). */
  idleFillMs?: number;
  /**
   * A fill whose source sends no byte for this long fails, whatever its retries and resumes would still
   * try (default 20 s): a silent host costs its readers this bound, not minutes.
   */
  stallMs?: number;
  /** The first pause of fills after the disk failed a write for another reason than room (default 15 s). */
  diskRetryMs?: number;
  events?: CacheEvents;
}

/** A blob the cache keeps until release(). */
export interface HeldBlob {
  digest: Digest;
  size: number;
  release(): void;
}

export interface CacheRead {
  stream: Readable;
  outcome: CacheOutcome;
}

type State = 'filling' | 'complete' | 'failed';

interface Entry {
  digest: Digest;
  size: number;
  state: State;
  /** The ingest a fill writes (unique per fill, so a new fill never waits for a failed one's lock). */
  ref: string;
  /** Settles once the fill's writer is open, so readers can follow it. */
  writing: Promise<void>;
  /** Settles once the blob is complete (resolved) or its fill failed (rejected). */
  done: Promise<void>;
  /** Bytes the fill has received. */
  received: number;
  readers: number;
  lastUsed: number;
  /** Known to match its digest: committed by this process, or checked once since start. */
  verified: boolean;
  /** The check in progress of a blob found at start: true if it matched. */
  checking?: Promise<boolean>;
  error?: Error;
  /** The fill failed writing to the disk: its readers go on from the source, uncached. */
  diskFailed?: boolean;
  /** The fill that probes a disk found failing (see BlobCache.diskDown). */
  probe?: boolean;
  abort: AbortController;
  idleTimer?: NodeJS.Timeout;
}

export const DEFAULT_STALL_MS = 20_000;
/** Interrupted fills kept for resuming; the oldest goes first. */
const MAX_PARTIALS = 32;
export const DEFAULT_DISK_RETRY_MS = 15_000;
/** The longest pause of fills on a failing disk. */
export const MAX_DISK_RETRY_MS = 5 * 60_000;

export class BlobCache {
  readonly maxBytes: number;
  private readonly storage: CacheStorage;
  private readonly maxResumes: number;
  private readonly idleFillMs: number;
  private readonly stallMs: number;
  private readonly events: CacheEvents;
  private readonly entries = new Map<Digest, Entry>();
  /** Interrupted fills whose bytes are kept for the next fill to resume: ingest ref and bytes, oldest first. */
  private readonly partials = new Map<Digest, { ref: string; bytes: number; closed: Promise<void> }>();
  /** Blobs found wrong whose stored bytes are being discarded: settles once they are gone. */
  private readonly discarding = new Map<Digest, Promise<void>>();
  private clock = 0;
  private fills = 0;
  private noRoom = false;
  /** Set while the disk is failing: no fill starts before `until`, then one probe at a time. */
  private diskDown:
    | { reason: string; since: number; retryMs: number; until: number; probing: boolean }
    | undefined;
  private readonly diskRetryMs: number;
  private total = 0;
  private closed = false;

  private constructor(storage: CacheStorage, options: BlobCacheOptions) {
    this.storage = storage;
    this.maxBytes = options.maxBytes;
    this.maxResumes = options.maxResumes ?? 3;
    this.idleFillMs = options.idleFillMs ?? 30_000;
    this.stallMs = options.stallMs ?? DEFAULT_STALL_MS;
    this.diskRetryMs = options.diskRetryMs ?? DEFAULT_DISK_RETRY_MS;
    this.events = options.events ?? {};
  }

  /** Opens the cache's storage, drops fills a previous run left, and indexes what is there. */
  static async open(options: BlobCacheOptions): Promise<BlobCache> {
    if (!Number.isSafeInteger(options.maxBytes) || options.maxBytes < 0) {
      throw failedPrecondition(
        `blob cache: maxBytes must be a non-negative integer, got ${options.maxBytes}`,
      );
    }
    if ((options.storage === undefined) === (options.dir === undefined)) {
      throw failedPrecondition('blob cache: give either a storage or a dir');
    }
    const storage = options.storage ?? (await DirCacheStorage.open(options.dir!));
    const cache = new BlobCache(storage, options);
    const found = await storage.load();
    // Oldest first: what was used last before a restart is evicted last.
    found.sort((a, b) => a.storedAt - b.storedAt);
    for (const f of found) cache.addComplete(f.digest, f.size, false);
    cache.evict();
    return cache;
  }

  /** Bytes held by complete blobs and reserved by fills. */
  get bytes(): number {
    return this.total;
  }

  /** Digests of complete blobs, least recently used first. */
  cachedDigests(): Digest[] {
    return [...this.entries.values()]
      .filter((e) => e.state === 'complete')
      .sort((a, b) => a.lastUsed - b.lastUsed)
      .map((e) => e.digest);
  }

  has(digest: Digest): boolean {
    return this.entries.get(digest)?.state === 'complete';
  }

  /** The size of a complete blob, or undefined when it is not cached. */
  sizeOf(digest: Digest): number | undefined {
    const e = this.entries.get(digest);
    return e?.state === 'complete' ? e.size : undefined;
  }

  /** Where the blobs are kept, for messages. */
  get where(): string {
    return this.storage.where;
  }

  /** Whether a blob can be written right now (readiness). */
  writable(): Promise<boolean> {
    return this.storage.writable();
  }

  /** Set while fills are paused because the disk failed a write (not for want of room). */
  get diskFailure(): DiskFailure | undefined {
    const d = this.diskDown;
    if (!d) return undefined;
    return { reason: d.reason, since: new Date(d.since), retryAt: new Date(d.until), retryMs: d.retryMs };
  }

  /**
   * `source` through the cache: reads are served from the cache, from a fill in progress, or from a new
   * fill out of `source`; `onRead` is told how each read was served.
   */
  wrap(source: Blob, onRead?: (outcome: CacheOutcome) => void): Blob {
    return {
      descriptor: source.descriptor,
      open: async (o = {}) => {
        const r = await this.read(source.descriptor, o.range, source, o.signal);
        onRead?.(r.outcome);
        return r.stream;
      },
    };
  }

  /**
   * A stream of the blob's bytes (all, or `range`), from the cache, from a fill in progress, or from a new
   * fill out of `source`. Without a source, an uncached blob is NotFound. It never ends early without an
   * error. A stream that reaches the blob's last byte errors (DataLoss) if the fill turns out wrong; a
   * range that ends before it may be served from a fill in progress before the blob is verified, so that a
   * small range does not wait for a whole layer (clients verify ranges by other means: a resumed download
   * by the whole blob's digest, lazy pullers by their table of contents).
   */
  async read(
    desc: Descriptor,
    range: ByteRange | undefined,
    source: Blob | undefined,
    signal?: AbortSignal,
  ): Promise<CacheRead> {
    if (this.closed) throw failedPrecondition('blob cache is closed');
    const offset = range?.offset ?? 0;
    const end = range?.length === undefined ? desc.size : offset + range.length;
    if (!(offset >= 0) || end > desc.size || offset > end) {
      throw outOfRange(`range ${offset}-${end} outside blob ${desc.digest} of ${desc.size} bytes`);
    }
    let entry = await this.usable(desc);
    if (entry && !entry.verified && !(await this.check(entry))) entry = await this.usable(desc);
    entry ??= await this.linked(desc);
    let outcome: CacheOutcome;
    if (entry) outcome = entry.state === 'complete' ? 'hit' : 'joined';
    else {
      if (!source) throw notFound(`blob ${desc.digest}: not cached`);
      if (this.pausedFills() || !(await this.roomFor(desc))) {
        return { stream: await pacedRead(source, offset, end, signal), outcome: 'bypass' };
      }
      // Another request may have started a fill while the disk was asked.
      const meanwhile = await this.usable(desc);
      if (meanwhile) outcome = meanwhile.state === 'complete' ? 'hit' : 'joined';
      else outcome = 'miss';
      entry = meanwhile ?? this.startFill(source);
    }
    // Held, so not evicted (and a fill not abandoned), until the stream closes.
    this.acquire(entry);
    const held = entry;
    let stream: Readable;
    try {
      const part = { offset, length: end - offset };
      if (outcome === 'hit') stream = await this.storage.reader(desc.digest, part);
      else {
        await held.writing;
        // Should the fill fail writing to the disk, the rest comes from the source, uncached (the store
        // checks only what it committed, the paced read only a whole blob of its own, so a stitched whole
        // blob is checked by the follower). The fill's verdict is awaited first: a commit that fails on
        // the disk fails the fill's followers before the fill has said why.
        const fallback =
          source &&
          (async (at: number, failure: Error) => {
            await held.done.catch(() => {});
            if (!held.diskFailed) throw failure;
            return pacedRead(source, at, end, signal);
          });
        stream = await this.storage.follow(held.ref, desc, { range: part, signal, fallback });
      }
    } catch (err) {
      this.release(held);
      // A commit that fails ends the ingest (a follower then finds no blob: NotFound) before the fill has
      // said why: its verdict decides what this read gets.
      if (held.state === 'filling') await untilDone(held.done, signal).catch(() => {});
      if (source && held.diskFailed) {
        // The fill could not write (its writer did not even open): this read goes around the disk.
        return { stream: await pacedRead(source, offset, end, signal), outcome: 'bypass' };
      }
      if (outcome === 'hit' && isNotFound(err)) {
        // Gone behind the cache's back (on the daemon's store, its row deleted by a client and the bytes
        // collected): forgotten. Or evicted after it was looked up (as when its check, done, let go of it
        // on a cache over its cap) and deleted before it was opened. Either way, read afresh.
        if (this.entries.get(desc.digest) === held) {
          this.entries.delete(desc.digest);
          this.total -= held.size;
        }
        return this.read(desc, range, source, signal);
      }
      // A fill that failed meanwhile is gone from the store: its reason is the answer.
      throw held.state === 'failed' && held.error ? held.error : err;
    }
    stream.once('close', () => this.release(held));
    return { stream, outcome };
  }

  /**
   * Fills the cache with `source` in the background, no client reading: starts a fill, joins one in
   * progress, checks a blob found at start, or finds it cached ('hit'). Resolves once the blob is cached
   * ('bypass': not cached, the disk has no room or is failing). Aborting `signal` lets go of the fill,
   * which is then abandoned at once, with the signal's reason, unless someone else (a client, another
   * prefetch) reads it.
   */
  async prefetch(source: Blob, signal: AbortSignal): Promise<CacheOutcome> {
    if (this.closed) throw failedPrecondition('blob cache is closed');
    signal.throwIfAborted();
    const desc = source.descriptor;
    let entry = await this.usable(desc);
    if (entry && !entry.verified && !(await this.check(entry))) entry = await this.usable(desc);
    entry ??= await this.linked(desc);
    let outcome: CacheOutcome = 'joined';
    if (!entry) {
      if (this.pausedFills() || !(await this.roomFor(desc))) return 'bypass';
      entry = await this.usable(desc);
      if (!entry) {
        signal.throwIfAborted();
        entry = this.startFill(source);
        outcome = 'miss';
      }
    }
    if (entry.state === 'complete') {
      // A blob just linked in counts against the cap now, as a fill does when it starts.
      this.evict();
      return 'hit';
    }
    this.acquire(entry);
    const held = entry;
    try {
      await untilDone(held.done, signal);
    } finally {
      this.release(held, signal.aborted ? signal.reason : undefined);
    }
    return outcome;
  }

  /**
   * Stores bytes whose digest is not known beforehand (a static layer file), computing it on the way, and
   * holds the blob: it is not evicted until release() (then it is an ordinary cached blob). An equal blob
   * found at start is checked first, so a corrupt file is replaced by these bytes. While fills are paused
   * on a failing disk it is refused (Unavailable, saying why and until when); otherwise its writes count
   * as a fill's do: a failure on the disk pauses fills, a commit ends a pause.
   */
  async addHeld(source: AsyncIterable<Uint8Array>): Promise<HeldBlob> {
    if (this.closed) throw failedPrecondition('blob cache is closed');
    // Its bytes cannot be read from elsewhere later, so it cannot go around a failing disk as a fill does:
    // during the pause it is refused; after it, it probes the disk as a fill would.
    const d = this.diskDown;
    if (d && this.pausedFills()) {
      const again = d.probing
        ? 'another write is trying it now'
        : `tried again from ${new Date(d.until).toISOString()}`;
      throw unavailable(
        `blob cache: writes to ${this.where} are paused since the disk failed (${d.reason}); ${again}`,
      );
    }
    const probe = d !== undefined;
    if (d) d.probing = true;
    const ref = `add-${++this.fills}-${process.pid}-${Date.now()}`;
    let w: CacheWriter | undefined;
    /** Why the disk failed a step (a failure of `source` is not the disk's). */
    let diskError: unknown;
    const onDisk = async <T>(step: () => Promise<T>): Promise<T> => {
      try {
        return await step();
      } catch (err) {
        if (errorKind(err) === undefined) diskError ??= err;
        throw err;
      }
    };
    let digest: Digest;
    try {
      w = await onDisk(() => this.storage.writer(ref));
      const writer = w;
      for await (const chunk of source) await onDisk(() => writer.write(chunk));
      digest = w.digest();
      // A corrupt copy being discarded goes first: committed now, these bytes would be taken for it.
      await this.discarding.get(digest);
      const found = this.entries.get(digest);
      if (found?.state === 'complete' && !found.verified) await this.check(found);
      try {
        await onDisk(() => writer.commit());
      } catch (err) {
        if (!isAlreadyExists(err)) throw err;
      }
    } catch (err) {
      this.diskOutcome(probe, diskError);
      await w?.close(err as Error).catch(() => {});
      await this.storage.abort(ref).catch(() => {});
      throw err;
    }
    this.diskWorks();
    const size = w.offset;
    // A fill of the same blob under way may still fail and take its entry with it, though the bytes are
    // stored now: the blob is held once that fill has settled, and any partial of it is let go.
    let found = this.entries.get(digest);
    while (found?.state === 'filling') {
      await found.done.catch(() => {});
      found = this.entries.get(digest);
    }
    this.dropPartial(digest);
    const entry = found ?? this.addComplete(digest, size, true);
    this.acquire(entry);
    const held = entry;
    let released = false;
    this.evict();
    return {
      digest,
      size,
      release: () => {
        if (released) return;
        released = true;
        this.release(held);
      },
    };
  }

  /**
   * The entry to read `desc` from, if any. A file found at start whose size is not the descriptor's is
   * truncated or foreign: it is dropped and fetched again. Otherwise a size mismatch is the asker's. A blob
   * whose bytes are being discarded is looked at once they are gone.
   */
  private async usable(desc: Descriptor): Promise<Entry | undefined> {
    await this.discarding.get(desc.digest);
    const entry = this.entries.get(desc.digest);
    if (!entry || entry.state === 'failed') return undefined;
    if (entry.size === desc.size) return entry;
    if (entry.state === 'complete' && !entry.verified && entry.readers === 0) {
      await this.drop(
        entry,
        dataLoss(`cached blob ${desc.digest} has ${entry.size} bytes, not ${desc.size}`),
      );
      return undefined;
    }
    throw dataLoss(`cached blob ${desc.digest} has ${entry.size} bytes, the descriptor says ${desc.size}`);
  }

  /**
   * A complete entry for a blob the storage has the bytes of without the cache holding it (the daemon's
   * store in `strata up`), linked in rather than fetched; undefined when it has none. The bytes were
   * verified when the store took them.
   */
  private async linked(desc: Descriptor): Promise<Entry | undefined> {
    if (!(await this.storage.link(desc))) return undefined;
    const meanwhile = await this.usable(desc);
    if (meanwhile) return meanwhile;
    // Evicted (if need be) once its reader lets go, not before it is read.
    return this.addComplete(desc.digest, desc.size, true);
  }

  /** An entry for a blob the storage holds, as the most recently used. */
  private addComplete(digest: Digest, size: number, verified: boolean): Entry {
    const entry: Entry = {
      digest,
      size,
      state: 'complete',
      ref: '',
      writing: Promise.resolve(),
      done: Promise.resolve(),
      received: size,
      readers: 0,
      lastUsed: ++this.clock,
      verified,
      abort: new AbortController(),
    };
    this.entries.set(digest, entry);
    this.total += size;
    return entry;
  }

  /** Whether the storage's file for `digest` is that blob (read through its digest); else why not. */
  private async holdsBlob(digest: Digest, size: number): Promise<true | { why: unknown }> {
    try {
      await pipeline(
        await this.storage.reader(digest),
        new VerifyingStream(digest, size),
        async (source: AsyncIterable<Buffer>) => {
          for await (const _ of source);
        },
      );
      return true;
    } catch (why) {
      return { why };
    }
  }

  /** Reads a blob found at start through its digest once; a mismatch drops it (false). */
  private check(entry: Entry): Promise<boolean> {
    entry.checking ??= (async () => {
      this.acquire(entry);
      try {
        const held = await this.holdsBlob(entry.digest, entry.size);
        if (held === true) {
          entry.verified = true;
          return true;
        }
        // Not the blob it is named after (or unreadable): fetched again by whoever asks.
        await this.drop(entry, held.why);
        return false;
      } finally {
        this.release(entry);
      }
    })();
    return entry.checking;
  }

  private async drop(entry: Entry, why: unknown): Promise<void> {
    if (this.entries.get(entry.digest) !== entry) return;
    this.entries.delete(entry.digest);
    this.total -= entry.size;
    // Gone before a new fill of the blob looks whether it exists; meanwhile requests for it wait (see
    // usable()), or the daemon's store, still verifying the bytes, would have them linked back in.
    const gone = this.storage.discard(entry.digest).catch(() => {});
    this.discarding.set(entry.digest, gone);
    this.events.onCorrupt?.(entry.digest, why);
    await gone;
    if (this.discarding.get(entry.digest) === gone) this.discarding.delete(entry.digest);
  }

  /**
   * Whether the disk can take the blob next to the fills in progress, keeping a small reserve (2 % of the
   * file system, at most 256 MiB) for the store's own files.
   */
  private async roomFor(desc: Descriptor): Promise<boolean> {
    let space: { free: number; total: number };
    try {
      space = await this.storage.space();
    } catch {
      return true; // Cannot tell: try, as before.
    }
    let pending = 0;
    for (const e of this.entries.values()) if (e.state === 'filling') pending += e.size - e.received;
    const reserve = Math.min(256 * 1024 ** 2, space.total * 0.02);
    const room = space.free - pending - reserve >= desc.size;
    if (!room && !this.noRoom) this.events.onNoRoom?.(desc.digest, space.free);
    this.noRoom = !room;
    return room;
  }

  /** Abandons fills in progress (their readers fail) and refuses new reads. */
  close(): void {
    this.closed = true;
    for (const e of this.entries.values()) {
      if (e.state === 'filling') e.abort.abort(aborted('blob cache closed'));
      clearTimeout(e.idleTimer);
    }
    void this.storage.close();
  }

  private startFill(source: Blob): Entry {
    const { digest, size } = source.descriptor;
    let opened!: () => void;
    let failed!: (err: Error) => void;
    const writing = new Promise<void>((resolve, reject) => {
      opened = resolve;
      failed = reject;
    });
    writing.catch(() => {});
    let finished!: (err?: Error) => void;
    const done = new Promise<void>((resolve, reject) => {
      finished = (err) => (err ? reject(err) : resolve());
    });
    done.catch(() => {});
    const partial = this.partials.get(digest);
    if (partial) {
      this.partials.delete(digest);
      this.total -= partial.bytes;
    }
    const entry: Entry = {
      digest,
      size,
      state: 'filling',
      ref: partial?.ref ?? `fill-${++this.fills}-${digest}`,
      writing,
      done,
      received: 0,
      readers: 0,
      lastUsed: ++this.clock,
      verified: true,
      abort: new AbortController(),
    };
    if (this.diskDown) {
      this.diskDown.probing = true;
      entry.probe = true;
    }
    this.entries.set(digest, entry);
    this.total += entry.size;
    this.evict();
    void this.fill(entry, source, opened, failed, partial?.closed).then(
      () => finished(entry.error),
      (err: unknown) => finished(entry.error ?? (err as Error)),
    );
    return entry;
  }

  private async fill(
    entry: Entry,
    source: Blob,
    opened: () => void,
    failed: (err: Error) => void,
    /** Set when resuming an earlier fill's ingest: settles once that fill's writer let go of it. */
    resumeAfter?: Promise<void>,
  ): Promise<void> {
    const signal = entry.abort.signal;
    const { digest, size } = entry;
    let w: CacheWriter | undefined;
    /** The source sent bytes that cannot be the blob (more than its size): none of them is kept. */
    let wrong = false;
    /** Why writing to the disk failed: the fill stops (no resume) and keeps none of its bytes. */
    let diskError: { err: unknown } | undefined;
    // Re-armed by every byte received; firing aborts the source, its retries and resumes at once.
    const stall = setTimeout(() => {
      entry.abort.abort(
        deadlineExceeded(
          `blob ${digest}: its source sent nothing for ${this.stallMs / 1000} s ` +
            `(${entry.received} of ${size} bytes received)`,
        ),
      );
    }, this.stallMs);
    stall.unref();
    try {
      await resumeAfter;
      const open = () => this.storage.writer(entry.ref, { digest, size });
      try {
        w = await open().catch(async (err: unknown) => {
          if (!isAlreadyExists(err)) throw err;
          // A file the cache does not track: a removal that failed while the disk did, or a static layer
          // of these bytes whose commit is settling. Kept if it is the blob, else this fill replaces it.
          if ((await this.holdsBlob(digest, size)) === true) return undefined;
          await this.storage.remove(digest);
          return open();
        });
      } catch (err) {
        if (errorKind(err) === undefined) diskError = { err };
        throw err;
      }
      if (w === undefined) {
        opened();
        entry.state = 'complete';
        this.evict();
        return;
      }
      const writer = w;
      const sink = {
        write: async (chunks: readonly Uint8Array[]) => {
          try {
            await writer.write(chunks);
          } catch (err) {
            diskError ??= { err };
            throw err;
          }
        },
      };
      // A writer that has every byte already (the blob reached the store meanwhile) is committed first:
      // its readers then read the stored blob.
      if (w.offset < size) opened();
      for (let attempt = 0; w.offset < size; attempt++) {
        try {
          this.events.onFetch?.(digest, w.offset);
          // The store verifies at commit; a source that overlooks the signal still lets go when abandoned.
          const pending = source.open({ range: { offset: w.offset }, signal, verify: false });
          const stream = addAbortSignal(signal, await sourceStream(pending, signal));
          try {
            // In batches, one write in flight while the next bytes arrive: a write awaited per network
            // chunk held a 32 MiB fill from a loopback registry to ~18 MiB/s on a loaded machine.
            let at = w.offset;
            await appendStream(sink, stream, (chunk) => {
              at += chunk.byteLength;
              if (at > size) throw dataLoss(`blob ${digest}: source sent more than ${size} bytes`);
              entry.received += chunk.byteLength;
              stall.refresh();
            });
          } catch (err) {
            // DataLoss here is a body that cannot be the blob's: running past its size (counted above or
            // by the source), or a resume answered with another range. Dropping its bytes costs a refetch.
            if (isDataLoss(err)) wrong = true;
            throw err;
          } finally {
            stream.destroy();
          }
          if (w.offset !== size) {
            throw dataLoss(`blob ${digest}: source ended after ${w.offset} of ${size} bytes`);
          }
          break;
        } catch (err) {
          if (diskError) throw diskError.err;
          if (signal.aborted || !resumable(err) || attempt >= this.maxResumes) throw err;
        }
      }
      try {
        await w.commit(size, digest);
      } catch (err) {
        if (isFailedPrecondition(err)) throw dataLoss(`blob ${digest}: ${err.message}`, { cause: err });
        if (!isAlreadyExists(err)) {
          // The disk failed in the commit (close, rename, link, sync): as a failed write. A blob the store
          // put in place stays: another writer may have found it and taken it as stored (a static layer of
          // the same bytes); the daemon's collector frees it if no one holds it.
          if (errorKind(err) === undefined) diskError = { err };
          throw err;
        }
      }
      opened();
      entry.state = 'complete';
      this.diskWorks();
      this.evict();
    } catch (err) {
      // Out of the map, so new requests start afresh; its room is given back first, so the partial kept
      // below does not evict cached blobs to make room for the whole blob no longer coming.
      if (this.entries.get(digest) === entry) {
        this.entries.delete(digest);
        this.total -= entry.size;
      }
      // Bytes short of the end stay for the next fill to resume from (wrong ones fail that fill's commit,
      // which starts over); they are handed on in the same step as the entry goes, so a new request finds
      // them.
      const got = w?.offset ?? 0;
      const keep = got > 0 && got < size && !wrong && !diskError && !this.closed;
      let releaseWriter = () => {};
      if (keep) {
        // The next fill reopens the ingest once this writer has let go of it.
        const writerClosed = new Promise<void>((resolve) => {
          releaseWriter = resolve;
        });
        this.keepPartial(digest, entry.ref, got, writerClosed);
      }
      entry.state = 'failed';
      entry.diskFailed = diskError !== undefined && !signal.aborted;
      // An abandoned fill fails with the reason it was abandoned for, not with what its source made of it.
      entry.error = signal.aborted
        ? errorKind(signal.reason) !== undefined
          ? (signal.reason as Error)
          : aborted(`blob ${digest}: fill abandoned`, { cause: err })
        : (err as Error);
      failed(entry.error);
      this.events.onFillError?.(digest, signal.aborted ? entry.error : err);
      // Before the first wait: a request meanwhile finds the entry gone, and must find fills paused.
      this.diskOutcome(entry.probe === true, entry.diskFailed ? diskError?.err : undefined);
      // Readers following the ingest fail with the same reason.
      try {
        await w?.close(entry.error);
      } finally {
        releaseWriter();
      }
      if (!keep) await this.storage.abort(entry.ref).catch(() => {});
    } finally {
      clearTimeout(stall);
      clearTimeout(entry.idleTimer);
    }
  }

  /** Whether fills are paused on a failing disk: before its retry time, or while one fill probes it. */
  private pausedFills(): boolean {
    const d = this.diskDown;
    return d !== undefined && (d.probing || Date.now() < d.until);
  }

  /**
   * A write that did not commit (a fill, a static layer; `probe`: the one probing a failing disk) ended:
   * `diskError` is why the disk failed it, if it did.
   */
  private diskOutcome(probe: boolean, diskError: unknown): void {
    if (diskError !== undefined && !isNoRoom(diskError)) this.diskFailing(probe, diskError);
    else if (probe && this.diskDown) this.diskDown.probing = false;
  }

  /**
   * A write failed on the disk, not for want of room: fills pause, longer after each failed probe (writes
   * started before the pause that fail too leave it as it is).
   */
  private diskFailing(probe: boolean, err: unknown): void {
    const d = this.diskDown;
    const now = Date.now();
    if (!d) {
      const retryMs = this.diskRetryMs;
      this.diskDown = { reason: messageOf(err), since: now, retryMs, until: now + retryMs, probing: false };
      this.events.onDiskFailing?.(err, retryMs);
    } else if (probe) {
      const retryMs = Math.min(d.retryMs * 2, Math.max(MAX_DISK_RETRY_MS, this.diskRetryMs));
      this.diskDown = { ...d, reason: messageOf(err), retryMs, until: now + retryMs, probing: false };
    }
  }

  /** A fill committed: a spell of disk failures is over. */
  private diskWorks(): void {
    if (!this.diskDown) return;
    this.diskDown = undefined;
    this.events.onDiskRecovered?.();
  }

  private keepPartial(digest: Digest, ref: string, bytes: number, closed: Promise<void>): void {
    this.partials.set(digest, { ref, bytes, closed });
    this.total += bytes;
    while (this.partials.size > MAX_PARTIALS) this.dropPartial(this.partials.keys().next().value as Digest);
    this.evict();
  }

  private dropPartial(digest: Digest): void {
    const p = this.partials.get(digest);
    if (!p) return;
    this.partials.delete(digest);
    this.total -= p.bytes;
    void p.closed.then(() => this.storage.abort(p.ref)).catch(() => {});
  }

  private acquire(entry: Entry): void {
    entry.readers++;
    entry.lastUsed = ++this.clock;
    clearTimeout(entry.idleTimer);
    entry.idleTimer = undefined;
  }

  /** `abandon`: the reader gave up (a cancelled prefetch), so a fill nobody else reads stops now. */
  private release(entry: Entry, abandon?: unknown): void {
    entry.readers--;
    if (entry.readers > 0) return;
    if (entry.state === 'filling' && abandon !== undefined) {
      entry.abort.abort(abandon);
    } else if (entry.state === 'filling') {
      entry.idleTimer = setTimeout(() => {
        if (entry.readers === 0 && entry.state === 'filling') {
          entry.abort.abort(aborted(`blob ${entry.digest}: nobody reads it any more`));
        }
      }, this.idleFillMs);
      entry.idleTimer.unref();
    }
    this.evict();
  }

  /** Drops least recently used complete blobs nobody reads until the total fits the cap. */
  private evict(): void {
    if (this.total <= this.maxBytes) return;
    const candidates = [...this.entries.values()]
      .filter((e) => e.state === 'complete' && e.readers === 0)
      .sort((a, b) => a.lastUsed - b.lastUsed);
    for (const e of candidates) {
      if (this.total <= this.maxBytes) break;
      this.entries.delete(e.digest);
      this.total -= e.size;
      this.events.onEvict?.(e.digest, e.size);
      // Open readers keep their file handles. On the daemon's store the cache's row goes, and the bytes
      // only once no namespace holds them (its garbage collector decides).
      this.storage.remove(e.digest).catch(() => {});
    }
    for (const digest of [...this.partials.keys()]) {
      if (this.total <= this.maxBytes) break;
      this.dropPartial(digest);
    }
  }
}

/** The source's stream, or the abort reason if the signal fires first (a late stream is destroyed). */
function sourceStream(pending: Promise<Readable>, signal: AbortSignal): Promise<Readable> {
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    pending.then(
      (stream) => {
        signal.removeEventListener('abort', onAbort);
        if (signal.aborted) stream.destroy();
        else resolve(stream);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

/** Waits for a fill to finish, or rejects with the signal's reason once it fires. */
function untilDone(done: Promise<void>, signal: AbortSignal | undefined): Promise<void> {
  if (!signal) return done;
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    done.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** Whether a disk failure is for want of room (handled by roomFor, not a failing disk). */
function isNoRoom(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

/** Whether a broken source is worth asking again from where it stopped. */
function resumable(err: unknown): boolean {
  const kind = errorKind(err);
  if (kind === undefined) return true;
  return kind === 'Unavailable' || kind === 'DeadlineExceeded';
}
