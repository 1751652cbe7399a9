// A value parsed from one or more files, read at start (a bad file is an error then) and again whenever one
// of them changes: fs.watch on their directories, an identity check (inode, size, mtime, ctime) on
// refresh(), and refresh() on demand (SIGHUP). Watchers miss some editors' and Kubernetes' atomic swaps,
// so callers may also refresh on use. A file rewritten in place passes through empty and partial states:
// files are read only once they have been still for a moment. A bad version is reported once and the
// previous value stays. Watching can be switched off: then only refresh() (SIGHUP) reads the files again.
import { type FSWatcher, watch } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { invalidArgument, messageOf } from '../errors.ts';

const DEFAULT_SETTLE_MS = 100;
// Files that keep changing are read anyway after this many waits.
const MAX_SETTLE_WAITS = 10;
const DEFAULT_MAX_BYTES = 64 * 1024 * 1024;

interface CommonOptions<T> {
  /** What the files hold, for messages (e.g. `htpasswd /etc/strata/htpasswd`). */
  what: string;
  /**
   * Watch the files (default true). false: they are read again only by refresh() (SIGHUP), and callers
   * that check on use leave that too (see `watching`), for file systems where watching does not work or
   * operators who apply changes deliberately.
   */
  watch?: boolean;
  onReload?: (value: T) => void;
  /** Told about a version that was refused (the previous value stays). */
  onReloadError?: (err: unknown) => void;
  /** How long the files must be unchanged before they are read (default 100 ms). */
  settleMs?: number;
  maxBytes?: number;
}

export type WatchedFilesOptions<T> = CommonOptions<T> &
  (
    | {
        /** Builds the value from the files' bytes (in `paths` order); throws on a bad version. */
        parse: (files: Buffer[], previous: T | undefined) => T | Promise<T>;
      }
    | {
        /** Builds the value by reading the files itself (big ones, streamed); throws on a bad version. */
        load: (previous: T | undefined) => Promise<T>;
      }
  );

interface Version {
  key: string;
  newestMtimeMs: number;
}

export class WatchedFiles<T> {
  readonly paths: readonly string[];
  private current: T;
  private key: string;
  /** The last version refused, so it is reported once and not read again (but see reread()). */
  private badKey = '';
  /** Why badKey was refused, so a reread() refused for the same reason is not reported again. */
  private badReason = '';
  /** Set by reread(): the next load reads even the version refused before. */
  private rereadAsked = false;
  private readonly watchers: FSWatcher[] = [];
  private refreshing: Promise<void> | undefined;
  private again: Promise<void> | undefined;
  private readonly options: WatchedFilesOptions<T>;

  private constructor(paths: string[], options: WatchedFilesOptions<T>, value: T, key: string) {
    this.paths = paths;
    this.options = options;
    this.current = value;
    this.key = key;
  }

  /** Reads and parses the files now; an error here is the caller's (a bad file at start). */
  static async open<T>(paths: string[], options: WatchedFilesOptions<T>): Promise<WatchedFiles<T>> {
    const version = await settledVersion(paths, options, '');
    const value = await buildValue(paths, options, undefined);
    const w = new WatchedFiles(paths, options, value, version.key);
    if (!w.watching) return w;
    for (const dir of new Set(paths.map((p) => dirname(p)))) {
      const names = new Set(paths.filter((p) => dirname(p) === dir).map((p) => basename(p)));
      try {
        const watcher = watch(dir, { persistent: false }, (_event, name) => {
          // Kubernetes swaps a `..data` symlink, so any change in the directory may be ours.
          if (name === null || names.has(name) || name.startsWith('..')) void w.refresh();
        });
        watcher.on('error', () => {});
        w.watchers.push(watcher);
      } catch {
        // No watcher (e.g. an exotic file system): refresh() still sees changes.
      }
    }
    return w;
  }

  get value(): T {
    return this.current;
  }

  /** Whether changes are watched for (else only refresh() reads the files again). */
  get watching(): boolean {
    return this.options.watch !== false;
  }

  /** Re-reads the files if they changed; a refused version is reported through onReloadError. */
  refresh(): Promise<void> {
    if (this.refreshing) {
      // The running reload may have read the files before the change this call is about: look again
      // once it ends (one follow-up serves every call made meanwhile).
      this.again ??= this.refreshing.then(() => {
        this.again = undefined;
        return this.refresh();
      });
      return this.again;
    }
    this.refreshing = this.load()
      .catch((err: unknown) => this.options.onReloadError?.(err))
      .finally(() => {
        this.refreshing = undefined;
      });
    return this.refreshing;
  }

  /**
   * refresh(), reading also a version refused before: for SIGHUP, an operator asking again. A refusal may
   * have been the disk's and not the file's (a static layer read in while the cache disk failed), and the
   * file need not change for the disk to come back. Refused again for the same reason, it is not reported
   * again.
   */
  reread(): Promise<void> {
    this.rereadAsked = true;
    return this.refresh();
  }

  private async load(): Promise<void> {
    const again = this.rereadAsked;
    this.rereadAsked = false;
    let v: Version;
    try {
      v = await settledVersion(this.paths, this.options, this.key, this.badKey);
    } catch (err) {
      // Gone (deleted before being written again) or not to be looked at: reported once, not on every
      // look, since callers refresh on use.
      const gone = `gone: ${messageOf(err)}`;
      if (gone === this.badKey) return;
      this.refused(gone, '');
      throw err;
    }
    if (v.key === this.key) {
      this.refused('', '');
      return;
    }
    if (v.key === this.badKey && !again) return;
    try {
      const value = await buildValue(this.paths, this.options, this.current);
      this.current = value;
      this.key = v.key;
      this.refused('', '');
      this.options.onReload?.(value);
    } catch (err) {
      const known = v.key === this.badKey && messageOf(err) === this.badReason;
      this.refused(v.key, messageOf(err));
      if (!known) throw err;
    }
  }

  private refused(key: string, reason: string): void {
    this.badKey = key;
    this.badReason = reason;
  }

  close(): void {
    for (const w of this.watchers) w.close();
    this.watchers.length = 0;
  }
}

function buildValue<T>(paths: readonly string[], options: WatchedFilesOptions<T>, previous: T | undefined) {
  if ('load' in options) return options.load(previous);
  return readAll(paths, options).then((files) => options.parse(files, previous));
}

/** The files' version once they have not changed for `settleMs` (or after a bounded number of waits). */
async function settledVersion<T>(
  paths: readonly string[],
  options: WatchedFilesOptions<T>,
  ...known: string[]
): Promise<Version> {
  const settleMs = options.settleMs ?? DEFAULT_SETTLE_MS;
  let v = await versionOf(paths, options.what);
  for (let i = 0; i < MAX_SETTLE_WAITS && !known.includes(v.key); i++) {
    const age = Date.now() - v.newestMtimeMs;
    if (age >= settleMs) break;
    await new Promise((r) => setTimeout(r, settleMs - Math.max(age, 0)));
    v = await versionOf(paths, options.what);
  }
  return v;
}

async function versionOf(paths: readonly string[], what: string): Promise<Version> {
  const keys: string[] = [];
  let newestMtimeMs = 0;
  for (const p of paths) {
    const st = await stat(p, { bigint: true }).catch((err: unknown) => {
      throw invalidArgument(`${what}: ${messageOf(err)}`);
    });
    // ctime too: a version refused as unreadable is read again once its mode or owner is fixed.
    keys.push(`${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`);
    newestMtimeMs = Math.max(newestMtimeMs, Number(st.mtimeMs));
  }
  return { key: keys.join('/'), newestMtimeMs };
}

async function readAll<T>(paths: readonly string[], options: WatchedFilesOptions<T>): Promise<Buffer[]> {
  const max = options.maxBytes ?? DEFAULT_MAX_BYTES;
  return Promise.all(
    paths.map(async (p) => {
      const b = await readFile(p).catch((err: unknown) => {
        throw invalidArgument(`${options.what}: ${messageOf(err)}`);
      });
      if (b.length > max) throw invalidArgument(`${options.what}: ${p} is larger than ${max} bytes`);
      return b;
    }),
  );
}
