// The applier behind applyLayer (apply-layer.ts): an OCI layer (a tar changeset, possibly compressed)
// onto a directory that already holds the parent snapshot, with the semantics of containerd's
// archive.Apply and none of the escapes: every parent path is resolved inside the root as if chrooted,
// the last component is never followed, hardlink targets must exist inside the root, and names that climb
// above the root are refused.
//
// It runs on a worker thread (apply-worker.ts) with synchronous file-system calls: a layer of
// small files costs several calls per file, and each trip through libuv's thread pool (a futex wake-up
// and a completion on the event loop) cost many times the call itself, which made Node's applier several
// times slower than containerd's on such layers.
import { execFile } from 'node:child_process';
import {
  closeSync as close,
  fchmodSync as fchmod,
  fchownSync as fchown,
  constants as fsc,
  fstatSync as fstat,
  realpathSync as realpath,
  type Stats,
  writeSync,
  writev,
} from 'node:fs';
import { join } from 'node:path';
import { type Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import {
  aborted,
  internal,
  invalidArgument,
  messageOf,
  permissionDenied,
  resourceExhausted,
  StrataError,
} from '../../errors.ts';
import { Digester } from '../../oci/digest.ts';
import { hasEscapes, nameBytes } from '../byte-names.ts';
import { decompressFile, decompressStream, type LayerFile } from '../compression.ts';
import { setManyXattrs, type XattrSet } from '../xattr.ts';
import type { ApplyOptions, ApplyResult, SkipKind } from './apply-options.ts';
import {
  chmod,
  futimes,
  lchown,
  link,
  lstat,
  lutimes,
  mkdir,
  open,
  readdir,
  rename,
  rm,
  symlink,
  unlink,
} from './fs-names.ts';
import { mapId } from './id-map.ts';
import { cleanName, MAX_PATH_BYTES, WHITEOUT_META_PREFIX, whiteoutOf } from './names.ts';
import { isWhiteout, lookupLower, resolveDirInRoot, setOpaque } from './resolve.ts';
import { type SparseFile, sparseOf, writeSparse } from './sparse.ts';
import type { Header } from './tar-header.ts';
import { readTar } from './tar-reader.ts';

const run = promisify(execFile);

export const DEFAULT_MAX_ENTRIES = 1_000_000;
/**
 * Child processes one layer may start (fifos, devices, batches of entries' xattrs, overlay opaque markers,
 * copy-ups): each forks this process (18-45 ms measured), so without a budget a layer of such entries
 * could hold an apply worker for hours. This one bounds it to a minute or a few, and is far above what
 * real layers need (a handful of each).
 */
export const DEFAULT_MAX_PROCESSES = 4096;
/** Resolved-parent cache size; it is a speed-up only, so it is simply cleared when full. */
const DIR_CACHE_MAX = 4096;
const CHILD_TIMEOUT_MS = 10_000;
const TRUSTED_PREFIX = 'trusted.';
/**
 * Entries whose xattrs wait for one setfattr restore, and the restore text's rough size: a layer labelling
 * every file (SELinux, ostree exports) costs a process per this many, not one per entry.
 */
const XATTR_BATCH_ENTRIES = 256;
const XATTR_BATCH_BYTES = 1 << 20;
/** The largest owner id the kernel takes (uid_t is 32 bits). */
const MAX_ID = 0xffff_ffff;
/** The largest device numbers mknod takes: Linux encodes 12 bits of major and 20 of minor. */
const MAX_MAJOR = 0xfff;
const MAX_MINOR = 0xf_ffff;

type Body = AsyncIterable<Buffer>;

interface DirTimes {
  rel: string;
  dev: number;
  ino: number;
  atime: number;
  mtime: number;
}

function codeOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

const ARCHIVE_FAULTS = new Set([
  'ENOTDIR',
  'ELOOP',
  'ENAMETOOLONG',
  'EISDIR',
  'EEXIST',
  'EINVAL',
  'ENOENT',
  'EMLINK',
  'ENOTEMPTY',
  'EFBIG',
]);

/** File-system errors caused by what the archive asks for are the archive's fault; the rest are ours. */
function mapFsError(err: unknown, name: string): StrataError | BodyReadError {
  if (err instanceof StrataError || err instanceof BodyReadError) return err;
  const code = codeOf(err);
  const msg = `layer entry ${JSON.stringify(name)}: ${messageOf(err)}`;
  if (code !== undefined && ARCHIVE_FAULTS.has(code)) return invalidArgument(msg, { cause: err });
  if (code === 'ENOSPC' || code === 'EDQUOT') return resourceExhausted(msg, { cause: err });
  if (code === 'EACCES' || code === 'EPERM') return permissionDenied(msg, { cause: err });
  return internal(msg, { cause: err });
}

/** Errors out of the stream pipeline: Strata's own errors pass; other plain errors are format errors. */
export function mapStreamError(err: unknown): StrataError {
  if (err instanceof StrataError) return err;
  if ((err as { name?: unknown } | null)?.name === 'AbortError')
    return aborted('layer apply aborted', { cause: err });
  if (err instanceof Error && codeOf(err) === undefined) {
    return invalidArgument(`invalid layer tar: ${err.message}`, { cause: err });
  }
  return internal(`reading layer: ${messageOf(err)}`, { cause: err });
}

function seconds(value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number.parseFloat(value);
  return Number.isFinite(n) ? n : fallback;
}

/**
 * An entry body that failed to read: the cause is upstream (truncated tar, corrupt compression, a failing
 * source), and the stream pipeline's own error says which.
 */
class BodyReadError extends Error {}

async function* body(entry: Body): AsyncGenerator<Buffer> {
  try {
    for await (const chunk of entry) yield chunk;
  } catch (err) {
    throw new BodyReadError(messageOf(err), { cause: err });
  }
}

/** Writes all of `chunk` at the file's offset, continuing after short writes. */
function writeAll(fd: number, chunk: Buffer): void {
  for (let done = 0; done < chunk.length; ) done += writeSync(fd, chunk, done, chunk.length - done);
}

/**
 * Bodies larger than this are written asynchronously, in batches of WRITE_BATCH bytes (a thread-pool
 * round trip each): a batch is written while the next is decoded, where a synchronous write would stall
 * decoding and hashing behind it (a 45 MiB layer applied about twice as slowly that way).
 */
const SYNC_WRITE_BYTES = 256 * 1024;
const WRITE_BATCH = 1 << 20;

const writevAt = promisify(
  (fd: number, parts: Buffer[], position: number, cb: (err: Error | null, n: number) => void) =>
    writev(fd, parts, position, cb),
);

/** Writes `parts` at `position`, continuing after short writes. */
async function writeAt(fd: number, parts: Buffer[], position: number): Promise<void> {
  let rest = parts;
  let at = position;
  let left = parts.reduce((n, p) => n + p.length, 0);
  while (left > 0) {
    let n = await writevAt(fd, rest, at);
    left -= n;
    at += n;
    // A short write: drop what went out and continue with the remainder.
    while (n > 0 && rest.length > 0) {
      const first = rest[0]!;
      if (n >= first.length) {
        n -= first.length;
        rest = rest.slice(1);
      } else {
        rest = [first.subarray(n), ...rest.slice(1)];
        n = 0;
      }
    }
  }
}

/**
 * Writes a stream of chunks to `fd` in batches of about WRITE_BATCH bytes, one positioned writev each.
 * One batch is written while the next is gathered, so decompressing and parsing go on during the write
 * instead of stalling behind it.
 */
async function writeBatched(fd: number, chunks: AsyncIterable<Buffer>): Promise<void> {
  let batch: Buffer[] = [];
  let size = 0;
  let position = 0;
  let inFlight: Promise<void> | undefined;
  const flush = async (): Promise<void> => {
    if (inFlight) await inFlight;
    const parts = batch;
    const at = position;
    position += size;
    batch = [];
    size = 0;
    inFlight = writeAt(fd, parts, at);
    // Awaited by the next flush or at the end; a failure must not go unhandled meanwhile.
    inFlight.catch(() => {});
  };
  try {
    for await (const chunk of chunks) {
      batch.push(chunk);
      size += chunk.length;
      if (size >= WRITE_BATCH) await flush();
    }
    if (size > 0) await flush();
  } finally {
    // Never leave a write running on a descriptor the caller is about to close.
    await inFlight?.catch(() => {});
  }
  await inFlight;
}

async function drain(entry: Body): Promise<void> {
  for await (const _ of body(entry)) {
    // discard
  }
}

function lstatOrUndefined(abs: string): Stats | undefined {
  return lstat(abs, { throwIfNoEntry: false });
}

class LayerApplier {
  readonly root: string;
  readonly opts: ApplyOptions;
  readonly chown: boolean;
  readonly maxEntries: number;
  readonly maxProcesses: number;
  entries = 0;
  /** Child processes started (or about to be) for this layer's entries. */
  private processes = 0;
  readonly skipped: Record<SkipKind, number> = { device: 0, xattr: 0, 'aufs-meta': 0, root: 0 };
  /** Real root-relative paths written by this layer: an opaque marker keeps these and drops the rest. */
  private readonly unpacked = new Set<string>();
  /** Cleaned parent name → real root-relative parent. Cleared whenever a directory or symlink is removed. */
  private readonly dirCache = new Map<string, string[]>();
  private readonly dirTimes: DirTimes[] = [];
  /** Temporary names handed out by freshName. */
  private temps = 0;
  /** Xattrs not yet set, with each entry's name (for skip counts); see flushXattrs for when they are. */
  private pendingXattrs: (XattrSet & { name: string })[] = [];
  /** `dev:ino` of the inodes pendingXattrs names, and the restore text's rough size. */
  private readonly pendingInodes = new Set<string>();
  private pendingBytes = 0;

  constructor(root: string, opts: ApplyOptions) {
    this.root = root;
    this.opts = opts;
    this.chown = opts.chown ?? process.getuid?.() === 0;
    this.maxEntries = opts.maxEntries ?? DEFAULT_MAX_ENTRIES;
    this.maxProcesses = opts.maxProcesses ?? DEFAULT_MAX_PROCESSES;
  }

  /** Counts one child process against the layer's budget; past it the layer is refused. */
  private spendProcess(): void {
    if (++this.processes > this.maxProcesses) {
      throw invalidArgument(
        `layer refused: its entries need more than ${this.maxProcesses} child processes (fifos, devices, entries with xattrs, opaque directories, copy-ups)`,
      );
    }
  }

  /** Marks an overlay upper directory opaque (a setfattr process). */
  private markOpaque(abs: string): Promise<void> {
    this.spendProcess();
    return setOpaque(abs);
  }

  private skip(kind: SkipKind, name: string): void {
    this.skipped[kind]++;
    this.opts.onSkip?.(kind, name);
  }

  private abs(rel: string): string {
    return rel === '' ? this.root : join(this.root, rel);
  }

  private async parentOf(parts: readonly string[], create: boolean): Promise<string[] | undefined> {
    const key = parts.join('/');
    const hit = this.dirCache.get(key);
    if (hit) return hit;
    const onCreate = (rel: string) => this.unpacked.add(rel);
    const lowers = this.opts.overlay?.lowers;
    const markOpaque = (abs: string) => this.markOpaque(abs);
    const dir = await resolveDirInRoot(this.root, parts, {
      create,
      onCreate,
      ...(lowers ? { lowers, markOpaque } : {}),
    });
    if (dir) {
      if (this.dirCache.size >= DIR_CACHE_MAX) this.dirCache.clear();
      this.dirCache.set(key, dir);
    }
    return dir;
  }

  /** Remove whatever is at `abs`; removing a directory or symlink may change how cached parents resolve. */
  private remove(abs: string, st: Stats): void {
    if (st.isDirectory()) {
      rm(abs, { recursive: true, force: true });
      this.dirCache.clear();
    } else {
      unlink(abs);
      if (st.isSymbolicLink()) this.dirCache.clear();
    }
  }

  async apply(header: Header, entry: Body): Promise<void> {
    if (++this.entries > this.maxEntries) {
      throw invalidArgument(`layer has more than ${this.maxEntries} entries`);
    }
    const sparse = sparseOf(header.pax, header.size ?? 0);
    if (sparse && header.type !== 'file') {
      throw invalidArgument(`layer entry ${JSON.stringify(header.name)} has GNU sparse records but no data`);
    }
    // A sparse file's stored name is a stand-in; its records carry the real one.
    const name = sparse?.name ?? header.name;
    const parts = cleanName(name);
    if (parts.length === 0) {
      this.skip('root', name);
      return drain(entry);
    }
    if (parts.slice(0, -1).some((p) => p.startsWith(WHITEOUT_META_PREFIX))) {
      this.skip('aufs-meta', name);
      return drain(entry);
    }
    const base = parts[parts.length - 1]!;
    const parentParts = parts.slice(0, -1);
    const wo = whiteoutOf(base);
    try {
      // A whiteout or opaque marker may remove paths, or directories above them, whose xattrs wait.
      if (wo.kind === 'whiteout' || wo.kind === 'opaque') await this.flushXattrs();
      switch (wo.kind) {
        case 'meta':
          this.skip('aufs-meta', name);
          return await drain(entry);
        case 'opaque': {
          await drain(entry);
          const dir = await this.parentOf(parentParts, false);
          if (dir) await this.removeLower(dir.join('/'));
          return;
        }
        case 'whiteout': {
          await drain(entry);
          const dir = await this.parentOf(parentParts, false);
          if (dir) await this.whiteout([...dir, wo.target].join('/'));
          return;
        }
        case 'none':
          break;
      }
      const dir = await this.parentOf(parentParts, true);
      const rel = [...dir!, base].join('/');
      await this.write(header, entry, rel, sparse);
      this.unpacked.add(rel);
    } catch (err) {
      throw mapFsError(err, name);
    }
  }

  /** `.wh.<name>`: delete what lower layers had at `rel`. What this layer wrote there stays. */
  private async whiteout(rel: string): Promise<void> {
    const abs = this.abs(rel);
    const st = await lstatOrUndefined(abs);
    if (st && this.unpacked.has(rel)) {
      if (st.isDirectory()) await this.removeLower(rel);
      return;
    }
    if (st) this.remove(abs, st);
    // In an overlay upper the lowers' entry stays where it is; a whiteout above hides it (made whether
    // or not a lower has the name, as containerd does).
    await this.opts.overlay?.whiteout(abs);
  }

  /**
   * Opaque directory: drop every child not written by this layer, recursing into those that were.
   * `nested`: below a directory already marked, whose subdirectories overlayfs looks up in the upper
   * alone, so they need no marker (and no process) of their own, as in containerd's overlay unpack.
   */
  private async removeLower(dirRel: string, nested = false): Promise<void> {
    const abs = this.abs(dirRel);
    // In an overlay upper the lowers' children are hidden by marking the directory opaque; what remains
    // to drop are directories copied up from the lowers.
    if (this.opts.overlay && !nested) await this.markOpaque(abs);
    for (const child of readdir(abs)) {
      const rel = dirRel === '' ? child : `${dirRel}/${child}`;
      const st = lstat(join(abs, child));
      if (this.unpacked.has(rel)) {
        if (st.isDirectory()) await this.removeLower(rel, true);
      } else if (this.opts.overlay && st.isDirectory()) {
        // A directory made in the upper as the parent of what this layer wrote below it (given a
        // lower's mode): what it holds of this layer stays, as with containerd's overlay unpack.
        await this.removeLower(rel, true);
        if (readdir(join(abs, child)).length === 0) this.remove(join(abs, child), st);
      } else this.remove(join(abs, child), st);
    }
  }

  private owner(header: Header): { uid: number; gid: number } {
    // Ids too big for the octal ustar fields travel in PAX records.
    const uid = header.pax?.uid === undefined ? header.uid : Number.parseInt(header.pax.uid, 10);
    const gid = header.pax?.gid === undefined ? header.gid : Number.parseInt(header.pax.gid, 10);
    // Owners are 32-bit on Linux: a bigger id is the layer's error, not ours, and not one to truncate.
    const valid = (id: number) => Number.isSafeInteger(id) && id >= 0 && id <= MAX_ID;
    if (!valid(uid) || !valid(gid)) {
      throw invalidArgument(`layer entry ${JSON.stringify(header.name)} has an invalid owner ${uid}:${gid}`);
    }
    return { uid: mapId(uid, this.opts.uidMap, 'uid'), gid: mapId(gid, this.opts.gidMap, 'gid') };
  }

  private times(header: Header): { atime: number; mtime: number } {
    const mtime = seconds(header.pax?.mtime, (header.mtime?.getTime() ?? 0) / 1000);
    return { atime: seconds(header.pax?.atime, mtime), mtime };
  }

  /**
   * Sets the entry's `SCHILY.xattr.*` attributes, after owner and mode (chown clears
   * security.capability), batched with other entries' into one setfattr restore (flushXattrs). One the
   * kernel refuses (security.* without privileges, user.* on a symlink) is skipped and counted. `now`:
   * set them before returning (nodes made by a command, which resolveDirInRoot may replace: a device
   * 0:0 is an overlay whiteout to it).
   */
  private async applyXattrs(abs: string, header: Header, now: boolean): Promise<void> {
    const attrs = Object.entries(header.xattrs ?? {});
    // trusted.* is for the host's administrator: overlayfs keeps its whiteouts and redirects there. As
    // containerd's unpack does, a layer's are not set (skipped and counted).
    const wanted = attrs.filter(([name]) => !name.startsWith(TRUSTED_PREFIX));
    for (let i = wanted.length; i < attrs.length; i++) this.skip('xattr', header.name);
    if (wanted.length === 0) return;
    const st = lstat(abs);
    this.pendingXattrs.push({ path: abs, attrs: wanted, name: header.name });
    this.pendingInodes.add(`${st.dev}:${st.ino}`);
    this.pendingBytes += abs.length + wanted.reduce((n, [k, v]) => n + k.length + 2 * v.length + 4, 0);
    if (now || this.pendingXattrs.length >= XATTR_BATCH_ENTRIES || this.pendingBytes >= XATTR_BATCH_BYTES)
      await this.flushXattrs();
  }

  /**
   * Sets the waiting xattrs (one process). Called before anything that could change which inode a waiting
   * path names, or that inode's owner (chown clears security.capability, so it must come first, as when
   * set entry by entry): whiteouts, opaque markers, an entry over an existing path that waits or a
   * directory holding one, a hardlink to a waiting inode, copy-ups; and at the end of the layer.
   */
  private async flushXattrs(): Promise<void> {
    const sets = this.pendingXattrs;
    if (sets.length === 0) return;
    this.pendingXattrs = [];
    this.pendingInodes.clear();
    this.pendingBytes = 0;
    this.spendProcess();
    const refused = await setManyXattrs(sets);
    sets.forEach((set, i) => {
      for (let n = 0; n < refused[i]!; n++) this.skip('xattr', set.name);
    });
  }

  /** Whether replacing what `st` is at `abs` touches a waiting xattr: its inode, or one below it. */
  private touchesPending(abs: string, st: Stats): boolean {
    if (this.pendingXattrs.length === 0) return false;
    if (this.pendingInodes.has(`${st.dev}:${st.ino}`)) return true;
    const below = `${abs}/`;
    return st.isDirectory() && this.pendingXattrs.some((p) => p.path.startsWith(below));
  }

  /** chown before chmod: chown clears set-id bits. */
  private metaByHandle(fd: number, header: Header): void {
    if (this.chown) {
      const { uid, gid } = this.owner(header);
      fchown(fd, uid, gid);
    }
    fchmod(fd, (header.mode ?? 0) & 0o7777);
  }

  private async write(header: Header, entry: Body, rel: string, sparse?: SparseFile): Promise<void> {
    const abs = this.abs(rel);
    const existing = lstatOrUndefined(abs);
    const type = header.type;
    if (existing && this.touchesPending(abs, existing)) await this.flushXattrs();
    switch (type) {
      case 'directory': {
        await drain(entry);
        if (!existing?.isDirectory()) {
          if (existing) this.remove(abs, existing);
          mkdir(abs, { mode: 0o700 });
          // This layer replaced whatever the lowers had here: their entries must not show below it.
          if (existing && this.opts.overlay) await this.markOpaque(abs);
        }
        const fd = open(abs, fsc.O_RDONLY | fsc.O_DIRECTORY | fsc.O_NOFOLLOW);
        try {
          this.metaByHandle(fd, header);
          const st = fstat(fd);
          // Children written later change a directory's mtime: set it at the end.
          this.dirTimes.push({ rel, dev: st.dev, ino: st.ino, ...this.times(header) });
        } finally {
          close(fd);
        }
        break;
      }
      case 'file':
      case 'contiguous-file': {
        if (existing) this.remove(abs, existing);
        const fd = open(abs, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
        try {
          if (sparse) await writeSparse(fd, body(entry), sparse);
          else if ((header.size ?? 0) <= SYNC_WRITE_BYTES) {
            for await (const chunk of body(entry)) writeAll(fd, chunk);
          } else await writeBatched(fd, body(entry));
          this.metaByHandle(fd, header);
          const { atime, mtime } = this.times(header);
          futimes(fd, atime, mtime);
        } finally {
          close(fd);
        }
        break;
      }
      case 'symlink': {
        await drain(entry);
        const target = header.linkname ?? '';
        if (target === '' || target.includes('\0') || nameBytes(target) > MAX_PATH_BYTES) {
          throw invalidArgument(
            `symlink ${JSON.stringify(header.name)} has an empty, NUL-bearing or too long target`,
          );
        }
        if (existing) this.remove(abs, existing);
        // Stored verbatim, absolute or not: it is only ever followed re-rooted (here) or inside a container.
        symlink(target, abs);
        this.pathMeta(abs, header, false);
        break;
      }
      case 'link': {
        await drain(entry);
        // A link to a whiteout is one more whiteout, which has no metadata of its own to set.
        if (!(await this.hardlink(header, rel, abs, existing))) return;
        break;
      }
      case 'character-device':
      case 'block-device': {
        await drain(entry);
        if (!this.opts.allowDevices || process.getuid?.() !== 0) {
          this.skip('device', header.name);
          return;
        }
        const major = header.devmajor ?? 0;
        const minor = header.devminor ?? 0;
        if (major > MAX_MAJOR || minor > MAX_MINOR) {
          throw invalidArgument(
            `device ${JSON.stringify(header.name)} has a device number ${major}:${minor} beyond ${MAX_MAJOR}:${MAX_MINOR}`,
          );
        }
        this.spendProcess();
        if (existing) this.remove(abs, existing);
        const kind = type === 'character-device' ? 'c' : 'b';
        const numbers = [String(major), String(minor)];
        // Node has no mknod: the coreutils command, with the mode set after (mknod -m obeys no umask
        // either way, and chown first clears nothing a device has).
        await this.viaPlainName(abs, (p) =>
          run('mknod', ['-m', '000', '--', p, kind, ...numbers], { timeout: CHILD_TIMEOUT_MS }),
        );
        this.pathMeta(abs, header, true);
        break;
      }
      case 'fifo': {
        await drain(entry);
        this.spendProcess();
        if (existing) this.remove(abs, existing);
        // Node cannot make a fifo; the coreutils command can, without privileges.
        await this.viaPlainName(abs, (p) => run('mkfifo', ['--', p], { timeout: CHILD_TIMEOUT_MS }));
        this.pathMeta(abs, header, true);
        break;
      }
      default:
        throw invalidArgument(
          `layer entry ${JSON.stringify(header.name)} has unsupported type ${String(type)}`,
        );
    }
    const made = type === 'character-device' || type === 'block-device' || type === 'fifo';
    await this.applyXattrs(abs, header, made);
  }

  /**
   * Runs `make` (a child process) to create the node at `abs`. A child's arguments are UTF-8 strings, so
   * a path whose name is not valid UTF-8 cannot be passed: the node is made under a plain temporary name
   * in the root and renamed into place.
   */
  private async viaPlainName(abs: string, make: (path: string) => Promise<unknown>): Promise<void> {
    if (!hasEscapes(abs)) {
      await make(abs);
      return;
    }
    const temp = this.freshName('new');
    await make(temp);
    try {
      rename(temp, abs);
    } catch (err) {
      rm(temp, { recursive: true, force: true });
      throw err;
    }
  }

  /**
   * A name in the root that nothing has: the layer may have put a symlink out of the root at any name,
   * and the commands given a temporary path would write through it (cp does).
   */
  private freshName(kind: 'new' | 'src'): string {
    for (;;) {
      const p = join(this.root, `.strata-${kind}-${process.pid}-${++this.temps}`);
      if (!lstatOrUndefined(p)) return p;
    }
  }

  /** Owner, mode and times by path, for nodes that cannot be opened safely (symlinks, fifos, devices). */
  private pathMeta(abs: string, header: Header, chmodToo: boolean): void {
    if (this.chown) {
      const { uid, gid } = this.owner(header);
      lchown(abs, uid, gid);
    }
    if (chmodToo) {
      // The node was just created by us and is not a symlink, so chmod's following is moot.
      chmod(abs, (header.mode ?? 0) & 0o7777);
    }
    const { atime, mtime } = this.times(header);
    lutimes(abs, atime, mtime);
  }

  /**
   * Hardlinks point at a path inside the root, resolved like any other name (its parent chain re-rooted,
   * its last component not followed, so a link to a symlink links the symlink). The target must exist
   * and not be a directory. Then, as containerd does, the link's header owner, mode (unless the inode is
   * a symlink) and times are applied to the shared inode, so the last name written decides.
   * In an overlay upper a link to this layer's whiteout becomes a whiteout itself (false): whiteouts share
   * the snapshotter's one device, whose owner and mode are no layer's to change.
   */
  private async hardlink(
    header: Header,
    rel: string,
    abs: string,
    existing: Stats | undefined,
  ): Promise<boolean> {
    const linkname = header.linkname ?? '';
    const targetParts = cleanName(linkname, 'hardlink target');
    if (targetParts.length === 0)
      throw invalidArgument(`hardlink ${JSON.stringify(header.name)} points at the root`);
    const dir = await this.parentOf(targetParts.slice(0, -1), false);
    const targetRel = dir ? [...dir, targetParts[targetParts.length - 1]!].join('/') : undefined;
    let targetSt = targetRel === undefined ? undefined : lstatOrUndefined(this.abs(targetRel));
    if (targetRel !== undefined && !targetSt && this.opts.overlay) {
      await this.flushXattrs();
      targetSt = await this.copyUp(targetRel);
    }
    if (targetRel === undefined || !targetSt) {
      throw invalidArgument(
        `hardlink ${JSON.stringify(header.name)}: target ${JSON.stringify(linkname)} does not exist in the layer root`,
      );
    }
    if (targetSt.isDirectory()) {
      throw invalidArgument(
        `hardlink ${JSON.stringify(header.name)}: target ${JSON.stringify(linkname)} is a directory`,
      );
    }
    if (targetRel === rel) {
      throw invalidArgument(`hardlink ${JSON.stringify(header.name)} points at itself`);
    }
    // The link's owner, mode and times go to the shared inode: its waiting xattrs are set first.
    if (this.touchesPending(this.abs(targetRel), targetSt)) await this.flushXattrs();
    if (existing) this.remove(abs, existing);
    if (this.opts.overlay && isWhiteout(targetSt)) {
      await this.opts.overlay.whiteout(abs);
      return false;
    }
    link(this.abs(targetRel), abs);
    this.pathMeta(abs, header, !targetSt.isSymbolicLink());
    return true;
  }

  /**
   * Copies a lower layer's non-directory at `rel` into the upper (`cp -a`: data, owner, mode, times,
   * xattrs), as overlayfs does before linking to it; undefined when the lowers have nothing there.
   */
  private async copyUp(rel: string): Promise<Stats | undefined> {
    const lower = await lookupLower(this.opts.overlay?.lowers ?? [], rel.split('/'));
    if (!lower || lower.st.isDirectory()) return lower?.st;
    this.spendProcess();
    // A source name cp's argv cannot carry is read through a plain-named hard link, removed after.
    const source = hasEscapes(lower.path) ? this.freshName('src') : undefined;
    if (source) link(lower.path, source);
    try {
      await this.viaPlainName(this.abs(rel), (p) =>
        run('cp', ['-a', '--no-dereference', '--', source ?? lower.path, p], { timeout: CHILD_TIMEOUT_MS }),
      );
    } finally {
      if (source) unlink(source);
    }
    return lstat(this.abs(rel));
  }

  /** Directory times, newest entries first, only where the same directory is still there. */
  async finish(): Promise<void> {
    await this.flushXattrs();
    for (let i = this.dirTimes.length - 1; i >= 0; i--) {
      const d = this.dirTimes[i]!;
      const parts = d.rel.split('/');
      try {
        const dir = await resolveDirInRoot(this.root, parts.slice(0, -1), { create: false });
        if (!dir) continue;
        const fd = open(
          this.abs([...dir, parts[parts.length - 1]!].join('/')),
          fsc.O_RDONLY | fsc.O_DIRECTORY | fsc.O_NOFOLLOW,
        );
        try {
          const st = fstat(fd);
          if (st.dev === d.dev && st.ino === d.ino) futimes(fd, d.atime, d.mtime);
        } finally {
          close(fd);
        }
      } catch (err) {
        // Replaced or removed later in this layer (ENOENT, ENOTDIR, ELOOP): its times no longer matter.
        if (err instanceof StrataError || ARCHIVE_FAULTS.has(codeOf(err) ?? '')) continue;
        throw mapFsError(err, d.rel);
      }
    }
  }
}

/** The layer as the worker reads it: a whole file (read at offsets) or a stream of its bytes. */
export type LayerSource = { file: LayerFile } | { stream: Readable };

/**
 * applyLayer's work, in the calling thread with synchronous file-system calls: only for a worker thread
 * (apply-worker.ts), never for the daemon's event loop.
 */
export async function applyInThread(
  root: string,
  layer: LayerSource,
  opts: ApplyOptions = {},
): Promise<ApplyResult> {
  let realRoot: string;
  try {
    realRoot = realpath(root);
    if (!lstat(realRoot).isDirectory()) throw invalidArgument(`layer root ${root} is not a directory`);
  } catch (err) {
    if (err instanceof StrataError) throw err;
    throw invalidArgument(`layer root ${root}: ${messageOf(err)}`, { cause: err });
  }
  if (opts.signal?.aborted) throw aborted('layer apply aborted', { cause: opts.signal.reason });
  const applier = new LayerApplier(realRoot, opts);
  const digester = new Digester('sha256');
  const hasher = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      digester.update(chunk);
      cb(null, chunk);
    },
  });
  const how = opts.compression ?? 'auto';
  const source = 'file' in layer ? decompressFile(layer.file, how) : layer.stream;
  const decoder = 'file' in layer ? undefined : decompressStream(how);
  const stages = decoder ? [source, decoder, hasher] : [source, hasher];
  // The first error a stream stage reports: what an entry body that failed to read was cut off by.
  let streamError: unknown;
  for (const stage of stages) {
    // pipeline destroys every stage with the unpacker's own error too: that one is no cause.
    stage.on('error', (err: unknown) => {
      if (!(err instanceof BodyReadError)) streamError ??= err;
    });
  }
  let unpacking: Promise<void> | undefined;
  const unpack = (chunks: AsyncIterable<Buffer>): Promise<void> => {
    unpacking = (async () => {
      for await (const { header, body } of readTar(chunks)) {
        opts.signal?.throwIfAborted();
        await applier.apply(header, body);
      }
    })();
    return unpacking;
  };
  try {
    const options = opts.signal ? { signal: opts.signal } : {};
    await (decoder
      ? pipeline(source, decoder, hasher, unpack, options)
      : pipeline(source, hasher, unpack, options));
    await applier.finish();
  } catch (err) {
    // A failing stage ends the pipeline at once: let the entry being applied stop before returning.
    await unpacking?.catch(() => {});
    throw mapStreamError(err instanceof BodyReadError ? (streamError ?? err.cause) : err);
  }
  return {
    diffId: digester.digest(),
    size: digester.size,
    entries: applier.entries,
    skipped: { ...applier.skipped },
  };
}
