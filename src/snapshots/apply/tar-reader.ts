// The layer tar parser: tar-stream's extractor, made to read an archive as containerd's reader (Go's
// archive/tar) does, so a layer unpacks here to the tree containerd and Go-based scanners see. Where
// the two readers differ, a crafted layer could otherwise show one tree to a scanner and write another.
// The adjustments hook tar-stream's internal steps (its version is pinned by the lock file); a version
// without them is refused at the first apply rather than read differently.
import tar from 'tar-stream';
import { internal } from '../../errors.ts';

/** tar-stream's header as it really arrives: unknown typeflags give a null type, PAX records are strings. */
export type Header = Omit<tar.Header, 'type' | 'linkname' | 'pax'> & {
  type: tar.Header['type'] | null;
  linkname: string | null;
  pax?: Record<string, string> | null;
  /** `SCHILY.xattr.*` records, by attribute name, as the bytes the archive holds. */
  xattrs?: Record<string, Buffer>;
};

const XATTR_PREFIX = 'SCHILY.xattr.';

/** Entry types that never carry data in Go's archive/tar, whatever their size field says. */
const HEADER_ONLY = new Set<Header['type']>([
  'link',
  'symlink',
  'character-device',
  'block-device',
  'directory',
  'fifo',
]);

const BLOCK = 512;
const TYPEFLAG_AT = 156;
const NAME = { at: 0, length: 100 };
/** ustar's name prefix; a star header holds only 131 bytes of it, then atime and ctime. */
const PREFIX = { at: 345, starLength: 131 };
const USTAR_MAGIC = { at: 257, text: 'ustar\0' };
const GNU_MAGIC = { at: 257, text: 'ustar ' };
/** Numeric fields of every header: mode, uid, gid, size, mtime. */
const NUMBERS = [
  [100, 8],
  [108, 8],
  [116, 8],
  [124, 12],
  [136, 12],
] as const;
/** Numeric fields of ustar and GNU headers: devmajor, devminor. */
const DEVICE_NUMBERS = [
  [329, 8],
  [337, 8],
] as const;
const STAR_TRAILER = { at: 508, text: 'tar\0' };
/** Go's TypeRegA, the pre-POSIX regular file. */
const TYPEFLAG_NUL = 0;
/** Old GNU "names" entries: tar-stream takes them for long names, Go for entries of an unknown type. */
const TYPEFLAG_N = 0x4e;

/** The parts of tar-stream's extractor that decode headers, frame entries and find the archive's end. */
interface ExtractInternals {
  _header: Header | null;
  _buffer: { buffered: number; shift(size: number): Buffer | null };
  _gnuLongPath: string | null;
  _gnuLongLinkPath: string | null;
  _paxGlobal: Record<string, string> | null;
  _decodeLongHeader(buf: Buffer): void;
  _applyLongHeaders(): void;
  _consumeHeader(): boolean;
  _continueWrite(err: Error | null): void;
  _write(data: Buffer, cb: (err?: Error | null) => void): void;
}

/**
 * A tar parser that reads the archive Go's reader reads:
 * - a header-only entry (symlink, hardlink, device, fifo, directory) is followed directly by the next
 *   header. tar-stream would take `size` bytes after it as its data: the entries in those bytes would
 *   vanish here, and bytes crafted to look like a long file to Go would hide later entries from it.
 * - two zero blocks end the archive; what follows is only hashed (containerd reads it for the diff_id),
 *   where tar-stream would read on and apply entries no other reader sees.
 * - a zero block followed by a header is corrupt: such entries come out in `refused`.
 * - a GNU long name or link name wins over a PAX path or linkpath (tar-stream lets PAX win).
 * - a global PAX header changes no entry (containerd ignores it; tar-stream merges it into entries).
 * - a pre-POSIX regular file (typeflag NUL) whose final name ends in `/` is a directory.
 * - typeflag N is no long-name header but an entry of an unknown type, which containerd refuses.
 * - a ustar block with star's trailer has a 131-byte name prefix.
 * - a PAX header with a malformed record is refused (tar-stream kept the records before it), and so
 *   is a header whose octal number fields hold other characters (tar-stream read up to them).
 * - extended attribute values come as bytes in `xattrs` (tar-stream decodes PAX values as UTF-8).
 */
export function layerExtract(): { extract: tar.Extract; refused: WeakSet<object> } {
  // Pre-POSIX (v7) headers lack the ustar magic but are valid tar; the header checksum still guards them.
  const extract = tar.extract({ allowUnknownFormat: true } as Parameters<typeof tar.extract>[0]);
  const inner = extract as unknown as ExtractInternals;
  const {
    _applyLongHeaders: applyLong,
    _consumeHeader: consumeHeader,
    _decodeLongHeader: decodeLong,
    _write: write,
  } = inner;
  const buffer = inner._buffer;
  const shift = buffer?.shift;
  if (![applyLong, consumeHeader, decodeLong, write, shift].every((f) => typeof f === 'function')) {
    throw internal('this tar-stream cannot be made to read layers as containerd does');
  }
  const refused = new WeakSet<object>();
  let zeroBlocks = 0;
  /** The attributes in the PAX header before the next entry. */
  let xattrs: Record<string, Buffer> | undefined;
  /** The header block being decoded: its typeflag byte and star trailer are lost in tar-stream's header. */
  let block: Buffer | null = null;
  let atHeader = false;
  buffer.shift = function (size: number) {
    const out = shift.call(this, size);
    if (atHeader && size === BLOCK) {
      atHeader = false;
      block = out;
      // A throw here is tar-stream's own header error (the shift is inside its decode's try).
      if (out) checkNumbers(out);
    }
    return out;
  };
  // Runs after the PAX and GNU headers are folded in and before the size is used to frame the data.
  inner._applyLongHeaders = function (this: ExtractInternals) {
    const { _gnuLongPath: gnuName, _gnuLongLinkPath: gnuLink } = this;
    const header = this._header;
    if (!header) return;
    if (block !== null && isStar(block)) header.name = starName(block);
    applyLong.call(this);
    if (gnuName) header.name = gnuName;
    if (gnuLink) header.linkname = gnuLink;
    if (xattrs) header.xattrs = xattrs;
    xattrs = undefined;
    if (block?.[TYPEFLAG_AT] === TYPEFLAG_NUL) header.type = header.name.endsWith('/') ? 'directory' : 'file';
    if (HEADER_ONLY.has(header.type)) header.size = 0;
    if (zeroBlocks > 0) refused.add(header);
  };
  inner._decodeLongHeader = function (this: ExtractInternals, buf: Buffer) {
    const type: string | null | undefined = this._header?.type;
    if (type === 'pax-header' || type === 'pax-global-header') {
      const records = paxRecords(buf);
      if (type === 'pax-header') {
        xattrs = {};
        for (const [key, value] of records) {
          if (key.startsWith(XATTR_PREFIX)) xattrs[key.slice(XATTR_PREFIX.length)] = value;
        }
      }
    }
    decodeLong.call(this, buf);
    this._paxGlobal = null;
  };
  inner._consumeHeader = function (this: ExtractInternals) {
    atHeader = true;
    block = null;
    let consumed: boolean;
    try {
      consumed = consumeHeader.call(this);
    } finally {
      atHeader = false;
    }
    if (!consumed) return false;
    if (block?.[TYPEFLAG_AT] === TYPEFLAG_N) {
      this._continueWrite(new Error('unsupported tar entry type N'));
      return false;
    }
    // A zero block leaves no header behind.
    if (this._header === null && ++zeroBlocks === 2) buffer.shift(buffer.buffered);
    return true;
  };
  inner._write = function (this: ExtractInternals, data, cb) {
    if (zeroBlocks >= 2) cb(null);
    else write.call(this, data, cb);
  };
  return { extract, refused };
}

/**
 * Throws unless the header block's numeric fields read as Go reads them: base-256 when the high bit of
 * the first byte is set, else octal digits between NULs and spaces (all NULs and spaces is 0).
 */
function checkNumbers(block: Buffer): void {
  const fields = has(block, USTAR_MAGIC) || has(block, GNU_MAGIC) ? [...NUMBERS, ...DEVICE_NUMBERS] : NUMBERS;
  for (const [at, length] of fields) {
    if ((block[at]! & 0x80) !== 0) continue;
    const text = block.toString('latin1', at, at + length).replace(/^[ \0]+|[ \0]+$/g, '');
    const digits = text.split('\0')[0]!;
    if (text !== '' && !/^[0-7]+$/.test(digits)) {
      throw new Error(`Invalid tar header: numeric field at ${at} is ${JSON.stringify(text)}`);
    }
  }
}

function has(block: Buffer, field: { at: number; text: string }): boolean {
  return block.toString('latin1', field.at, field.at + field.text.length) === field.text;
}

function isStar(block: Buffer): boolean {
  return has(block, USTAR_MAGIC) && has(block, STAR_TRAILER);
}

/** A NUL-terminated field, decoded as tar-stream decodes names. */
function field(block: Buffer, at: number, length: number): string {
  const end = block.indexOf(0, at);
  return block.toString('utf8', at, end < 0 || end > at + length ? at + length : end);
}

/** A star header's name: its short prefix, a slash, its name field. */
function starName(block: Buffer): string {
  const prefix = field(block, PREFIX.at, PREFIX.starLength);
  const name = field(block, NAME.at, NAME.length);
  return prefix === '' ? name : `${prefix}/${name}`;
}

/** What Go's reader parses PAX numbers with: decimal integers, and times with decimal fractions. */
const PAX_NUMBERS = new Map<string, RegExp>([
  ...['size', 'uid', 'gid'].map((k): [string, RegExp] => [k, /^[+-]?[0-9]+$/]),
  ...['atime', 'mtime', 'ctime'].map((k): [string, RegExp] => [k, /^[+-]?[0-9]+(\.[0-9]*)?$/]),
]);

/**
 * The records of a PAX header, values as bytes. Throws unless they are well formed, as Go's reader
 * checks them: `<length>
 * <key>=<value>\n` with the length counting the whole record, a key without `=`, no NUL in the key
 * (nor in the value of a path or a name), and sizes, ids and times that are numbers.
 */
function paxRecords(buf: Buffer): [string, Buffer][] {
  const records: [string, Buffer][] = [];
  const bad = (why: string) => new Error(`invalid PAX header: ${why}`);
  for (let at = 0; at < buf.length; ) {
    const space = buf.indexOf(0x20, at);
    const digits = space < 0 ? '' : buf.toString('latin1', at, space);
    const length = /^[0-9]+$/.test(digits) ? Number(digits) : Number.NaN;
    if (!(length >= 5 && at + length <= buf.length && length > digits.length + 1))
      throw bad('a record length');
    const end = at + length;
    if (buf[end - 1] !== 0x0a) throw bad('a record without its newline');
    const record = buf.subarray(space + 1, end - 1);
    const eq = record.indexOf(0x3d);
    if (eq <= 0) throw bad('a record without a key');
    const key = record.toString('utf8', 0, eq);
    const nulIn = ['path', 'linkpath', 'uname', 'gname'].includes(key)
      ? record.subarray(eq + 1)
      : record.subarray(0, eq);
    if (nulIn.includes(0)) throw bad(`a NUL byte in record ${JSON.stringify(key)}`);
    const value = record.subarray(eq + 1);
    const form = PAX_NUMBERS.get(key);
    if (form && value.length > 0 && !form.test(value.toString('latin1'))) {
      throw bad(`record ${JSON.stringify(key)} is no number`);
    }
    records.push([key, value]);
    at = end;
  }
  return records;
}
