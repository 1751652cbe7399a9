// Following an ingest while it is written: a reader that joins a fill in progress gets the bytes as they
// land on disk, from any offset, without waiting for the commit and without a second fetch. The last byte
// of the blob is only handed out once the commit has verified the whole blob, so a reader of wrong bytes
// fails before it can complete; a restarted or failed ingest fails its readers with the writer's reason,
// unless the reader was given another source for the rest.
import { type FileHandle, open } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { aborted, dataLoss, internal } from '../errors.ts';
import type { OpenOptions } from '../oci/blob.ts';
import { algorithmOf, type Digest, Digester } from '../oci/digest.ts';
import { isENOENT } from './fs-util.ts';

/** Reads of a growing file in pieces this big; up to FOLLOW_BUFFER bytes wait ahead of a slow consumer. */
const READ_CHUNK = 256 * 1024;
const FOLLOW_BUFFER = 1024 * 1024;

/** The progress of one live ingest, as its writer reports it. */
export class Growth {
  readonly ref: string;
  readonly dataPath: string;
  /** Bytes on disk. */
  written = 0;
  /** Bumped when the ingest is cut back: bytes already handed out may no longer be there. */
  restarts = 0;
  /** The blob's file once committed. */
  committed: string | undefined;
  failure: Error | undefined;
  /** Bumped by every change: a waiter that looked at `changes` before an await misses none. */
  changes = 0;
  private waiters: (() => void)[] = [];

  constructor(ref: string, dataPath: string, written: number) {
    this.ref = ref;
    this.dataPath = dataPath;
    this.written = written;
  }

  get ended(): boolean {
    return this.committed !== undefined || this.failure !== undefined;
  }

  advance(written: number): void {
    this.written = written;
    this.wake();
  }

  restart(written: number): void {
    this.restarts++;
    this.written = written;
    this.wake();
  }

  commit(blobPath: string): void {
    this.committed = blobPath;
    this.wake();
  }

  fail(err: Error): void {
    if (this.ended) return;
    this.failure = err;
    this.wake();
  }

  /**
   * Resolves at the next change (at once if there was one since `changes` was `since`); rejects when
   * `signal` aborts first.
   */
  changed(signal: AbortSignal | undefined, since = this.changes): Promise<void> {
    return new Promise((resolve, reject) => {
      if (since !== this.changes) {
        resolve();
        return;
      }
      if (signal?.aborted) {
        reject(aborted('reader went away'));
        return;
      }
      const onAbort = () => reject(aborted('reader went away'));
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      });
    });
  }

  private wake(): void {
    this.changes++;
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}

/**
 * Bytes [at, end) from elsewhere, for a reader whose ingest failed with `failure`; undefined when the
 * failure is the reader's answer.
 */
export type FollowFallback = (at: number, failure: Error) => Promise<Readable> | undefined;

export interface FollowOptions extends OpenOptions {
  /** Where the rest comes from should the ingest fail (a fill whose disk failed goes on from its source). */
  fallback?: FollowFallback | undefined;
}

/** The rest of a range coming from a fallback, at `at`; `digester` has every byte before it (a whole blob). */
interface Rest {
  stream: Readable;
  chunks: AsyncIterator<Buffer>;
  /** Of the last chunk, what the reader has not had yet. */
  pending: Buffer | undefined;
  at: number;
  digester: Digester | undefined;
}

/** Reads at chosen offsets into the caller's buffers (a FileHandle is one). */
export interface PositionalReader {
  read(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
}

/**
 * Bytes [start, end) of the blob of `size` bytes that `g` is writing, as they arrive: a Readable for any
 * consumer, or, through open(), a reader at positions into the consumer's own buffers (the facade's server
 * sends it that way, like a FileRange). Either fails when the ingest fails or restarts, and never ends
 * short. Given a fallback, the rest of a failed ingest comes from there; a whole blob stitched so is
 * checked against `digest` before its last bytes are handed out.
 */
export class GrowthRange extends Readable {
  /** Names the ingest in messages. */
  readonly path: string;
  readonly start: number;
  readonly end: number;
  private readonly g: Growth;
  private readonly size: number;
  private readonly restarts: number;
  /** The caller's signal, or destroy(): either ends a wait for more bytes. */
  private readonly gone = new AbortController();
  private readonly signal: AbortSignal;
  private readonly reader: PositionalReader = { read: (b, o, l, p) => this.readAt(b, o, l, p) };
  private readonly digest: Digest;
  private readonly fallback: FollowFallback | undefined;
  private fh: FileHandle | undefined;
  private pos: number;
  private rest: Rest | undefined;

  constructor(
    g: Growth,
    blob: { digest: Digest; size: number },
    start: number,
    end: number,
    options: FollowOptions = {},
  ) {
    super({ highWaterMark: FOLLOW_BUFFER });
    this.path = `ingest ${g.ref}`;
    this.g = g;
    this.digest = blob.digest;
    this.size = blob.size;
    this.restarts = g.restarts;
    this.start = start;
    this.end = end;
    this.pos = start;
    this.fallback = options.fallback;
    const signal = options.signal;
    this.signal = signal ? AbortSignal.any([signal, this.gone.signal]) : this.gone.signal;
  }

  /**
   * Waits for the range's first byte (or the ingest's failure, when no fallback takes it); then reads at
   * positions.
   */
  async open(): Promise<PositionalReader> {
    if (this.start >= this.end) return this.reader;
    try {
      await this.available(this.start);
    } catch (err) {
      // Failed before the range's first byte: the whole range comes from the fallback, if any.
      await this.restAfter(err, this.start);
    }
    return this.reader;
  }

  /**
   * Bytes readable at `pos` (at least one), waiting for them, and the open file. Of a blob not yet
   * verified, everything but the last byte.
   */
  private async available(pos: number): Promise<{ fh: FileHandle; bytes: number }> {
    const g = this.g;
    for (;;) {
      if (g.restarts !== this.restarts) throw aborted(`ingest ${g.ref} was restarted while being read`);
      if (g.committed === undefined && g.failure) throw g.failure;
      const seen = g.changes;
      const avail = g.committed !== undefined ? g.written : Math.min(g.written, this.size - 1);
      if (avail > pos) {
        if (this.fh === undefined) {
          const fh = await openGrowing(g);
          if (this.destroyed) {
            // Destroyed while opening: the handle is not kept, so it is closed here.
            await fh?.close().catch(() => {});
            throw aborted('reader went away');
          }
          this.fh = fh;
        }
        if (this.fh !== undefined) return { fh: this.fh, bytes: avail - pos };
      }
      await g.changed(this.signal, seen);
    }
  }

  private async readAt(
    buffer: Buffer,
    offset: number,
    length: number,
    position: number,
  ): Promise<{ bytesRead: number }> {
    if (this.rest) return this.readRest(this.rest, buffer, offset, length, position);
    let fh: FileHandle;
    let bytes: number;
    try {
      ({ fh, bytes } = await this.available(position));
    } catch (err) {
      const rest = await this.restAfter(err, position);
      return this.readRest(rest, buffer, offset, length, position);
    }
    const len = Math.min(length, bytes);
    const { bytesRead } = await fh.read(buffer, offset, len, position);
    if (bytesRead === 0) {
      throw dataLoss(`ingest ${this.g.ref}: file shorter than the ${position + len} bytes written`);
    }
    return { bytesRead };
  }

  /** Goes on at `at` from the fallback when `err` is the ingest's failure and a fallback takes it. */
  private restAfter(err: unknown, at: number): Promise<Rest> {
    const failure = this.g.failure;
    if (failure === undefined || err !== failure || this.fallback === undefined) throw err;
    return this.startRest(this.fallback, at, failure);
  }

  /**
   * Goes on at `at` from the fallback. A whole blob's bytes before `at` are hashed again from the ingest's
   * file (still open here, though the writer may have removed it), so the stitched blob can be checked.
   */
  private async startRest(fallback: FollowFallback, at: number, failure: Error): Promise<Rest> {
    let digester: Digester | undefined;
    if (this.start === 0 && this.end === this.size) {
      digester = new Digester(algorithmOf(this.digest));
      const buf = Buffer.allocUnsafe(Math.min(READ_CHUNK, at));
      for (let pos = 0; pos < at; ) {
        const { bytesRead } = this.fh
          ? await this.fh.read(buf, 0, Math.min(buf.length, at - pos), pos)
          : { bytesRead: 0 };
        // The bytes handed out cannot be checked: the reader fails as it would have without a fallback.
        if (bytesRead === 0) throw failure;
        digester.update(buf.subarray(0, bytesRead));
        pos += bytesRead;
      }
    }
    const pending = fallback(at, failure);
    if (pending === undefined) throw failure;
    const stream = await pending;
    if (this.destroyed) {
      stream.destroy();
      throw aborted('reader went away');
    }
    const chunks = (stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    this.rest = { stream, chunks, pending: undefined, at, digester };
    return this.rest;
  }

  private async readRest(
    rest: Rest,
    buffer: Buffer,
    offset: number,
    length: number,
    position: number,
  ): Promise<{ bytesRead: number }> {
    if (position !== rest.at) throw internal(`${this.path}: read at ${position}, the rest is at ${rest.at}`);
    let chunk = rest.pending;
    if (chunk === undefined) {
      const next = await rest.chunks.next();
      if (next.done) throw dataLoss(`${this.path}: the rest ended at ${rest.at}, before byte ${this.end}`);
      chunk = next.value;
    }
    if (chunk.length > this.end - rest.at)
      throw dataLoss(`${this.path}: the rest runs past byte ${this.end}`);
    const n = Math.min(length, chunk.length);
    chunk.copy(buffer, offset, 0, n);
    rest.pending = n < chunk.length ? chunk.subarray(n) : undefined;
    rest.digester?.update(buffer.subarray(offset, offset + n));
    rest.at += n;
    if (rest.at === this.end && rest.digester) {
      // The bytes that complete the blob are handed out only once it is the blob.
      const got = rest.digester.digest();
      if (got !== this.digest) throw dataLoss(`content digest mismatch: expected ${this.digest}, got ${got}`);
    }
    return { bytesRead: n };
  }

  override _read(): void {
    const len = Math.min(READ_CHUNK, this.end - this.pos);
    if (len <= 0) {
      this.push(null);
      return;
    }
    const buf = Buffer.allocUnsafe(len);
    this.readAt(buf, 0, len, this.pos).then(
      ({ bytesRead }) => {
        this.pos += bytesRead;
        this.push(bytesRead === len ? buf : buf.subarray(0, bytesRead));
        if (this.pos >= this.end) this.push(null);
      },
      (err: Error) => this.destroy(err),
    );
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.gone.abort(aborted('reader went away'));
    this.rest?.stream.destroy();
    const fh = this.fh;
    this.fh = undefined;
    if (!fh) {
      cb(err);
      return;
    }
    fh.close()
      .catch(() => {})
      .then(() => cb(err));
  }
}

/**
 * The ingest's data file, or the blob's once committed. Undefined while a commit is moving the file (the
 * caller waits for the next change); the writer's failure once it failed.
 */
async function openGrowing(g: Growth): Promise<FileHandle | undefined> {
  const committed = g.committed;
  try {
    return await open(committed ?? g.dataPath, 'r');
  } catch (err) {
    if (!isENOENT(err)) throw err;
  }
  if (g.committed !== undefined && committed === undefined) return openGrowing(g);
  if (g.failure) throw g.failure;
  if (committed !== undefined) throw dataLoss(`ingest ${g.ref}: committed blob is gone`);
  return undefined;
}
