// The layer differ: an uncompressed OCI layer tar holding what turns `lower` into `upper` (additions,
// changes, `.wh.` whiteouts for deletions), or a whole directory as a layer. Output is deterministic for
// a given pair of trees: names in byte order, empty uname/gname (containerd looks no names up either),
// whole-second mtimes, headers laid out as containerd's (tar-writer.ts), whiteouts dated to the epoch
// (containerd dates them to the diff's start) and, as containerd's, without permission bits and after
// their parent directories. Files sharing an inode within `upper` become tar hardlinks, as containerd
// writes them. So but for whiteouts, a diff has the digest containerd's diff of the same trees has.
//
// Names keep their bytes (byte-names.ts), and as containerd's differ, a changed entry carries its file
// capability (the security.capability xattr, as a PAX SCHILY.xattr record); other xattrs are not
// carried, nor are sockets (tar has no type for them).
import { type BigIntStats, constants as fsc } from 'node:fs';
import { lstat, open, readdir, readlink } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { Readable } from 'node:stream';
import { aborted, internal, messageOf, StrataError } from '../../errors.ts';
import { WHITEOUT_PREFIX } from '../apply/names.ts';
import { decodeName, encodeName, fsPath } from '../byte-names.ts';
import { CAPABILITY, capabilities } from '../xattr.ts';
import { devMajor, devMinor, sameNode } from './compare.ts';
import { END_OF_ARCHIVE, type EntryHeader, encodeHeader, padding } from './tar-writer.ts';

export interface DiffOptions {
  signal?: AbortSignal;
}

const READ_CHUNK = 64 * 1024;

function byteOrder(a: string, b: string): number {
  return Buffer.compare(encodeName(a), encodeName(b));
}

async function sortedNames(dir: string): Promise<string[]> {
  const names = await readdir(fsPath(dir), { encoding: 'buffer' });
  return names.sort(Buffer.compare).map(decodeName);
}

/**
 * Walks the two trees and yields the layer's bytes. Each entry is yielded as it is found, so the walk
 * goes at the pace the consumer reads.
 */
class ChangeWriter {
  private readonly lower: string | undefined;
  private readonly upper: string;
  private readonly signal: AbortSignal | undefined;
  /** Directories already in the tar, so a change deep down includes its parents once. */
  private readonly emittedDirs = new Set<string>();
  /** inode → tar name of the copy with content; later names of that inode become hardlinks to it. */
  private readonly inodeSource = new Map<string, string>();
  /** inode → unchanged names seen before any changed one: they must be re-linked to the new copy. */
  private readonly inodeWaiting = new Map<string, string[]>();
  /** File capabilities by relative path, in each tree. */
  private upperCaps = new Map<string, Buffer>();
  private lowerCaps = new Map<string, Buffer>();

  constructor(lower: string | undefined, upper: string, signal: AbortSignal | undefined) {
    this.lower = lower;
    this.upper = upper;
    this.signal = signal;
  }

  async *run(): AsyncGenerator<Buffer> {
    this.upperCaps = await capabilities(this.upper);
    if (this.lower !== undefined) this.lowerCaps = await capabilities(this.lower);
    yield* this.walk('', this.lower !== undefined);
    yield END_OF_ARCHIVE;
  }

  private async *walk(rel: string, lowerIsDir: boolean): AsyncGenerator<Buffer> {
    if (this.signal?.aborted) throw aborted('layer diff aborted', { cause: this.signal.reason });
    const upperNames = await sortedNames(join(this.upper, rel));
    const lowerNames = lowerIsDir && this.lower !== undefined ? await sortedNames(join(this.lower, rel)) : [];
    let i = 0;
    let j = 0;
    while (i < upperNames.length || j < lowerNames.length) {
      const u = upperNames[i];
      const l = lowerNames[j];
      const cmp = u === undefined ? 1 : l === undefined ? -1 : byteOrder(u, l);
      const name = cmp <= 0 ? u! : l!;
      if (cmp <= 0) i++;
      if (cmp >= 0) j++;
      const childRel = rel === '' ? name : `${rel}/${name}`;
      if (cmp > 0) {
        yield* this.whiteout(childRel);
        continue;
      }
      const upperPath = join(this.upper, childRel);
      const ust = await lstat(fsPath(upperPath), { bigint: true });
      const lowerPath = cmp === 0 ? join(this.lower!, childRel) : undefined;
      const lst = lowerPath === undefined ? undefined : await lstat(fsPath(lowerPath), { bigint: true });
      const changed =
        lst === undefined ||
        !(await sameNode(lowerPath!, lst, upperPath, ust)) ||
        !sameBytes(this.upperCaps.get(childRel), this.lowerCaps.get(childRel));
      if (ust.isDirectory()) {
        if (changed) yield* this.emit(childRel, ust);
        yield* this.walk(childRel, lst?.isDirectory() ?? false);
      } else if (!ust.isSocket()) {
        yield* this.nonDirectory(childRel, ust, changed);
      }
    }
  }

  /** A deletion: a `.wh.` entry after its parents, with no permission bits, as containerd writes it. */
  private async *whiteout(rel: string): AsyncGenerator<Buffer> {
    const name = posix.join(posix.dirname(rel), WHITEOUT_PREFIX + posix.basename(rel));
    yield* this.ensureParents(name);
    yield encodeHeader({
      name: encodeName(name),
      type: 'file',
      mode: 0,
      uid: 0,
      gid: 0,
      mtime: 0,
      size: 0,
      devmajor: 0,
      devminor: 0,
    });
  }

  private async *nonDirectory(rel: string, st: BigIntStats, changed: boolean): AsyncGenerator<Buffer> {
    if (st.nlink <= 1n) {
      if (changed) yield* this.emit(rel, st);
      return;
    }
    const key = `${st.dev}:${st.ino}`;
    const source = this.inodeSource.get(key);
    if (source !== undefined) {
      yield* this.emitLink(rel, st, source);
      return;
    }
    if (!changed) {
      const waiting = this.inodeWaiting.get(key) ?? [];
      waiting.push(rel);
      this.inodeWaiting.set(key, waiting);
      return;
    }
    this.inodeSource.set(key, rel);
    yield* this.emit(rel, st);
    for (const other of this.inodeWaiting.get(key) ?? []) yield* this.emitLink(other, st, rel);
    this.inodeWaiting.delete(key);
  }

  /** The header of `rel`; with `capability`, the entry carries its file capability, as containerd's do. */
  private header(rel: string, st: BigIntStats, capability = false): EntryHeader {
    const cap = capability ? this.upperCaps.get(rel) : undefined;
    const type: EntryHeader['type'] = st.isDirectory()
      ? 'directory'
      : st.isSymbolicLink()
        ? 'symlink'
        : st.isFIFO()
          ? 'fifo'
          : st.isCharacterDevice()
            ? 'character-device'
            : st.isBlockDevice()
              ? 'block-device'
              : 'file';
    return {
      name: encodeName(type === 'directory' ? `${rel}/` : rel),
      type,
      mode: Number(st.mode),
      uid: Number(st.uid),
      gid: Number(st.gid),
      mtime: wholeSeconds(st.mtimeNs),
      size: type === 'file' ? Number(st.size) : 0,
      devmajor: devMajor(st.rdev),
      devminor: devMinor(st.rdev),
      ...(cap ? { pax: [[`SCHILY.xattr.${CAPABILITY}`, cap]] } : {}),
    };
  }

  private async *ensureParents(rel: string): AsyncGenerator<Buffer> {
    const parts = rel.split('/').slice(0, -1);
    for (let k = 1; k <= parts.length; k++) {
      const dir = parts.slice(0, k).join('/');
      if (this.emittedDirs.has(dir)) continue;
      const st = await lstat(fsPath(join(this.upper, dir)), { bigint: true });
      this.emittedDirs.add(dir);
      yield encodeHeader(this.header(dir, st));
    }
  }

  private async *emit(rel: string, st: BigIntStats): AsyncGenerator<Buffer> {
    yield* this.ensureParents(rel);
    const h = this.header(rel, st, true);
    if (h.type === 'directory') {
      this.emittedDirs.add(rel);
      yield encodeHeader(h);
    } else if (h.type === 'symlink') {
      const target = await readlink(fsPath(join(this.upper, rel)), { encoding: 'buffer' });
      yield encodeHeader({ ...h, linkname: target });
    } else if (h.type === 'file') {
      yield* this.fileEntry(rel, h);
    } else {
      yield encodeHeader(h);
    }
  }

  private async *emitLink(rel: string, st: BigIntStats, source: string): AsyncGenerator<Buffer> {
    yield* this.ensureParents(rel);
    yield encodeHeader({
      ...this.header(rel, st, true),
      type: 'link',
      linkname: encodeName(source),
      size: 0,
    });
  }

  /** Streams exactly the stat'ed size; a file that changed size meanwhile fails the diff. */
  private async *fileEntry(rel: string, header: EntryHeader): AsyncGenerator<Buffer> {
    const fh = await open(fsPath(join(this.upper, rel)), fsc.O_RDONLY | fsc.O_NOFOLLOW);
    try {
      yield encodeHeader(header);
      let left = header.size;
      while (left > 0) {
        const buf = Buffer.allocUnsafe(Math.min(READ_CHUNK, left));
        const { bytesRead } = await fh.read(buf, 0, buf.length, null);
        if (bytesRead === 0) throw internal(`diff: ${rel} shrank while being read`);
        left -= bytesRead;
        yield buf.subarray(0, bytesRead);
      }
      const pad = padding(header.size);
      if (pad.length > 0) yield pad;
    } finally {
      await fh.close();
    }
  }
}

/** Seconds since the epoch, rounded down (also before it), as containerd truncates mtimes. */
function wholeSeconds(ns: bigint): number {
  const s = ns / 1_000_000_000n;
  return Number(ns < 0n && s * 1_000_000_000n !== ns ? s - 1n : s);
}

function sameBytes(a: Buffer | undefined, b: Buffer | undefined): boolean {
  return a === undefined || b === undefined ? a === b : a.equals(b);
}

async function* guarded(
  writer: ChangeWriter,
  lower: string | undefined,
  upper: string,
): AsyncGenerator<Buffer> {
  try {
    yield* writer.run();
  } catch (err) {
    throw err instanceof StrataError
      ? err
      : internal(`diff of ${upper} against ${lower ?? 'nothing'}: ${messageOf(err)}`, { cause: err });
  }
}

function start(lower: string | undefined, upper: string, opts: DiffOptions): Readable {
  return Readable.from(guarded(new ChangeWriter(lower, upper, opts.signal), lower, upper), {
    objectMode: false,
  });
}

/** The changes from `lower` to `upper` as an uncompressed OCI layer tar; without `lower`, all of `upper`. */
export function diffDirectories(lower: string | undefined, upper: string, opts: DiffOptions = {}): Readable {
  return start(lower, upper, opts);
}

/** A whole directory as an uncompressed OCI layer tar (the first layer of an image). */
export function packDirectory(dir: string, opts: DiffOptions = {}): Readable {
  return start(undefined, dir, opts);
}
