// Where the facade's blob cache keeps its blobs. The cache (cache.ts) decides what to keep and when (fills,
// eviction, checks); a storage holds the bytes and says which blobs are the cache's:
// - DirCacheStorage: a content store of the cache's own in a directory (`strata facade` alone), where the
//   cache's blobs are all the blobs there and letting one go deletes its file;
// - NamespaceCacheStorage (namespace-cache-storage.ts): the daemon's one content store (`strata up`), kept
//   in its own module so the facade alone does not load the metadata database.
import type { Readable } from 'node:stream';
import type { FollowOptions } from '../../content/follow.ts';
import { ContentStore, type IngestWriter } from '../../content/store.ts';
import { isNotFound } from '../../errors.ts';
import type { NamespacedWriter } from '../../metadata/content.ts';
import type { ByteRange } from '../../oci/blob.ts';
import type { Descriptor } from '../../oci/descriptor.ts';
import type { Digest } from '../../oci/digest.ts';

/** A blob the cache held when its storage was opened. */
export interface StoredBlob {
  digest: Digest;
  size: number;
  /** When it was stored (ms): the oldest is evicted first after a restart. */
  storedAt: number;
}

/** The ingest of one fill: resumable, and followed by readers (storage.follow) while it is written. */
export interface CacheWriter {
  /** Bytes written so far (all of them when the storage had the blob already). */
  readonly offset: number;
  /** Digest of the bytes so far. */
  digest(): Digest;
  write(chunks: Uint8Array | readonly Uint8Array[]): Promise<void>;
  /**
   * FailedPrecondition when the bytes are not `size` and `expected` (each checked when given); AlreadyExists
   * when the blob is stored already.
   */
  commit(size?: number, expected?: Digest): Promise<void>;
  /** Lets go of the ingest (kept for a resume); its followers fail with `reason`. */
  close(reason?: Error): Promise<void>;
}

export interface CacheStorage {
  /** Where the blobs are, for messages. */
  readonly where: string;
  /** Drops ingests a previous run left and lists the blobs the cache holds. */
  load(): Promise<StoredBlob[]>;
  /**
   * Makes a blob this storage has the bytes of (but the cache does not hold) the cache's, without copying:
   * whether it did. Always false for a storage of the cache's own.
   */
  link(desc: Descriptor): Promise<boolean>;
  /** Bytes of a blob the cache holds, unverified (it was checked at its commit or since start). */
  reader(digest: Digest, range?: ByteRange): Promise<Readable>;
  /** Opens (or resumes) the ingest `ref`, of a known blob or (no `expected`) of bytes hashed as written. */
  writer(ref: string, expected?: { digest: Digest; size: number }): Promise<CacheWriter>;
  /** Bytes of `desc` as the live ingest `ref` writes them, or of the stored blob once it is committed. */
  follow(ref: string, desc: Descriptor, options: FollowOptions): Promise<Readable>;
  /** Deletes an ingest (absent is fine). */
  abort(ref: string): Promise<void>;
  /** The cache no longer holds the blob (evicted). */
  remove(digest: Digest): Promise<void>;
  /** The blob's stored bytes are not the blob: the cache drops it, and the bytes go so it can be stored afresh. */
  discard(digest: Digest): Promise<void>;
  /** Free and total bytes of the file system the blobs are on. */
  space(): Promise<{ free: number; total: number }>;
  /** Whether a blob can be written right now (readiness). */
  writable(): Promise<boolean>;
  /** Closes what the storage opened itself. */
  close(): Promise<void>;
}

/** The cache's own content store in `dir`: every blob there is the cache's. */
export class DirCacheStorage implements CacheStorage {
  readonly where: string;
  private readonly store: ContentStore;

  private constructor(store: ContentStore) {
    this.store = store;
    this.where = `cache dir ${store.root}`;
  }

  static async open(dir: string): Promise<DirCacheStorage> {
    // Not durable: the cache verifies by digest what it finds after a restart before serving it, and a
    // commit's fsync would hold back the last byte a client following the fill waits for.
    return new DirCacheStorage(await ContentStore.open(dir, { durable: false }));
  }

  async load(): Promise<StoredBlob[]> {
    for (const st of await this.store.listStatuses()) await this.store.abort(st.ref);
    const found: StoredBlob[] = [];
    await this.store.walk((info) => {
      found.push({ digest: info.digest, size: info.size, storedAt: info.updatedAt.getTime() });
    });
    return found;
  }

  async link(_desc: Descriptor): Promise<boolean> {
    return false;
  }

  reader(digest: Digest, range?: ByteRange): Promise<Readable> {
    return this.store.reader(digest, range);
  }

  async writer(ref: string, expected?: { digest: Digest; size: number }): Promise<CacheWriter> {
    const w = await this.store.writer(ref, expected && { expected: expected.digest, total: expected.size });
    return ingestWriter(w, (size, digest) => w.commit(size, digest));
  }

  follow(ref: string, desc: Descriptor, options: FollowOptions): Promise<Readable> {
    return this.store.follow(ref, desc, options);
  }

  abort(ref: string): Promise<void> {
    return this.store.abort(ref).catch(ignoreNotFound);
  }

  remove(digest: Digest): Promise<void> {
    return this.store.delete(digest).catch(ignoreNotFound);
  }

  discard(digest: Digest): Promise<void> {
    return this.remove(digest);
  }

  space(): Promise<{ free: number; total: number }> {
    return this.store.space();
  }

  writable(): Promise<boolean> {
    return this.store.writable();
  }

  close(): Promise<void> {
    return this.store.close();
  }
}

/** A CacheWriter over a store's or a namespace's writer (both follow the IngestWriter's offset rules). */
export function ingestWriter(
  w: IngestWriter | NamespacedWriter,
  commit: (size: number | undefined, digest: Digest | undefined) => Promise<unknown>,
): CacheWriter {
  return {
    get offset() {
      return w.offset;
    },
    digest: () => w.digest(),
    write: (chunks) => w.write(chunks),
    commit: async (size, digest) => {
      await commit(size, digest);
    },
    close: (reason) => w.close(reason),
  };
}

export function ignoreNotFound(err: unknown): void {
  if (!isNotFound(err)) throw err;
}
