// Open file handles of committed blobs, kept for a few seconds after use. Clients read blobs in many small
// ranged reads (ctr's `content get` issues one Read per 32 KiB), and opening, statting and closing the file
// for each one costs more than the read itself. Blobs are immutable, so a handle stays valid; one whose
// file the GC unlinked still reads the same bytes and holds the space only until it is closed.
// Handles in use are counted apart; only idle ones sit in the LRU, so eviction never closes a handle a
// reader holds.
import { type FileHandle, open } from 'node:fs/promises';
import { LRUCache } from 'lru-cache';
import { notFound } from '../errors.ts';
import type { Digest } from '../oci/digest.ts';
import { isENOENT } from './fs-util.ts';

export interface BlobHandle {
  readonly fh: FileHandle;
  /** The file's size (blobs never change, so it is read once per open). */
  readonly size: number;
  /** Gives the handle back; it stays open for reuse until idle or evicted. */
  release(): void;
}

interface Opened {
  fh: FileHandle;
  size: number;
}

interface Entry {
  fh: Promise<Opened>;
  refs: number;
}

async function openBlob(path: string): Promise<Opened> {
  const fh = await open(path, 'r');
  try {
    return { fh, size: (await fh.stat()).size };
  } catch (err) {
    await fh.close();
    throw err;
  }
}

export interface BlobHandlesOptions {
  /** Most handles kept open while unused. Default 64. */
  maxIdle?: number;
  /** Unused handles are closed after this long. Default 5 s. */
  idleMs?: number;
}

export class BlobHandles {
  private readonly pathOf: (d: Digest) => string;
  private readonly inUse = new Map<Digest, Entry>();
  /** Unused handles; evicting or expiring one closes it. Undefined when none are kept (maxIdle 0). */
  private readonly idle: LRUCache<Digest, Entry> | undefined;
  /** Closes under way, so close() can wait for them. */
  private readonly closing = new Set<Promise<void>>();
  private closed = false;

  constructor(pathOf: (d: Digest) => string, opts: BlobHandlesOptions = {}) {
    this.pathOf = pathOf;
    const maxIdle = opts.maxIdle ?? 64;
    if (maxIdle > 0) {
      this.idle = new LRUCache<Digest, Entry>({
        max: maxIdle,
        ttl: opts.idleMs ?? 5000,
        ttlAutopurge: true,
        // An entry taken out for use has refs > 0 when it leaves the LRU and must stay open.
        dispose: (e) => {
          if (e.refs === 0) this.closeEntry(e);
        },
      });
    }
  }

  /** A handle on the blob's file; NotFound `content digest <d>: not found` when it is not on disk. */
  async acquire(d: Digest): Promise<BlobHandle> {
    if (this.closed) throw notFound(`content digest ${d}: not found`);
    let e = this.inUse.get(d);
    if (!e) {
      const path = this.pathOf(d);
      e = this.idle?.get(d) ?? { fh: openBlob(path), refs: 0 };
      e.refs++;
      this.idle?.delete(d);
      this.inUse.set(d, e);
      const entry = e;
      // A failed open is not kept.
      e.fh.catch(() => {
        if (this.inUse.get(d) === entry) this.inUse.delete(d);
      });
    } else {
      e.refs++;
    }
    let opened: Opened;
    try {
      opened = await e.fh;
    } catch (err) {
      e.refs--;
      if (isENOENT(err)) throw notFound(`content digest ${d}: not found`);
      throw err;
    }
    const entry = e;
    let released = false;
    return {
      fh: opened.fh,
      size: opened.size,
      release: () => {
        if (released) return;
        released = true;
        if (--entry.refs > 0) return;
        // A handle forgotten meanwhile is of a deleted file: closed, never kept for the name's next file.
        const current = this.inUse.get(d) === entry;
        if (current) this.inUse.delete(d);
        if (this.closed || !this.idle || !current) this.closeEntry(entry);
        else this.idle.set(d, entry);
      },
    };
  }

  /**
   * Forgets the blob's handle (its file was deleted, and a new file of that name may follow): the next
   * acquire opens afresh; readers holding the old handle keep it until they release it.
   */
  forget(d: Digest): void {
    this.idle?.delete(d);
    this.inUse.delete(d);
  }

  /** Closes every unused handle; handles in use close when released. */
  async close(): Promise<void> {
    this.closed = true;
    this.idle?.clear();
    await Promise.all(this.closing);
  }

  private closeEntry(e: Entry): void {
    const p = e.fh
      .then((o) => o.fh.close())
      .catch(() => {})
      .finally(() => this.closing.delete(p));
    this.closing.add(p);
  }
}
