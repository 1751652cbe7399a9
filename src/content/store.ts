// The content-addressed blob store on disk, with the semantics of containerd's local content store:
// committed blobs are immutable and named by digest; writes go through resumable ingests named by ref,
// one writer per ref at a time (across processes too). Labels are not kept here: like containerd, they
// are per namespace and live in the metadata layer. The store alone knows the layout: it creates,
// verifies, renames and deletes blob files, keeps handles of blobs being read in small pieces, lets
// readers follow an ingest while it is written, and sweeps the blobs its user no longer holds.
import { mkdir, readdir, rm, stat, statfs, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline, type Readable } from 'node:stream';
import { pipeline as pipelined } from 'node:stream/promises';
import {
  dataLoss,
  failedPrecondition,
  invalidArgument,
  isAlreadyExists,
  isDataLoss,
  isFailedPrecondition,
  isNotFound,
  isUnavailable,
  notFound,
  outOfRange,
} from '../errors.ts';
import type { Blob, ByteRange, OpenOptions } from '../oci/blob.ts';
import type { Descriptor } from '../oci/descriptor.ts';
import { type Digest, isDigest, parseDigest, VerifyingStream } from '../oci/digest.ts';
import { appendStream } from './append-stream.ts';
import { FileRange } from './file-range.ts';
import { type FollowOptions, type Growth, GrowthRange } from './follow.ts';
import { exists, isENOENT, tmpName, tmpOwner } from './fs-util.ts';
import { type BlobHandle, BlobHandles, type BlobHandlesOptions } from './handles.ts';
import { readMetaFile, statusFromDisk } from './ingest.ts';
import { ALGORITHMS, Layout, validateRef } from './layout.ts';
import { acquireRefLock, ownerAlive, type RefLock } from './ref-lock.ts';
import { ResumePoints } from './resume-points.ts';
import { type SweepOptions, type SweepResult, sweepBlobs, sweepCutoff } from './sweep.ts';
import type { ContentInfo, IngestStatus, StoreHooks, WriterOptions } from './types.ts';
import { IngestWriter } from './writer.ts';

export type { BlobHandle } from './handles.ts';
export type { SweepOptions, SweepResult } from './sweep.ts';
export type { ContentInfo, IngestStatus, StoreHooks, WriterOptions } from './types.ts';
export { IngestWriter } from './writer.ts';

export interface ContentStoreOptions {
  /** For crash tests: called before each commit step. */
  hooks?: StoreHooks;
  /** Bounds of the cache of open blob handles (see handle()). */
  handles?: BlobHandlesOptions;
  /**
   * Whether a commit waits for the blob's bytes and its directory entry to reach the disk (fsync; default
   * true). Off for a cache that verifies what it finds after a restart and can fetch it again: an fsync
   * of a 32 MiB blob took ~2.5 s on a loaded VM, and readers following the ingest wait for the commit.
   */
  durable?: boolean;
}

/** Bytes to ingest: a stream, or a function that opens one from the offset the ingest resumes at. */
export type IngestSource = Readable | ((offset: number) => Readable | Promise<Readable>);

export class ContentStore {
  readonly root: string;
  private readonly layout: Layout;
  private readonly hooks: StoreHooks;
  private readonly handles: BlobHandles;
  private readonly durable: boolean;
  /** Ingests being written by this process, by ref, for readers that follow them. */
  private readonly live = new Map<string, Growth>();
  /** Running digests of ingests left uncommitted, for the next writer of each. */
  private readonly resume = new ResumePoints();

  private constructor(layout: Layout, options: ContentStoreOptions) {
    this.root = layout.root;
    this.layout = layout;
    this.hooks = options.hooks ?? {};
    this.handles = new BlobHandles((d) => layout.blobPath(d), options.handles);
    this.durable = options.durable ?? true;
  }

  /** Creates the layout under `root` if needed and removes temporary files left by dead processes. */
  static async open(root: string, options: ContentStoreOptions = {}): Promise<ContentStore> {
    const layout = new Layout(root);
    for (const alg of ALGORITHMS) await mkdir(layout.blobDir(alg), { recursive: true });
    for (const dir of [layout.ingestRoot, layout.locksDir, layout.tmpDir])
      await mkdir(dir, { recursive: true });
    for (const name of await readdir(layout.tmpDir)) {
      const pid = tmpOwner(name);
      if (pid !== undefined && !ownerAlive({ pid, since: 0, token: '' })) {
        await rm(join(layout.tmpDir, name), { force: true, recursive: true });
      }
    }
    await removeCommittedIngests(layout);
    return new ContentStore(layout, options);
  }

  /** Whether a file can be created under the root right now (readiness). */
  async writable(): Promise<boolean> {
    const probe = tmpName(this.layout.tmpDir, 'probe');
    try {
      await writeFile(probe, '', { flag: 'wx' });
      await unlink(probe);
      return true;
    } catch {
      return false;
    }
  }

  /** Free and total bytes of the file system the store is on (for callers that must not fill it). */
  async space(): Promise<{ free: number; total: number }> {
    const st = await statfs(this.root);
    return { free: st.bavail * st.bsize, total: st.blocks * st.bsize };
  }

  /** Closes the blob handles kept for reads; handles in use close when released. */
  close(): Promise<void> {
    return this.handles.close();
  }

  async info(d: Digest): Promise<ContentInfo> {
    const path = this.layout.blobPath(d);
    try {
      const st = await stat(path);
      if (!st.isFile()) throw notFound(`content digest ${d}: not found`);
      return { digest: d, size: st.size, createdAt: st.mtime, updatedAt: st.mtime, labels: {} };
    } catch (err) {
      if (isENOENT(err)) throw notFound(`content digest ${d}: not found`);
      throw err;
    }
  }

  async has(d: Digest): Promise<boolean> {
    try {
      await this.info(d);
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  /** The blob for `desc`. Full reads are verified against the descriptor's digest and size. */
  blob(desc: Descriptor): Blob {
    parseDigest(desc.digest);
    return {
      descriptor: desc,
      open: (options?: OpenOptions) => this.openBlob(desc, options),
    };
  }

  /**
   * Streams the blob from disk, or the range asked for, unverified (a FileRange, which the facade's server
   * sends with reused buffers). A range running past the end stops at the end; an offset past the end is
   * OutOfRange, as in containerd.
   */
  async reader(d: Digest, range?: ByteRange, signal?: AbortSignal): Promise<FileRange> {
    return (await this.openRange(d, range, signal)).stream;
  }

  /**
   * A handle on the blob's file, kept open for a few seconds after release so that many small reads of
   * one blob (ctr reads 32 KiB at a time) share one open. NotFound `content digest <d>: not found`.
   */
  handle(d: Digest): Promise<BlobHandle> {
    parseDigest(d);
    return this.handles.acquire(d);
  }

  /**
   * Bytes of `desc` as the ingest `ref` of this process writes them, from any offset, without waiting for
   * its commit (see follow.ts); of the committed blob when no such ingest is live. The last byte comes
   * only once the commit verified the blob; a failed ingest fails the stream with the writer's reason.
   */
  async follow(ref: string, desc: Descriptor, options: FollowOptions = {}): Promise<FileRange | GrowthRange> {
    const g = this.live.get(ref);
    if (g === undefined || g.ended) return this.reader(desc.digest, options.range, options.signal);
    const { offset, end } = clipRange(options.range, desc.size);
    return new GrowthRange(g, desc, offset, end, options);
  }

  /** Calls `fn` for every committed blob, in digest order. */
  async walk(fn: (info: ContentInfo) => void | Promise<void>): Promise<void> {
    for (const alg of ALGORITHMS) {
      let names: string[];
      try {
        names = await readdir(this.layout.blobDir(alg));
      } catch (err) {
        if (isENOENT(err)) continue;
        throw err;
      }
      names.sort();
      for (const name of names) {
        const d = `${alg}:${name}`;
        if (!isDigest(d)) continue;
        let info: ContentInfo;
        try {
          info = await this.info(d);
        } catch (err) {
          if (isNotFound(err)) continue; // deleted meanwhile
          throw err;
        }
        await fn(info);
      }
    }
  }

  /**
   * Deletes the blob if its file is not the blob it is named after, as read through its digest here: a
   * holder that found it wrong gets it stored afresh by its next write, and a good blob shared with other
   * holders is never deleted on one holder's word. Whether it was deleted.
   */
  async deleteIfCorrupt(d: Digest): Promise<boolean> {
    try {
      const { size } = await this.info(d);
      await pipelined(
        await this.reader(d),
        new VerifyingStream(d, size),
        async (source: AsyncIterable<Buffer>) => {
          for await (const _ of source);
        },
      );
      return false;
    } catch (err) {
      if (isNotFound(err)) return false;
      if (!isDataLoss(err)) throw err;
    }
    await this.delete(d).catch((err: unknown) => {
      if (!isNotFound(err)) throw err;
    });
    return true;
  }

  /** Removes the blob. Readers that already opened it keep reading the old bytes. */
  async delete(d: Digest): Promise<void> {
    this.handles.forget(d);
    try {
      await unlink(this.layout.blobPath(d));
    } catch (err) {
      if (isENOENT(err)) throw notFound(`content digest ${d}: not found`);
      throw err;
    }
  }

  writer(ref: string, opts: WriterOptions = {}): Promise<IngestWriter> {
    return IngestWriter.open(this.layout, ref, opts, this.hooks, this.live, this.resume, this.durable);
  }

  /**
   * The mtime a blob must be older than to be swept by a run starting at `startMs`: take it when the run
   * starts, before deciding what is held (see sweep.ts for why that spares commits in flight).
   */
  sweepCutoff(startMs: number): Promise<number> {
    return sweepCutoff(this.layout, startMs);
  }

  /** Deletes every blob file older than the cutoff that `isHeld` does not claim. */
  sweep(options: SweepOptions): Promise<SweepResult> {
    return sweepBlobs(this.layout, options);
  }

  async status(ref: string): Promise<IngestStatus> {
    validateRef(ref);
    const metaPath = this.layout.ingestMeta(ref);
    const meta = await readMetaFile(metaPath);
    if (meta === undefined || meta.ref !== ref) throw notFound(`reference ${ref}: not found`);
    try {
      return await statusFromDisk(meta, this.layout.ingestData(ref), metaPath);
    } catch (err) {
      if (isENOENT(err)) throw notFound(`reference ${ref}: not found`);
      throw err;
    }
  }

  /** Every ingest on disk, active or interrupted, in no particular order. */
  async listStatuses(): Promise<IngestStatus[]> {
    const out: IngestStatus[] = [];
    for (const key of await readdir(this.layout.ingestRoot)) {
      const dir = join(this.layout.ingestRoot, key);
      const metaPath = join(dir, 'meta.json');
      const meta = await readMetaFile(metaPath);
      if (meta === undefined || this.layout.ingestKey(meta.ref) !== key) continue;
      try {
        out.push(await statusFromDisk(meta, join(dir, 'data'), metaPath));
      } catch (err) {
        if (!isENOENT(err)) throw err; // committed or aborted meanwhile
      }
    }
    return out;
  }

  /** Deletes the ingest and its data. Unavailable while a writer holds the ref. */
  async abort(ref: string): Promise<void> {
    validateRef(ref);
    const lock = await acquireRefLock(this.layout.lockPath(ref), ref, this.layout.tmpDir);
    try {
      const dir = this.layout.ingestDir(ref);
      try {
        await stat(dir);
      } catch (err) {
        if (isENOENT(err)) throw notFound(`reference ${ref}: not found`);
        throw err;
      }
      this.resume.forget(ref);
      await rm(dir, { recursive: true, force: true });
    } finally {
      await lock.release();
    }
  }

  /**
   * Writes `src` under `ref` and commits it as `expected`. Content that is already there is success (the
   * source is not read). When an earlier ingest of `ref` was interrupted, writing resumes at its offset:
   * pass a function to be given that offset, or a stream that already starts there. Bytes that cannot
   * be the expected content (too many, wrong digest) discard the ingest; a short stream keeps it.
   */
  async ingestStream(
    ref: string,
    src: IngestSource,
    expected: { digest: Digest; size: number },
  ): Promise<void> {
    let w: IngestWriter;
    try {
      w = await this.writer(ref, { expected: expected.digest, total: expected.size });
    } catch (err) {
      if (typeof src !== 'function') src.destroy();
      if (isAlreadyExists(err)) return;
      throw err;
    }
    try {
      const stream = typeof src === 'function' ? await src(w.offset) : src;
      await writeBatched(w, stream, expected);
      try {
        await w.commit(expected.size, expected.digest);
      } catch (err) {
        // All the bytes arrived and they are wrong: resuming would only repeat the failure.
        if (isFailedPrecondition(err) && w.offset === expected.size) await w.truncate(0);
        throw err;
      }
    } catch (err) {
      if (isAlreadyExists(err)) return;
      throw err;
    } finally {
      await w.close();
    }
  }

  private async openBlob(desc: Descriptor, options: OpenOptions = {}): Promise<Readable> {
    const range = options.range;
    const { stream, size } = await this.openRange(desc.digest, range, options.signal);
    const whole = range === undefined || (range.offset === 0 && (range.length ?? size) >= size);
    if (!whole || options.verify === false) return stream;
    if (size !== desc.size) {
      stream.destroy();
      throw dataLoss(`content ${desc.digest}: stored size is ${size}, descriptor says ${desc.size}`);
    }
    return pipeline(stream, new VerifyingStream(desc.digest, desc.size), () => {});
  }

  private async openRange(
    d: Digest,
    range: ByteRange | undefined,
    signal: AbortSignal | undefined,
  ): Promise<{ stream: FileRange; size: number }> {
    const { offset, length } = checkRange(range);
    // A shared handle: many small reads of one blob (ctr reads 32 KiB at a time) share one open and stat.
    const h = await this.handle(d);
    const size = h.size;
    if (offset > size) {
      h.release();
      throw outOfRange(`read past object length ${size} bytes`);
    }
    const end = length === undefined ? size : Math.min(size, offset + length);
    // 1 MiB reads: whole-layer readers (unpack, copies) take a quarter of the thread-pool round trips of
    // 256 KiB ones, and gunzip decodes bigger pieces faster (read+gunzip of 45 MiB 57 -> 38 ms).
    const file = { fh: h.fh, name: this.layout.blobPath(d), release: h.release };
    const stream = new FileRange(file, offset, Math.max(offset, end), { signal, size });
    return { stream, size };
  }
}

/**
 * Removes what a commit leaves when it stored the blob but could not remove its ingest: a directory without
 * data whose expected blob exists (the rule a writer opening that ref applies), unless a live writer holds
 * its ref. One without the blob is an ingest a crash in its commit restarted from zero: it stays.
 */
async function removeCommittedIngests(layout: Layout): Promise<void> {
  for (const key of await readdir(layout.ingestRoot)) {
    const dir = join(layout.ingestRoot, key);
    const meta = await readMetaFile(join(dir, 'meta.json'));
    if (meta?.expected === undefined || layout.ingestKey(meta.ref) !== key) continue;
    if ((await exists(join(dir, 'data'))) || !(await exists(layout.blobPath(meta.expected)))) continue;
    let lock: RefLock;
    try {
      lock = await acquireRefLock(layout.lockPath(meta.ref), meta.ref, layout.tmpDir);
    } catch (err) {
      if (isUnavailable(err)) continue;
      throw err;
    }
    try {
      if (!(await exists(join(dir, 'data')))) await rm(dir, { recursive: true, force: true });
    } finally {
      await lock.release();
    }
  }
}

function checkRange(range: ByteRange | undefined): { offset: number; length: number | undefined } {
  const offset = range?.offset ?? 0;
  const length = range?.length;
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw invalidArgument(`invalid read offset ${JSON.stringify(offset)}`);
  }
  if (length !== undefined && (!Number.isSafeInteger(length) || length < 0)) {
    throw invalidArgument(`invalid read length ${JSON.stringify(length)}`);
  }
  return { offset, length };
}

/** A range of a blob of `size` bytes as [offset, end): clipped at the end; OutOfRange past it. */
function clipRange(range: ByteRange | undefined, size: number): { offset: number; end: number } {
  const { offset, length } = checkRange(range);
  if (offset > size) throw outOfRange(`read past object length ${size} bytes`);
  return { offset, end: length === undefined ? size : Math.min(size, offset + length) };
}

/** Appends a stream in batches; more bytes than expected empty the ingest (they are not that content). */
async function writeBatched(
  w: IngestWriter,
  stream: Readable,
  expected: { digest: Digest; size: number },
): Promise<void> {
  let received = w.offset;
  let tooMany = false;
  try {
    await appendStream(w, stream, (bytes) => {
      received += bytes.byteLength;
      if (received > expected.size) {
        tooMany = true;
        throw failedPrecondition(
          `content ${expected.digest}: more than the expected ${expected.size} bytes: failed precondition`,
        );
      }
    });
  } catch (err) {
    if (tooMany) await w.truncate(0);
    throw err;
  }
}
