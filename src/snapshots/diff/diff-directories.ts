// The layer differ: an uncompressed OCI layer tar holding what turns `lower` into `upper` (additions,
// changes, `.wh.` whiteouts for deletions), or a whole directory as a layer. Output is deterministic for
// a given pair of trees: names in byte order, empty uname/gname, whole-second mtimes, whiteouts dated
// to the epoch. Files sharing an inode within `upper` become tar hardlinks, as containerd writes them.
//
// Not carried: extended attributes (Node has no xattr API, so e.g. security.capability is lost) and
// sockets (tar has no type for them).
import { type BigIntStats, constants as fsc } from 'node:fs';
import { lstat, open, readdir, readlink } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import { aborted, internal, messageOf, StrataError } from '../../errors.ts';
import { WHITEOUT_PREFIX } from '../apply/names.ts';
import { devMajor, devMinor, sameNode } from './compare.ts';

export interface DiffOptions {
  signal?: AbortSignal;
}

/** Largest id an octal ustar field holds; bigger ones go in PAX records. */
const MAX_USTAR_ID = 0o7777777;
const READ_CHUNK = 64 * 1024;

function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

async function sortedNames(dir: string): Promise<string[]> {
  return (await readdir(dir)).sort(byteOrder);
}

type Sink = ReturnType<tar.Pack['entry']>;

function waitDrain(sink: Sink): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      sink.off('drain', onDrain);
      sink.off('error', onError);
      sink.off('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = () => done();
    const onError = (err: Error) => done(err);
    const onClose = () => done(new Error('tar stream closed'));
    sink.on('drain', onDrain);
    sink.on('error', onError);
    sink.on('close', onClose);
  });
}

class ChangeWriter {
  readonly pack = tar.pack();
  private readonly lower: string | undefined;
  private readonly upper: string;
  private readonly signal: AbortSignal | undefined;
  /** Directories already in the tar, so a change deep down includes its parents once. */
  private readonly emittedDirs = new Set<string>();
  /** inode → tar name of the copy with content; later names of that inode become hardlinks to it. */
  private readonly inodeSource = new Map<string, string>();
  /** inode → unchanged names seen before any changed one: they must be re-linked to the new copy. */
  private readonly inodeWaiting = new Map<string, string[]>();

  constructor(lower: string | undefined, upper: string, signal: AbortSignal | undefined) {
    this.lower = lower;
    this.upper = upper;
    this.signal = signal;
  }

  async run(): Promise<void> {
    await this.walk('', this.lower !== undefined);
    this.pack.finalize();
  }

  private async walk(rel: string, lowerIsDir: boolean): Promise<void> {
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
        await this.whiteout(childRel);
        continue;
      }
      const ust = await lstat(join(this.upper, childRel), { bigint: true });
      const lst = cmp === 0 ? await lstat(join(this.lower!, childRel), { bigint: true }) : undefined;
      const changed =
        lst === undefined ||
        !(await sameNode(join(this.lower!, childRel), lst, join(this.upper, childRel), ust));
      if (ust.isDirectory()) {
        if (changed) await this.emit(childRel, ust);
        await this.walk(childRel, lst?.isDirectory() ?? false);
      } else if (!ust.isSocket()) {
        await this.nonDirectory(childRel, ust, changed);
      }
    }
  }

  private async whiteout(rel: string): Promise<void> {
    const name = posix.join(posix.dirname(rel), WHITEOUT_PREFIX + posix.basename(rel));
    await this.entry({
      name,
      type: 'file',
      mode: 0o100644,
      uid: 0,
      gid: 0,
      mtime: new Date(0),
      size: 0,
      linkname: '',
      uname: '',
      gname: '',
      devmajor: 0,
      devminor: 0,
    });
  }

  private async nonDirectory(rel: string, st: BigIntStats, changed: boolean): Promise<void> {
    if (st.nlink <= 1n) {
      if (changed) await this.emit(rel, st);
      return;
    }
    const key = `${st.dev}:${st.ino}`;
    const source = this.inodeSource.get(key);
    if (source !== undefined) {
      await this.emitLink(rel, st, source);
      return;
    }
    if (!changed) {
      const waiting = this.inodeWaiting.get(key) ?? [];
      waiting.push(rel);
      this.inodeWaiting.set(key, waiting);
      return;
    }
    this.inodeSource.set(key, rel);
    await this.emit(rel, st);
    for (const other of this.inodeWaiting.get(key) ?? []) await this.emitLink(other, st, rel);
    this.inodeWaiting.delete(key);
  }

  private header(rel: string, st: BigIntStats): tar.Header {
    const uid = Number(st.uid);
    const gid = Number(st.gid);
    const pax: Record<string, string> = {};
    if (uid > MAX_USTAR_ID) pax.uid = String(uid);
    if (gid > MAX_USTAR_ID) pax.gid = String(gid);
    const type: tar.Header['type'] = st.isDirectory()
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
      name: type === 'directory' ? `${rel}/` : rel,
      type,
      // The full st_mode: tar-stream would replace a bare 0 permission with its default.
      mode: Number(st.mode),
      uid: Math.min(uid, MAX_USTAR_ID),
      gid: Math.min(gid, MAX_USTAR_ID),
      mtime: new Date(Number(st.mtimeNs / 1_000_000_000n) * 1000),
      size: type === 'file' ? Number(st.size) : 0,
      linkname: '',
      uname: '',
      gname: '',
      devmajor: devMajor(st.rdev),
      devminor: devMinor(st.rdev),
      pax: Object.keys(pax).length > 0 ? pax : null,
    };
  }

  private async ensureParents(rel: string): Promise<void> {
    const parts = rel.split('/').slice(0, -1);
    for (let k = 1; k <= parts.length; k++) {
      const dir = parts.slice(0, k).join('/');
      if (this.emittedDirs.has(dir)) continue;
      const st = await lstat(join(this.upper, dir), { bigint: true });
      this.emittedDirs.add(dir);
      await this.entry(this.header(dir, st));
    }
  }

  private async emit(rel: string, st: BigIntStats): Promise<void> {
    await this.ensureParents(rel);
    const h = this.header(rel, st);
    if (h.type === 'directory') {
      this.emittedDirs.add(rel);
      await this.entry(h);
    } else if (h.type === 'symlink') {
      await this.entry({ ...h, linkname: await readlink(join(this.upper, rel)) });
    } else if (h.type === 'file') {
      await this.fileEntry(rel, h);
    } else {
      await this.entry(h);
    }
  }

  private async emitLink(rel: string, st: BigIntStats, source: string): Promise<void> {
    await this.ensureParents(rel);
    await this.entry({ ...this.header(rel, st), type: 'link', linkname: source, size: 0 });
  }

  /** An entry without a body (a file entry, such as a whiteout, still needs its empty body ended). */
  private entry(header: tar.Header): Promise<void> {
    return new Promise((resolve, reject) => {
      const cb = (err?: Error | null) => (err ? reject(err) : resolve());
      if (header.type === 'file') this.pack.entry(header, Buffer.alloc(0), cb);
      else this.pack.entry(header, cb);
    });
  }

  /** Stream exactly the stat'ed size; a file that changed size meanwhile fails the diff. */
  private async fileEntry(rel: string, header: tar.Header): Promise<void> {
    const fh = await open(join(this.upper, rel), fsc.O_RDONLY | fsc.O_NOFOLLOW);
    try {
      let done!: () => void;
      let failed!: (err: Error) => void;
      const written = new Promise<void>((resolve, reject) => {
        done = resolve;
        failed = reject;
      });
      const sink = this.pack.entry(header, (err) => (err ? failed(err) : done()));
      let left = header.size;
      while (left > 0) {
        const buf = Buffer.allocUnsafe(Math.min(READ_CHUNK, left));
        const { bytesRead } = await fh.read(buf, 0, buf.length, null);
        if (bytesRead === 0) throw internal(`diff: ${rel} shrank while being read`);
        left -= bytesRead;
        if (!sink.write(buf.subarray(0, bytesRead))) await waitDrain(sink);
      }
      sink.end(undefined);
      await written;
    } finally {
      await fh.close();
    }
  }
}

function start(lower: string | undefined, upper: string, opts: DiffOptions): Readable {
  const writer = new ChangeWriter(lower, upper, opts.signal);
  writer.run().catch((err: unknown) => {
    const e =
      err instanceof StrataError
        ? err
        : internal(`diff of ${upper} against ${lower ?? 'nothing'}: ${messageOf(err)}`, { cause: err });
    writer.pack.destroy(e);
  });
  return Readable.from(writer.pack as AsyncIterable<Buffer>, { objectMode: false });
}

/** The changes from `lower` to `upper` as an uncompressed OCI layer tar; without `lower`, all of `upper`. */
export function diffDirectories(lower: string | undefined, upper: string, opts: DiffOptions = {}): Readable {
  return start(lower, upper, opts);
}

/** A whole directory as an uncompressed OCI layer tar (the first layer of an image). */
export function packDirectory(dir: string, opts: DiffOptions = {}): Readable {
  return start(undefined, dir, opts);
}
