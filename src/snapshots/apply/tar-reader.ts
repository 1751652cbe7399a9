// The layer tar parser: Strata's own streaming reader, which reads an archive as containerd's reader
// (Go's archive/tar) does, so a layer unpacks here to the tree containerd and Go-based scanners see.
// Where two readers differ, a crafted layer could otherwise show one tree to a scanner and write another.
// It replaced tar-stream's extractor, which could be made to read as Go does only by hooking its private
// methods.
import { decodeName } from '../byte-names.ts';
import {
  BLOCK,
  corrupt,
  decodeHeader,
  GNU_LONG_NAME,
  HEADER_ONLY,
  type Header,
  isZero,
  META,
  mergePax,
  PAX,
  PAX_GLOBAL,
  paxRecords,
  TYPEFLAG_N,
  TYPEFLAG_NUL,
} from './tar-header.ts';

export interface TarEntry {
  header: Header;
  /** The entry's data in chunks; what the caller leaves unread is skipped before the next entry. */
  body: AsyncIterable<Buffer>;
}

/** Go caps PAX and GNU long-name headers at 1 MiB: their content is held in memory. */
export const MAX_META_BYTES = 1 << 20;

/** The layer's bytes, taken in pieces from a stream of chunks; `offset` counts what was taken. */
class Input {
  offset = 0;
  private readonly it: AsyncIterator<Buffer>;
  private chunk: Buffer = Buffer.alloc(0);
  private at = 0;

  constructor(chunks: AsyncIterable<Buffer>) {
    this.it = chunks[Symbol.asyncIterator]();
  }

  /** False once the stream has ended and nothing is left. */
  private async more(): Promise<boolean> {
    while (this.at >= this.chunk.length) {
      const r = await this.it.next();
      if (r.done) return false;
      this.chunk = r.value;
      this.at = 0;
    }
    return true;
  }

  /** Up to `max` bytes without copying; empty only at the end of the stream. */
  async some(max: number): Promise<Buffer> {
    if (this.at >= this.chunk.length && !(await this.more())) return this.chunk.subarray(0, 0);
    const end = Math.min(this.chunk.length, this.at + max);
    const out = this.chunk.subarray(this.at, end);
    this.offset += end - this.at;
    this.at = end;
    return out;
  }

  /** Exactly `n` bytes; null when the stream ends before the first of them, else a throw if it ends early. */
  async exactly(n: number, what: string): Promise<Buffer | null> {
    const start = this.offset;
    const first = await this.some(n);
    if (first.length === n) return first;
    if (first.length === 0) return null;
    const parts = [first];
    let got = first.length;
    while (got < n) {
      const part = await this.some(n - got);
      if (part.length === 0) throw corrupt(start, `the layer ends inside ${what}`);
      parts.push(part);
      got += part.length;
    }
    return Buffer.concat(parts, n);
  }

  async skip(n: number, what: string): Promise<void> {
    for (let left = n; left > 0; ) {
      const part = await this.some(left);
      if (part.length === 0) throw corrupt(this.offset, `the layer ends inside ${what}`);
      left -= part.length;
    }
  }

  /** Reads the rest of the stream (containerd hashes what follows the end of the archive too). */
  async drain(): Promise<void> {
    this.at = this.chunk.length;
    while (await this.more()) this.at = this.chunk.length;
  }
}

/** Bytes to the end of the block a `size`-byte body starts. */
const padding = (size: number): number => -size & (BLOCK - 1);

/** What the meta headers before an entry said about it. */
interface Pending {
  pax?: { records: [string, Buffer][]; offset: number };
  longName?: string;
  longLink?: string;
}

/**
 * Reads a layer tar as Go's archive/tar reads it, entry by entry, data streamed in the chunks it came
 * in. The points where readers differ, and what this one does as Go does:
 * - a header-only entry (symlink, hardlink, device, fifo, directory) is followed directly by the next
 *   header: a reader taking `size` bytes after it as data would apply entries no other reader sees, or
 *   hide the ones crafted to look like data to it.
 * - two zero blocks end the archive; what follows is only read (containerd hashes it for the diff_id).
 * - a zero block followed by anything but a zero block is corrupt.
 * - a GNU long name or link name wins over a PAX path or linkpath.
 * - a global PAX header changes no entry, and ends the meta headers before it (Go returns it as an
 *   entry of its own, which containerd skips).
 * - a pre-POSIX regular file (typeflag NUL) whose final name ends in `/` is a directory.
 * - typeflag N is no long-name header but an entry of an unknown type, which containerd refuses.
 * - a ustar block with star's trailer has a 131-byte name prefix.
 * - a PAX header with a malformed record is refused, and so is a header whose number fields are
 *   neither octal nor base-256, or whose checksum is neither the unsigned nor the signed byte sum.
 * - pre-POSIX (v7) headers, without the ustar magic, are read; their checksum still guards them.
 * - extended attribute values come as bytes in `xattrs`.
 * - PAX and GNU long-name headers over 1 MiB are refused (they are held in memory, as in Go).
 * A stream that ends inside a header, a body or its padding is refused; one that ends at a block
 * boundary without the end-of-archive blocks is complete (as for Go).
 */
export async function* readTar(chunks: AsyncIterable<Buffer>): AsyncGenerator<TarEntry> {
  const input = new Input(chunks);
  let pending: Pending = {};
  for (;;) {
    const at = input.offset;
    const block = await input.exactly(BLOCK, 'a header');
    if (block === null) return;
    if (isZero(block)) {
      const second = await input.exactly(BLOCK, 'the end-of-archive blocks');
      if (second === null) return;
      if (!isZero(second)) throw corrupt(at + BLOCK, 'a header after a lone zero block');
      await input.drain();
      return;
    }
    const header = decodeHeader(block, at);
    const { typeflag } = header;
    if (typeflag === TYPEFLAG_N) throw corrupt(at, 'an entry of unsupported type N');
    if (header.size < 0 && !HEADER_ONLY.has(header.type)) throw corrupt(at, 'a negative size');
    if (META.has(typeflag)) {
      const what = typeflag === PAX || typeflag === PAX_GLOBAL ? 'a PAX header' : 'a GNU long name';
      if (header.size > MAX_META_BYTES) {
        throw corrupt(at, `${what} of ${header.size} bytes (more than ${MAX_META_BYTES})`);
      }
      const content = (await input.exactly(header.size, what)) ?? Buffer.alloc(0);
      if (content.length < header.size) throw corrupt(at, `the layer ends inside ${what}`);
      await input.skip(padding(header.size), `${what}'s padding`);
      if (typeflag === PAX_GLOBAL) {
        paxRecords(content, at);
        pending = {};
      } else if (typeflag === PAX) pending.pax = { records: paxRecords(content, at), offset: at };
      else {
        const nul = content.indexOf(0);
        const name = decodeName(content.subarray(0, nul < 0 ? content.length : nul));
        if (typeflag === GNU_LONG_NAME) pending.longName = name;
        else pending.longLink = name;
      }
      continue;
    }
    if (pending.pax) mergePax(header, pending.pax.records, pending.pax.offset);
    if (pending.longName) header.name = pending.longName;
    if (pending.longLink) header.linkname = pending.longLink;
    pending = {};
    if (typeflag === TYPEFLAG_NUL && header.name.endsWith('/')) header.type = 'directory';
    if (HEADER_ONLY.has(header.type)) header.size = 0;
    if (!(Number.isSafeInteger(header.size) && header.size >= 0)) {
      throw corrupt(at, `an entry's size ${header.size} is out of range`);
    }
    const { typeflag: _, ...entryHeader } = header;
    let left = header.size;
    const name = JSON.stringify(header.name);
    async function* body(): AsyncGenerator<Buffer> {
      while (left > 0) {
        const part = await input.some(left);
        if (part.length === 0) throw corrupt(input.offset, `the layer ends inside the data of ${name}`);
        left -= part.length;
        yield part;
      }
    }
    yield { header: entryHeader, body: body() };
    await input.skip(left, `the data of ${name}`);
    left = 0;
    await input.skip(padding(header.size), `the padding after ${name}`);
  }
}
