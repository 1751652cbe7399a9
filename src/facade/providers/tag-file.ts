// The tags a facade resolved, kept in a file so that a restarted facade still knows them: while a tag's
// registry cannot be reached, its last digest stands in (stale-if-error, service.ts), and after a restart
// that needs this memory. One JSON document, rewritten whole (a temp file renamed over it) a moment after
// something changed, bounded in entries. A file that cannot be read or does not check out is reported and
// left out: it is only a cache. Its directory is made by whoever names the file; one removed meanwhile is
// not made again.
import { randomBytes } from 'node:crypto';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { isDigest } from '../../oci/digest.ts';
import { MAX_MANIFEST_BYTES } from '../../oci/manifest.ts';
import { parseNormalizedReference } from '../../oci/reference.ts';

/** A tag's last resolution: the descriptor it pointed at, and when (ms since the epoch). */
export interface ResolvedTag {
  ref: string;
  digest: string;
  mediaType: string;
  size: number;
  at: number;
}

/** Bytes of one entry at most, so a file of `maxEntries` is bounded before it is parsed. */
const MAX_ENTRY_BYTES = 1024;

export interface TagFileOptions {
  /** Entries kept at most (the most recent). */
  maxEntries: number;
  /** How long after a change the file is written (changes meanwhile go in the same write). */
  delayMs?: number;
  /** The file could not be read, did not check out, or could not be written. */
  onError?(err: unknown, action: 'read' | 'write'): void;
}

export class TagFile {
  private readonly path: string;
  private readonly o: TagFileOptions;
  private timer: NodeJS.Timeout | undefined;
  private pending: (() => ResolvedTag[]) | undefined;
  private writing: Promise<void> = Promise.resolve();

  constructor(path: string, options: TagFileOptions) {
    this.path = path;
    this.o = options;
  }

  /** The entries in the file that check out (none when it is missing or unreadable). */
  async load(): Promise<ResolvedTag[]> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.o.onError?.(err, 'read');
      return [];
    }
    try {
      if (text.length > this.o.maxEntries * MAX_ENTRY_BYTES)
        throw new Error(`${text.length} bytes is too large`);
      const doc: unknown = JSON.parse(text);
      if (!Array.isArray(doc)) throw new Error('not a list');
      return doc.filter(isResolvedTag).slice(-this.o.maxEntries);
    } catch (err) {
      this.o.onError?.(new Error(`${this.path}: ${(err as Error).message}`), 'read');
      return [];
    }
  }

  /** Writes `entries()` soon (once for any number of calls meanwhile). */
  changed(entries: () => ResolvedTag[]): void {
    this.pending = entries;
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      void this.write();
    }, this.o.delayMs ?? 2000);
    this.timer.unref();
  }

  /** Writes what changed now, and waits for writes under way. */
  async flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.write();
  }

  private write(): Promise<void> {
    const entries = this.pending;
    this.pending = undefined;
    if (!entries) return this.writing;
    this.writing = this.writing.then(async () => {
      const tmp = `${this.path}.${randomBytes(6).toString('hex')}.tmp`;
      try {
        await writeFile(tmp, JSON.stringify(entries().slice(-this.o.maxEntries)));
        await rename(tmp, this.path);
      } catch (err) {
        await rm(tmp, { force: true }).catch(() => {});
        this.o.onError?.(err, 'write');
      }
    });
    return this.writing;
  }
}

function isResolvedTag(v: unknown): v is ResolvedTag {
  if (typeof v !== 'object' || v === null) return false;
  const e = v as Record<string, unknown>;
  if (typeof e.ref !== 'string' || typeof e.digest !== 'string' || typeof e.mediaType !== 'string')
    return false;
  if (!isDigest(e.digest) || e.ref.length > 512 || e.mediaType.length > 256) return false;
  if (!Number.isSafeInteger(e.size) || (e.size as number) <= 0 || (e.size as number) > MAX_MANIFEST_BYTES) {
    return false;
  }
  if (!Number.isFinite(e.at)) return false;
  try {
    parseNormalizedReference(e.ref);
  } catch {
    return false;
  }
  return true;
}
