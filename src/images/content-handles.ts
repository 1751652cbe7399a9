// Open file handles of committed blobs, kept for a few seconds after use. Clients read blobs in many small
// ranged reads (ctr's `content get` issues one Read per 32 KiB), and opening, statting and closing the file
// for each one costs more than the read itself. Blobs are immutable, so a handle stays valid; one whose
// file the GC unlinked still reads the same bytes and holds the space only until it is closed.
import type { FileHandle } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import { Layout } from '../content/layout.ts';
import { notFound } from '../errors.ts';
import type { Digest } from '../oci/digest.ts';

export interface BlobHandle {
  readonly fh: FileHandle;
  /** Gives the handle back; it stays open for reuse until idle or evicted. */
  release(): void;
}

interface Entry {
  fh: Promise<FileHandle>;
  refs: number;
  lastUsed: number;
}

export interface ContentHandlesOptions {
  /** Most handles kept open while unused. Default 64. */
  maxIdle?: number;
  /** Unused handles are closed after this long. Default 5 s. */
  idleMs?: number;
}

export class ContentHandles {
  private readonly layout: Layout;
  private readonly maxIdle: number;
  private readonly idleMs: number;
  /** In least-recently-used order (Map keeps insertion order; use moves an entry to the end). */
  private readonly entries = new Map<Digest, Entry>();
  private sweeper: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(contentRoot: string, opts: ContentHandlesOptions = {}) {
    this.layout = new Layout(contentRoot);
    this.maxIdle = opts.maxIdle ?? 64;
    this.idleMs = opts.idleMs ?? 5000;
  }

  /** A handle on the blob's file; NotFound `content digest <d>: not found` when it is not on disk. */
  async acquire(d: Digest): Promise<BlobHandle> {
    if (this.closed) throw notFound(`content digest ${d}: not found`);
    let e = this.entries.get(d);
    if (e) {
      this.entries.delete(d);
    } else {
      e = { fh: open(this.layout.blobPath(d), 'r'), refs: 0, lastUsed: 0 };
      // A failed open is not cached.
      e.fh.catch(() => {
        if (this.entries.get(d) === e) this.entries.delete(d);
      });
    }
    this.entries.set(d, e);
    e.refs++;
    let fh: FileHandle;
    try {
      fh = await e.fh;
    } catch (err) {
      e.refs--;
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw notFound(`content digest ${d}: not found`);
      throw err;
    }
    const entry = e;
    let released = false;
    return {
      fh,
      release: () => {
        if (released) return;
        released = true;
        entry.refs--;
        entry.lastUsed = Date.now();
        this.trim();
      },
    };
  }

  /** Closes every unused handle and stops the idle sweep; handles in use close when released. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
    await this.evict(() => true);
  }

  private trim(): void {
    if (this.closed) {
      void this.evict(() => true);
      return;
    }
    let idle = 0;
    for (const e of this.entries.values()) if (e.refs === 0) idle++;
    if (idle > this.maxIdle) {
      let excess = idle - this.maxIdle;
      void this.evict(() => excess-- > 0);
    }
    if (!this.sweeper && this.entries.size > 0) {
      this.sweeper = setInterval(() => {
        const cutoff = Date.now() - this.idleMs;
        void this.evict((e) => e.lastUsed <= cutoff);
        if (this.entries.size === 0 && this.sweeper) {
          clearInterval(this.sweeper);
          this.sweeper = undefined;
        }
      }, this.idleMs);
      this.sweeper.unref();
    }
  }

  /** Closes unused entries the predicate picks, oldest first. */
  private async evict(pick: (e: Entry) => boolean): Promise<void> {
    const closing: Array<Promise<void>> = [];
    for (const [d, e] of this.entries) {
      if (e.refs !== 0 || !pick(e)) continue;
      this.entries.delete(d);
      closing.push(e.fh.then((fh) => fh.close()).catch(() => {}));
    }
    await Promise.all(closing);
  }
}
