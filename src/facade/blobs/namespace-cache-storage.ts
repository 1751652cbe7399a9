// The facade's blob cache on the daemon's one content store (`strata up`): the cache's blobs are the content
// rows of one metadata namespace. Letting one go deletes the row, never bytes: the daemon's garbage
// collector frees the bytes once no namespace holds them. A blob the daemon holds in any namespace is
// linked into the cache's namespace instead of fetched, so no blob is stored twice.
import type { Readable } from 'node:stream';
import type { FollowOptions } from '../../content/follow.ts';
import { alreadyExists, isAlreadyExists, isUnavailable } from '../../errors.ts';
import { backendRef, type ContentView, type NamespacedWriter } from '../../metadata/content.ts';
import { LABEL_GC_ROOT } from '../../metadata/gc-labels.ts';
import type { ByteRange } from '../../oci/blob.ts';
import type { Descriptor } from '../../oci/descriptor.ts';
import type { Digest } from '../../oci/digest.ts';
import {
  type CacheStorage,
  type CacheWriter,
  ignoreNotFound,
  ingestWriter,
  type StoredBlob,
} from './cache-storage.ts';

export const DEFAULT_CACHE_NAMESPACE = 'strata-facade-cache';

/** The GC keeps a cache row until the cache lets it go. */
const CACHE_LABELS = { [LABEL_GC_ROOT]: 'facade-cache' };

/**
 * The cache's blobs as the content rows of one namespace of the daemon's metadata database, their bytes in
 * its one content store. The daemon owns both and closes them.
 */
export class NamespaceCacheStorage implements CacheStorage {
  readonly where: string;
  readonly namespace: string;
  private readonly view: ContentView;
  private links = 0;

  constructor(view: ContentView, namespace = DEFAULT_CACHE_NAMESPACE) {
    this.view = view;
    this.namespace = namespace;
    this.where = `content store ${view.store.root} (namespace ${namespace})`;
  }

  async load(): Promise<StoredBlob[]> {
    const ns = this.namespace;
    // Every ingest left, also those without a status (a link's shared writer, a reserved ingest).
    for (const ref of this.view.ingestRefs(ns)) await this.abort(ref);
    const rows = await this.view.list(ns, []);
    return rows.map((r) => ({ digest: r.digest, size: r.size, storedAt: r.createdAt.getTime() }));
  }

  async link(desc: Descriptor): Promise<boolean> {
    if (!(await this.view.store.has(desc.digest))) return false;
    // A writer sharing the bytes on disk: its ingest record holds them against a collection until the
    // commit has added the row (and the commit checks they are still there).
    let w: NamespacedWriter;
    try {
      w = await this.view.writer(this.namespace, `link-${++this.links}-${desc.digest}`, {
        expected: desc.digest,
        total: desc.size,
      });
    } catch (err) {
      if (isAlreadyExists(err)) return true;
      throw err;
    }
    try {
      if (w.offset !== desc.size) {
        // Not shared (its size disagrees, or the bytes went meanwhile): a fill fetches it.
        await w.abort();
        return false;
      }
      await w.commit(desc.size, desc.digest, CACHE_LABELS);
      return true;
    } catch (err) {
      if (isAlreadyExists(err)) return true;
      if (isUnavailable(err)) return false;
      throw err;
    } finally {
      await w.close();
    }
  }

  reader(digest: Digest, range?: ByteRange): Promise<Readable> {
    return this.view.store.reader(digest, range);
  }

  async writer(ref: string, expected?: { digest: Digest; size: number }): Promise<CacheWriter> {
    let w: NamespacedWriter;
    try {
      w = await this.view.writer(
        this.namespace,
        ref,
        expected && { expected: expected.digest, total: expected.size },
      );
    } catch (err) {
      // The namespace has it already (a row added beside the cache): nothing to write.
      if (!isAlreadyExists(err) || !expected) throw err;
      return stored(expected);
    }
    return ingestWriter(w, (size, digest) => w.commit(size ?? 0, digest ?? '', CACHE_LABELS));
  }

  follow(ref: string, desc: Descriptor, options: FollowOptions): Promise<Readable> {
    return this.view.store.follow(backendRef(this.namespace, ref), desc, options);
  }

  abort(ref: string): Promise<void> {
    return this.view.abort(this.namespace, ref).catch(ignoreNotFound);
  }

  async remove(digest: Digest): Promise<void> {
    try {
      this.view.delete(this.namespace, digest);
    } catch (err) {
      ignoreNotFound(err);
    }
  }

  async discard(digest: Digest): Promise<void> {
    await this.remove(digest);
    // The bytes are every holder's: the content store deletes them only after finding them wrong itself.
    await this.view.store.deleteIfCorrupt(digest);
  }

  space(): Promise<{ free: number; total: number }> {
    return this.view.store.space();
  }

  writable(): Promise<boolean> {
    return this.view.store.writable();
  }

  async close(): Promise<void> {}
}

/** The writer of a blob stored already: it has every byte, and its commit has nothing to do. */
function stored({ digest, size }: { digest: Digest; size: number }): CacheWriter {
  return {
    offset: size,
    digest: () => digest,
    write: async () => {
      throw alreadyExists(`blob of ${size} bytes is stored already`);
    },
    commit: async () => {},
    close: async () => {},
  };
}
