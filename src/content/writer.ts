// A writer for one ingest ref. It holds the ref's lock from open to close or commit, appends at the
// persisted offset, keeps a running digest, and commits by verifying size and digest, making the data
// durable, and linking it into blobs/ in one atomic step that never replaces an existing blob.
import {
  chmodSync,
  constants,
  linkSync,
  mkdirSync,
  renameSync,
  rmSync,
  unlinkSync,
  utimesSync,
} from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { aborted, alreadyExists, failedPrecondition, invalidArgument } from '../errors.ts';
import { type Algorithm, algorithmOf, type Digest, Digester, parseDigest } from '../oci/digest.ts';
import { Growth } from './follow.ts';
import { exists, fsyncDir, isEEXIST, tmpName } from './fs-util.ts';
import { type IngestMeta, readMetaFile, statusOf, writeMeta } from './ingest.ts';
import { type Layout, validateRef } from './layout.ts';
import { acquireRefLock, type RefLock } from './ref-lock.ts';
import type { ResumePoints } from './resume-points.ts';
import type { CommitStep, IngestStatus, StoreHooks, WriterOptions } from './types.ts';

const HASH_BUFFER = 1 << 20;

/** Hashes the first `size` bytes of an open file. */
async function hashPrefix(fh: FileHandle, size: number, alg: Algorithm): Promise<Digester> {
  const digester = new Digester(alg);
  const buf = Buffer.allocUnsafe(Math.min(HASH_BUFFER, Math.max(size, 1)));
  let pos = 0;
  while (pos < size) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, size - pos), pos);
    if (bytesRead === 0) throw failedPrecondition(`ingest data shrank while reading it at ${pos} of ${size}`);
    digester.update(buf.subarray(0, bytesRead));
    pos += bytesRead;
  }
  return digester;
}

export function validateWriterOptions(opts: WriterOptions): void {
  if (opts.expected !== undefined) parseDigest(opts.expected);
  if (opts.total !== undefined && (!Number.isSafeInteger(opts.total) || opts.total < 0)) {
    throw invalidArgument(`invalid total ${JSON.stringify(opts.total)}: want a non-negative integer`);
  }
  if (opts.syncEvery !== undefined && (!Number.isSafeInteger(opts.syncEvery) || opts.syncEvery < 0)) {
    throw invalidArgument(`invalid syncEvery ${JSON.stringify(opts.syncEvery)}: want a non-negative integer`);
  }
}

interface WriterInit {
  layout: Layout;
  ref: string;
  lock: RefLock;
  hooks: StoreHooks;
  fh: FileHandle;
  meta: IngestMeta;
  digester: Digester;
  updatedAt: number;
  live: Map<string, Growth> | undefined;
  resume: ResumePoints | undefined;
  syncEvery: number;
  durable: boolean;
}

export class IngestWriter {
  readonly ref: string;
  private readonly layout: Layout;
  private readonly lock: RefLock;
  private readonly hooks: StoreHooks;
  private fh: FileHandle | undefined;
  private readonly meta: IngestMeta;
  private digester: Digester;
  /** ms since the epoch (a number: a write must not allocate a Date). */
  private updatedAt: number;
  private state: 'open' | 'committed' | 'closed' = 'open';
  private tail: Promise<unknown> = Promise.resolve();
  /** What readers following this ingest see (see follow.ts). */
  private readonly growth: Growth;
  private readonly live: Map<string, Growth> | undefined;
  private readonly resume: ResumePoints | undefined;
  private readonly syncEvery: number;
  /** The offset when the last background sync started. */
  private syncedFrom: number;
  /** The background sync under way (see WriterOptions.syncEvery); awaited before commit and close. */
  private syncing: Promise<void> | undefined;
  /**
   * A failed sync of this ingest. The kernel tells a sync failure once per open file and may have dropped
   * the bytes it could not write, so a later sync on the same file succeeds without them: the ingest is
   * never committed once one failed, and close() removes it rather than keep it to be resumed.
   */
  private syncFailure: Error | undefined;
  private readonly durable: boolean;

  private constructor(init: WriterInit) {
    this.ref = init.ref;
    this.layout = init.layout;
    this.lock = init.lock;
    this.hooks = init.hooks;
    this.fh = init.fh;
    this.meta = init.meta;
    this.digester = init.digester;
    this.updatedAt = init.updatedAt;
    this.growth = new Growth(init.ref, init.layout.ingestData(init.ref), this.digester.size);
    this.live = init.live;
    this.resume = init.resume;
    this.syncEvery = init.syncEvery;
    this.syncedFrom = this.digester.size;
    this.durable = init.durable;
    this.live?.set(init.ref, this.growth);
  }

  /**
   * Opens (or resumes) the ingest for `ref`. Throws Unavailable when another writer holds the ref, and
   * AlreadyExists when `expected` is already committed. A resumed ingest whose declared total or digest
   * conflicts with `opts` is restarted from zero: its bytes belong to other content.
   */
  static async open(
    layout: Layout,
    ref: string,
    opts: WriterOptions,
    hooks: StoreHooks,
    live?: Map<string, Growth>,
    resume?: ResumePoints,
    durable = true,
  ): Promise<IngestWriter> {
    validateRef(ref);
    validateWriterOptions(opts);
    const lock = await acquireRefLock(layout.lockPath(ref), ref, layout.tmpDir);
    let fh: FileHandle | undefined;
    try {
      const metaPath = layout.ingestMeta(ref);
      let meta = await readMetaFile(metaPath);
      if (meta !== undefined && meta.ref !== ref) meta = undefined;
      if (opts.expected !== undefined && (await exists(layout.blobPath(opts.expected)))) {
        // An ingest for exactly this content is a leftover of a commit that stopped before cleaning up
        // (should it stay, the next open of the store removes it).
        if (meta?.expected === opts.expected) removeIngestDir(layout, ref);
        throw alreadyExists(`content ${opts.expected}: already exists`);
      }
      // Metadata steps are synchronous calls (see fs-util.ts).
      mkdirSync(layout.ingestDir(ref), { recursive: true });
      const conflict =
        meta !== undefined &&
        ((opts.total !== undefined && opts.total > 0 && meta.total > 0 && opts.total !== meta.total) ||
          (opts.expected !== undefined && meta.expected !== undefined && opts.expected !== meta.expected));
      let flags = constants.O_RDWR | constants.O_CREAT;
      if (meta === undefined || conflict) {
        meta = { ref, startedAt: new Date().toISOString(), total: opts.total ?? 0 };
        if (opts.expected !== undefined) meta.expected = opts.expected;
        await writeMeta(layout, meta, durable);
        flags |= constants.O_TRUNC;
      } else {
        const total = meta.total > 0 ? meta.total : (opts.total ?? 0);
        const expected = meta.expected ?? opts.expected;
        if (total !== meta.total || expected !== meta.expected) {
          meta = { ...meta, total };
          if (expected !== undefined) meta.expected = expected;
          await writeMeta(layout, meta, durable);
        }
      }
      fh = await open(layout.ingestData(ref), flags, 0o644);
      const st = await fh.stat();
      const alg = meta.expected !== undefined ? algorithmOf(meta.expected) : 'sha256';
      const digester = resume?.take(ref, st, alg) ?? (await hashPrefix(fh, st.size, alg));
      // A store that is not durable does not sync in the background either.
      const syncEvery = durable ? (opts.syncEvery ?? 0) : 0;
      const init = {
        layout,
        ref,
        lock,
        hooks,
        fh,
        meta,
        digester,
        updatedAt: st.mtimeMs,
        live,
        resume,
        syncEvery,
        durable,
      };
      return new IngestWriter(init);
    } catch (err) {
      await fh?.close().catch(() => {});
      await lock.release();
      throw err;
    }
  }

  /** Bytes written so far, including those of earlier, interrupted writers of this ref. */
  get offset(): number {
    return this.digester.size;
  }

  /** The digest of the bytes written so far. */
  digest(): Digest {
    return this.digester.digest();
  }

  status(): IngestStatus {
    return statusOf(this.meta, this.offset, new Date(this.updatedAt));
  }

  /**
   * Appends `chunk` (or the chunks, in order) at the current offset. The bytes are hashed while the disk
   * write is under way; a failed write cuts the file back and re-hashes, so file and digest stay in step.
   */
  write(chunk: Uint8Array | readonly Uint8Array[]): Promise<void> {
    return this.serial(async () => {
      const fh = this.openHandle();
      if (this.syncFailure) throw this.syncFailure;
      const at = this.offset;
      const written = chunk instanceof Uint8Array ? writeOne(fh, chunk, at) : writeAll(fh, chunk, at);
      written.catch(() => {}); // awaited below, after hashing
      if (chunk instanceof Uint8Array) this.digester.update(chunk);
      else for (const c of chunk) this.digester.update(c);
      try {
        await written;
      } catch (err) {
        await fh.truncate(at).catch(() => {});
        this.digester = await hashPrefix(fh, at, this.digester.algorithm);
        throw err;
      }
      this.updatedAt = Date.now();
      this.growth.advance(this.offset);
      this.syncAhead(fh);
    });
  }

  /** Starts a background sync when syncEvery bytes came since the last one and none is under way. */
  private syncAhead(fh: FileHandle): void {
    if (this.syncEvery === 0 || this.syncing || this.offset - this.syncedFrom < this.syncEvery) return;
    this.syncedFrom = this.offset;
    this.hooks.onSyncAhead?.(this.ref, this.offset);
    // A failure is reported by the next write or the commit (see syncFailure).
    this.syncing = fh
      .datasync()
      .catch((err: Error) => {
        this.syncFailure ??= err;
      })
      .finally(() => {
        this.syncing = undefined;
      });
  }

  /** Cuts the ingest back to `size` bytes (0 restarts it) and re-hashes what is left. */
  truncate(size: number): Promise<void> {
    return this.serial(async () => {
      const fh = this.openHandle();
      if (!Number.isSafeInteger(size) || size < 0 || size > this.offset) {
        throw invalidArgument(`cannot truncate ingest ${this.ref} to ${size}: it holds ${this.offset} bytes`);
      }
      await fh.truncate(size);
      this.growth.restart(size);
      this.digester = await hashPrefix(fh, size, this.digester.algorithm);
      this.updatedAt = Date.now();
    });
  }

  /**
   * Declares the ingest's size anew (0: unknown), as if it had been opened with it: what a commit without
   * a size checks, and what its status reports as total.
   */
  declareTotal(total: number): Promise<void> {
    return this.serial(async () => {
      this.openHandle();
      if (!Number.isSafeInteger(total) || total < 0) {
        throw invalidArgument(`invalid total ${JSON.stringify(total)}: want a non-negative integer`);
      }
      if (total === this.meta.total) return;
      this.meta.total = total;
      await writeMeta(this.layout, this.meta, this.durable);
    });
  }

  /**
   * Verifies and commits the ingest as a blob. `size` 0 and `expected` undefined/empty fall back to what
   * the writer was opened with (and skip the check if that is unknown too). Labels are accepted for the
   * caller's convenience only: they live in the metadata layer, not in the blob store.
   * Size or digest mismatch → FailedPrecondition, and the writer stays open. Blob already there →
   * AlreadyExists, and the ingest is removed.
   */
  commit(size = 0, expected?: Digest | '', _labels?: Record<string, string>): Promise<Digest> {
    return this.serial(async () => {
      const fh = this.openHandle();
      if (!Number.isSafeInteger(size) || size < 0) {
        throw invalidArgument(`invalid commit size ${JSON.stringify(size)}`);
      }
      const wantSize = size > 0 ? size : this.meta.total;
      if (wantSize > 0 && wantSize !== this.offset) {
        throw failedPrecondition(
          `unexpected commit size ${this.offset}, expected ${wantSize}: failed precondition`,
        );
      }
      const want = expected ? parseDigest(expected) : this.meta.expected;
      let actual = this.digest();
      if (want !== undefined && algorithmOf(want) !== this.digester.algorithm) {
        actual = (await hashPrefix(fh, this.offset, algorithmOf(want))).digest();
      }
      if (want !== undefined && actual !== want) {
        throw failedPrecondition(`unexpected commit digest ${actual}, expected ${want}: failed precondition`);
      }
      const blobPath = this.layout.blobPath(actual);
      if (await exists(blobPath)) {
        await this.finish('committed', true, blobPath);
        throw alreadyExists(`content ${actual}: already exists`);
      }
      await this.link(fh, actual, blobPath);
      return actual;
    });
  }

  /**
   * Releases the lock; the ingest stays on disk so a later writer can resume it, unless a sync of it
   * failed. Readers following an uncommitted ingest fail with `reason` (Aborted when none is given).
   */
  close(reason?: Error): Promise<void> {
    return this.serial(async () => {
      if (this.state !== 'open') return;
      this.growth.fail(reason ?? aborted(`ingest ${this.ref} closed before its commit`));
      // A background sync under way may yet fail: the ingest is kept only once it did not.
      await this.syncing;
      if (this.resume && this.fh && !this.syncFailure) {
        const file = await this.fh.stat().catch(() => undefined);
        if (file) this.resume.remember(this.ref, this.digester, file);
      }
      await this.finish('closed', this.syncFailure !== undefined);
    });
  }

  private async link(fh: FileHandle, actual: Digest, blobPath: string): Promise<void> {
    const dataPath = this.layout.ingestData(this.ref);
    await this.step('sync');
    await this.syncing;
    if (this.syncFailure) throw this.syncFailure;
    if (this.durable) {
      try {
        await fh.sync();
      } catch (err) {
        this.syncFailure = err as Error;
        throw err;
      }
    }
    await fh.close();
    this.fh = undefined;
    // From here the data is out of the ingest: a crash leaves a tmp file (removed at the next open) and
    // an ingest that restarts from zero, never a partial blob or an ingest sharing the blob's inode.
    // The moves and links are synchronous calls (see fs-util.ts): this is what a follower's last byte
    // waits for.
    await this.step('move');
    const tmp = tmpName(this.layout.tmpDir, 'blob');
    renameSync(dataPath, tmp);
    let linked = false;
    try {
      chmodSync(tmp, 0o444);
      const now = new Date();
      utimesSync(tmp, now, now);
      await this.step('link');
      try {
        linkSync(tmp, blobPath);
        linked = true;
      } catch (err) {
        if (!isEEXIST(err)) throw err;
        unlinkSync(tmp);
        await this.finish('committed', true, blobPath);
        throw alreadyExists(`content ${actual}: already exists`);
      }
      // The blob's name must be on the disk before the commit counts: a name a crash could take away
      // would leave the blob's metadata pointing at nothing.
      if (this.durable) await fsyncDir(this.layout.blobDir(algorithmOf(actual)));
    } catch (err) {
      if (this.state === 'open' && linked) {
        // The blob's name is out: another writer may have found it already and reported the blob as
        // stored, so it is not taken back. The commit still fails (the name may not outlive a crash),
        // and the data, the blob's now, leaves the ingest; a new writer finds the blob.
        try {
          unlinkSync(tmp);
        } catch {}
        await this.finish('closed', true, undefined, err as Error);
      } else if (this.state === 'open') {
        // Put the verified data back so the ingest can still be committed later, writable again (the
        // next writer opens it for writing, which a user other than root cannot do to a read-only file).
        try {
          renameSync(tmp, dataPath);
          chmodSync(dataPath, 0o644);
        } catch {}
        await this.finish('closed', false, undefined, err as Error);
      }
      throw err;
    }
    await this.step('cleanup');
    // The blob is committed; a tmp name left behind goes at the next open.
    try {
      unlinkSync(tmp);
    } catch {}
    await this.finish('committed', true, blobPath);
  }

  /** `reason`: why followers of an uncommitted ingest fail (the commit's error, when it failed). */
  private async finish(
    state: 'committed' | 'closed',
    removeIngest: boolean,
    blobPath?: string,
    reason?: Error,
  ): Promise<void> {
    this.state = state;
    if (blobPath === undefined) {
      this.growth.fail(reason ?? aborted(`ingest ${this.ref} closed before its commit`));
    }
    if (this.live?.get(this.ref) === this.growth) this.live.delete(this.ref);
    try {
      // The handle stays open until a background sync on it is done.
      await this.syncing;
      await this.fh?.close();
      this.fh = undefined;
      if (removeIngest && state === 'committed') removeIngestDir(this.layout, this.ref);
      else if (removeIngest) rmSync(this.layout.ingestDir(this.ref), { recursive: true, force: true });
    } finally {
      // A stored blob stays committed when its lock file cannot be removed: that file is stale, and the
      // next writer of the ref takes it over (see ref-lock.ts).
      await this.lock.release().catch((err: unknown) => {
        if (blobPath === undefined) throw err;
      });
      // Last, so followers see the end only once the store is settled.
      if (blobPath !== undefined) this.growth.commit(blobPath);
    }
  }

  private async step(step: CommitStep): Promise<void> {
    await this.hooks.beforeCommitStep?.(step, this.ref);
  }

  private openHandle(): FileHandle {
    if (this.state !== 'open' || this.fh === undefined) {
      throw failedPrecondition(`writer for ref ${this.ref} is ${this.state}: failed precondition`);
    }
    return this.fh;
  }

  /** One operation at a time, in call order, so offsets and the running digest stay consistent. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn, fn);
    this.tail = run.catch(() => {});
    return run;
  }
}

/**
 * Removes the ingest directory of a blob that is stored. It must not undo the blob's commit: a failure
 * leaves the ingest's metadata without data, which the next open of the store removes (or of the ref, with
 * the digest expected) when it names the digest.
 */
function removeIngestDir(layout: Layout, ref: string): void {
  try {
    rmSync(layout.ingestDir(ref), { recursive: true, force: true });
  } catch {}
}

/** Writes one chunk at `position`, continuing after short writes. */
async function writeOne(fh: FileHandle, chunk: Uint8Array, position: number): Promise<void> {
  for (let done = 0; done < chunk.byteLength; ) {
    const { bytesWritten } = await fh.write(chunk, done, chunk.byteLength - done, position + done);
    done += bytesWritten;
  }
}

/** Writes the chunks at `position`, continuing after short writes. */
async function writeAll(fh: FileHandle, chunks: readonly Uint8Array[], position: number): Promise<void> {
  let pending = chunks.some((c) => c.byteLength === 0) ? chunks.filter((c) => c.byteLength > 0) : chunks;
  let left = 0;
  for (const c of pending) left += c.byteLength;
  let at = position;
  while (pending.length > 0) {
    let { bytesWritten } = await fh.writev(pending, at);
    // The usual case: all of it in one call, so no list of the rest is made.
    left -= bytesWritten;
    if (left === 0) return;
    at += bytesWritten;
    const rest: Uint8Array[] = [];
    for (const c of pending) {
      if (bytesWritten >= c.byteLength) bytesWritten -= c.byteLength;
      else {
        rest.push(c.subarray(bytesWritten));
        bytesWritten = 0;
      }
    }
    pending = rest;
  }
}
