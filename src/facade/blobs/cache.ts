// The facade's disk blob cache: blobs named by digest, a byte cap with least-recently-used eviction, and one
// fill per digest at a time. A fill streams from its source into a temp file while any number of readers
// follow the growing file, each from its own offset (Range), so the first client is served as the bytes
// arrive and late arrivals join instead of fetching again. The last byte of a blob is only handed out
// once the whole blob has matched its digest: a reader of a wrong blob fails before it can complete.
// Entries being read or filled are never evicted.
import { randomBytes } from 'node:crypto';
import { type FileHandle, mkdir, open, readdir, rename, rm, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { addAbortSignal, Readable } from 'node:stream';
import { FileRange } from '../../content/file-range.ts';
import {
  aborted,
  dataLoss,
  deadlineExceeded,
  errorKind,
  failedPrecondition,
  notFound,
  outOfRange,
} from '../../errors.ts';
import type { Descriptor } from '../../oci/descriptor.ts';
import { algorithmOf, type Digest, Digester, encodedOf, isDigest } from '../../oci/digest.ts';

/** Opens the blob's bytes from `offset` to the end. Called again (resume) after a broken stream. */
export type FillSource = (offset: number, signal: AbortSignal) => Promise<Readable>;

export type CacheOutcome = 'hit' | 'miss' | 'joined';

export interface CacheEvents {
  /** A fill opened its source (once per attempt; a resume counts again). */
  onFetch?(digest: Digest, offset: number): void;
  onEvict?(digest: Digest, size: number): void;
  onFillError?(digest: Digest, err: unknown): void;
}

export interface BlobCacheOptions {
  dir: string;
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
  events?: CacheEvents;
}

/** Half-open byte range [start, end). */
export interface ReadRange {
  start: number;
  end: number;
}

export interface CacheRead {
  stream: Readable;
  outcome: CacheOutcome;
}

type State = 'filling' | 'complete' | 'failed';

interface Entry {
  digest: Digest;
  size: number;
  path: string;
  tmpPath: string;
  state: State;
  written: number;
  readers: number;
  lastUsed: number;
  error?: Error;
  wake: (() => void)[];
  abort: AbortController;
  idleTimer?: NodeJS.Timeout;
}

const READ_CHUNK = 256 * 1024;
// Readers of a growing blob buffer up to this many bytes ahead of the client.
const FOLLOW_BUFFER = 1024 * 1024;
export const DEFAULT_STALL_MS = 20_000;

export class BlobCache {
  readonly dir: string;
  readonly maxBytes: number;
  private readonly blobsDir: string;
  private readonly tmpDir: string;
  private readonly maxResumes: number;
  private readonly idleFillMs: number;
  private readonly stallMs: number;
  private readonly events: CacheEvents;
  private readonly entries = new Map<Digest, Entry>();
  private clock = 0;
  private total = 0;
  private closed = false;

  private constructor(options: BlobCacheOptions) {
    this.dir = options.dir;
    this.maxBytes = options.maxBytes;
    this.blobsDir = join(options.dir, 'blobs');
    this.tmpDir = join(options.dir, 'tmp');
    this.maxResumes = options.maxResumes ?? 3;
    this.idleFillMs = options.idleFillMs ?? 30_000;
    this.stallMs = options.stallMs ?? DEFAULT_STALL_MS;
    this.events = options.events ?? {};
  }

  /** Opens (creating) the cache dir, drops leftover temp files and indexes what is there, oldest first. */
  static async open(options: BlobCacheOptions): Promise<BlobCache> {
    if (!Number.isSafeInteger(options.maxBytes) || options.maxBytes < 0) {
      throw failedPrecondition(
        `blob cache: maxBytes must be a non-negative integer, got ${options.maxBytes}`,
      );
    }
    const cache = new BlobCache(options);
    await rm(cache.tmpDir, { recursive: true, force: true });
    await mkdir(cache.tmpDir, { recursive: true });
    await mkdir(cache.blobsDir, { recursive: true });
    await cache.index();
    cache.evict();
    return cache;
  }

  private async index(): Promise<void> {
    const found: { digest: Digest; size: number; mtime: number; path: string }[] = [];
    for (const alg of await readdir(this.blobsDir)) {
      const algDir = join(this.blobsDir, alg);
      let names: string[];
      try {
        names = await readdir(algDir);
      } catch {
        continue;
      }
      for (const name of names) {
        const digest = `${alg}:${name}`;
        const path = join(algDir, name);
        if (!isDigest(digest)) {
          await rm(path, { force: true, recursive: true });
          continue;
        }
        const st = await stat(path);
        if (st.isFile()) found.push({ digest, size: st.size, mtime: st.mtimeMs, path });
      }
    }
    found.sort((a, b) => a.mtime - b.mtime);
    for (const f of found) {
      this.entries.set(f.digest, {
        digest: f.digest,
        size: f.size,
        path: f.path,
        tmpPath: '',
        state: 'complete',
        written: f.size,
        readers: 0,
        lastUsed: ++this.clock,
        wake: [],
        abort: new AbortController(),
      });
      this.total += f.size;
    }
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

  /** Whether a file can be created in the cache dir right now (readiness). */
  async writable(): Promise<boolean> {
    const probe = join(this.tmpDir, `probe-${randomBytes(6).toString('hex')}`);
    try {
      const fh = await open(probe, 'wx');
      await fh.close();
      await unlink(probe);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * A stream of the blob's bytes (all, or `range`), from the cache, from a fill in progress, or from a new
   * fill out of `source`. Without a source, an uncached blob is NotFound. The stream errors (DataLoss) if
   * the fill turns out wrong; it never ends early without an error.
   */
  read(
    desc: Descriptor,
    range: ReadRange | undefined,
    source: FillSource | undefined,
    signal?: AbortSignal,
  ): CacheRead {
    if (this.closed) throw failedPrecondition('blob cache is closed');
    const { start, end } = range ?? { start: 0, end: desc.size };
    if (start < 0 || end > desc.size || start > end) {
      throw outOfRange(`range ${start}-${end} outside blob ${desc.digest} of ${desc.size} bytes`);
    }
    let entry = this.entries.get(desc.digest);
    let outcome: CacheOutcome;
    if (entry && entry.state !== 'failed') {
      if (entry.size !== desc.size) {
        throw dataLoss(
          `cached blob ${desc.digest} has ${entry.size} bytes, the descriptor says ${desc.size}`,
        );
      }
      outcome = entry.state === 'complete' ? 'hit' : 'joined';
    } else {
      if (!source) throw notFound(`blob ${desc.digest}: not cached`);
      entry = this.startFill(desc, source);
      outcome = 'miss';
    }
    this.acquire(entry);
    if (outcome === 'hit') return { stream: this.readComplete(entry, start, end), outcome };
    const stream = Readable.from(this.follow(entry, start, end, signal), {
      objectMode: false,
      highWaterMark: FOLLOW_BUFFER,
    });
    return { stream, outcome };
  }

  /**
   * The file of a complete blob, straight from disk (see FileRange for the server's fast path); held, so
   * not evicted, until the stream closes.
   */
  private readComplete(entry: Entry, start: number, end: number): Readable {
    const stream = new FileRange(entry.path, start, end);
    stream.once('close', () => this.release(entry));
    return stream;
  }

  /** Abandons fills in progress (their readers fail) and refuses new reads. */
  close(): void {
    this.closed = true;
    for (const e of this.entries.values()) {
      if (e.state === 'filling') e.abort.abort(aborted('blob cache closed'));
      clearTimeout(e.idleTimer);
    }
  }

  private pathOf(digest: Digest): string {
    return join(this.blobsDir, algorithmOf(digest), encodedOf(digest));
  }

  private startFill(desc: Descriptor, source: FillSource): Entry {
    const entry: Entry = {
      digest: desc.digest,
      size: desc.size,
      path: this.pathOf(desc.digest),
      tmpPath: join(this.tmpDir, `${encodedOf(desc.digest)}.${randomBytes(6).toString('hex')}`),
      state: 'filling',
      written: 0,
      readers: 0,
      lastUsed: ++this.clock,
      wake: [],
      abort: new AbortController(),
    };
    this.entries.set(desc.digest, entry);
    this.total += entry.size;
    this.evict();
    void this.fill(entry, source);
    return entry;
  }

  private async fill(entry: Entry, source: FillSource): Promise<void> {
    const signal = entry.abort.signal;
    let fh: FileHandle | undefined;
    // Re-armed by every byte written; firing aborts the source, its retries and resumes at once.
    const stall = setTimeout(() => {
      entry.abort.abort(
        deadlineExceeded(
          `blob ${entry.digest}: its source sent nothing for ${this.stallMs / 1000} s ` +
            `(${entry.written} of ${entry.size} bytes received)`,
        ),
      );
    }, this.stallMs);
    stall.unref();
    try {
      await mkdir(join(this.blobsDir, algorithmOf(entry.digest)), { recursive: true });
      fh = await open(entry.tmpPath, 'wx');
      const digester = new Digester(algorithmOf(entry.digest));
      for (let attempt = 0; ; attempt++) {
        try {
          this.events.onFetch?.(entry.digest, entry.written);
          // A source that overlooks the signal still lets go when the fill is abandoned.
          const stream = addAbortSignal(signal, await opened(source(entry.written, signal), signal));
          try {
            for await (const chunk of stream) {
              const buf = chunk as Buffer;
              if (entry.written + buf.length > entry.size) {
                throw dataLoss(`blob ${entry.digest}: source sent more than ${entry.size} bytes`);
              }
              digester.update(buf);
              await fh.write(buf, 0, buf.length, entry.written);
              entry.written += buf.length;
              stall.refresh();
              this.notify(entry);
            }
          } finally {
            stream.destroy();
          }
          if (entry.written !== entry.size) {
            throw dataLoss(
              `blob ${entry.digest}: source ended after ${entry.written} of ${entry.size} bytes`,
            );
          }
          break;
        } catch (err) {
          if (signal.aborted || !resumable(err) || attempt >= this.maxResumes) throw err;
        }
      }
      const got = digester.digest();
      if (got !== entry.digest) {
        throw dataLoss(`blob ${entry.digest}: content digest mismatch, got ${got}`);
      }
      await fh.datasync();
      await fh.close();
      fh = undefined;
      await rename(entry.tmpPath, entry.path);
      entry.state = 'complete';
      this.notify(entry);
      this.evict();
    } catch (err) {
      // Out of the map first, so new requests start afresh; the temp file goes before readers hear of it.
      if (this.entries.get(entry.digest) === entry) {
        this.entries.delete(entry.digest);
        this.total -= entry.size;
      }
      await fh?.close().catch(() => {});
      await rm(entry.tmpPath, { force: true });
      entry.state = 'failed';
      // An abandoned fill fails with the reason it was abandoned for, not with what its source made of it.
      entry.error = signal.aborted
        ? errorKind(signal.reason) !== undefined
          ? (signal.reason as Error)
          : aborted(`blob ${entry.digest}: fill abandoned`, { cause: err })
        : (err as Error);
      this.events.onFillError?.(entry.digest, err);
      this.notify(entry);
    } finally {
      clearTimeout(stall);
      clearTimeout(entry.idleTimer);
    }
  }

  private notify(entry: Entry): void {
    const wake = entry.wake;
    entry.wake = [];
    for (const w of wake) w();
  }

  /** Bytes a reader may have: all of a complete blob; of a growing one, all but the last byte. */
  private available(entry: Entry): number {
    return entry.state === 'complete' ? entry.size : Math.min(entry.written, entry.size - 1);
  }

  private waitFor(entry: Entry, signal: AbortSignal | undefined): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(aborted('reader went away'));
        return;
      }
      const onAbort = () => reject(aborted('reader went away'));
      signal?.addEventListener('abort', onAbort, { once: true });
      entry.wake.push(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      });
    });
  }

  private async *follow(
    entry: Entry,
    start: number,
    end: number,
    signal?: AbortSignal,
  ): AsyncGenerator<Buffer> {
    let fh: FileHandle | undefined;
    try {
      let pos = start;
      while (pos < end) {
        if (entry.state === 'failed') throw entry.error ?? dataLoss(`blob ${entry.digest}: fill failed`);
        const avail = this.available(entry);
        if (avail <= pos) {
          await this.waitFor(entry, signal);
          continue;
        }
        fh ??= await this.openEntry(entry);
        const len = Math.min(READ_CHUNK, Math.min(avail, end) - pos);
        const buf = Buffer.allocUnsafe(len);
        const { bytesRead } = await fh.read(buf, 0, len, pos);
        if (bytesRead === 0) throw dataLoss(`blob ${entry.digest}: cache file shorter than expected`);
        pos += bytesRead;
        yield bytesRead === len ? buf : buf.subarray(0, bytesRead);
      }
    } finally {
      await fh?.close().catch(() => {});
      this.release(entry);
    }
  }

  private async openEntry(entry: Entry): Promise<FileHandle> {
    if (entry.state === 'complete') return open(entry.path, 'r');
    try {
      return await open(entry.tmpPath, 'r');
    } catch (err) {
      // Renamed into place between the state check and the open.
      // (The state is re-read: the fill may have completed while the open ran.)
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && (entry.state as State) === 'complete') {
        return open(entry.path, 'r');
      }
      throw err;
    }
  }

  private acquire(entry: Entry): void {
    entry.readers++;
    entry.lastUsed = ++this.clock;
    clearTimeout(entry.idleTimer);
    entry.idleTimer = undefined;
  }

  private release(entry: Entry): void {
    entry.readers--;
    if (entry.readers > 0) return;
    if (entry.state === 'filling') {
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
      // Open readers keep their file handles; the name goes now.
      rm(e.path, { force: true }).catch(() => {});
    }
  }
}

/** The source's stream, or the abort reason if the signal fires first (a late stream is destroyed). */
function opened(pending: Promise<Readable>, signal: AbortSignal): Promise<Readable> {
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

/** Whether a broken source is worth asking again from where it stopped. */
function resumable(err: unknown): boolean {
  const kind = errorKind(err);
  if (kind === undefined) return true;
  return kind === 'Unavailable' || kind === 'DeadlineExceeded';
}
