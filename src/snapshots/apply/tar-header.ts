// One tar header block and the PAX records before an entry, decoded as Go's archive/tar decodes them
// (tar-reader.ts streams the archive and says where readers differ). Fields the applier does not use
// are still checked where Go checks them, since a header Go refuses must be refused here too.
import { invalidArgument, type StrataError } from '../../errors.ts';
import { decodeName } from '../byte-names.ts';

export type EntryType =
  | 'file'
  | 'link'
  | 'symlink'
  | 'character-device'
  | 'block-device'
  | 'directory'
  | 'fifo'
  | 'contiguous-file';

/** One entry's header, after its PAX and GNU long-name headers are folded in. */
export interface Header {
  name: string;
  /** null for a typeflag Strata does not know, which the applier refuses. */
  type: EntryType | null;
  linkname: string | null;
  mode: number;
  uid: number;
  gid: number;
  /** The bytes of data that follow the header: 0 for the header-only types, whatever the field says. */
  size: number;
  mtime: Date;
  uname: string;
  gname: string;
  devmajor: number;
  devminor: number;
  /** The records of the PAX header before the entry, values decoded as names (byte-names.ts). */
  pax: Record<string, string> | null;
  /** `SCHILY.xattr.*` records, by attribute name, as the bytes the archive holds. */
  xattrs?: Record<string, Buffer>;
}

export const BLOCK = 512;
const XATTR_PREFIX = 'SCHILY.xattr.';

const TYPES = new Map<number, EntryType>([
  [0x30, 'file'],
  [0x31, 'link'],
  [0x32, 'symlink'],
  [0x33, 'character-device'],
  [0x34, 'block-device'],
  [0x35, 'directory'],
  [0x36, 'fifo'],
  [0x37, 'contiguous-file'],
]);
/** Entry types that never carry data in Go's archive/tar, whatever their size field says. */
export const HEADER_ONLY = new Set<EntryType | null>([
  'link',
  'symlink',
  'character-device',
  'block-device',
  'directory',
  'fifo',
]);
/** Go's TypeRegA, the pre-POSIX regular file. */
export const TYPEFLAG_NUL = 0;
export const PAX = 0x78; // x
export const PAX_GLOBAL = 0x67; // g
export const GNU_LONG_NAME = 0x4c; // L
const GNU_LONG_LINK = 0x4b; // K
/** Headers that describe the entry after them. */
export const META = new Set([PAX, PAX_GLOBAL, GNU_LONG_NAME, GNU_LONG_LINK]);
/** Old GNU "names" entries: Go reads them as entries of an unknown type, which containerd refuses. */
export const TYPEFLAG_N = 0x4e;

// Header fields: [offset, length] (the differ's writer lays out the same ones).
export const NAME = [0, 100] as const;
export const MODE = [100, 8] as const;
export const UID = [108, 8] as const;
export const GID = [116, 8] as const;
export const SIZE = [124, 12] as const;
export const MTIME = [136, 12] as const;
export const CHECKSUM = [148, 8] as const;
export const TYPEFLAG_AT = 156;
export const LINKNAME = [157, 100] as const;
export const MAGIC = [257, 6] as const;
const VERSION = [263, 2] as const;
const UNAME = [265, 32] as const;
const GNAME = [297, 32] as const;
export const DEVMAJOR = [329, 8] as const;
export const DEVMINOR = [337, 8] as const;
export const PREFIX = [345, 155] as const;
/** star's header: a 131-byte prefix, then atime and ctime, and a trailer at the end of the block. */
const STAR_PREFIX = [345, 131] as const;
const STAR_TIMES = [
  [476, 12],
  [488, 12],
] as const;
const STAR_TRAILER = [508, 4] as const;

type Format = 'v7' | 'ustar' | 'star' | 'gnu';

/** A format error at `offset` bytes into the (uncompressed) layer. */
export function corrupt(offset: number, what: string): StrataError {
  return invalidArgument(`invalid layer tar at offset ${offset}: ${what}`);
}

export const isZero = (block: Buffer): boolean => {
  for (let i = 0; i < BLOCK; i++) if (block[i] !== 0) return false;
  return true;
};

/** A NUL-terminated field, its bytes kept (as Go keeps them) through byte-names' escapes. */
function text(block: Buffer, [at, length]: readonly [number, number]): string {
  const nul = block.indexOf(0, at);
  return decodeName(block.subarray(at, nul < 0 || nul > at + length ? at + length : nul));
}

function is(block: Buffer, [at, length]: readonly [number, number], value: string): boolean {
  return block.toString('latin1', at, at + length) === value;
}

/**
 * A numeric field as Go reads it: base-256 when the first byte's high bit is set (two's complement
 * when the next bit is too), else octal digits between leading and trailing NULs and spaces, up to a
 * NUL (all NULs and spaces is 0). undefined when it is neither, or too big.
 */
function numeric(block: Buffer, [at, length]: readonly [number, number]): number | undefined {
  const first = block[at]!;
  if ((first & 0x80) !== 0) {
    const negative = (first & 0x40) !== 0;
    let x = 0n;
    for (let i = 0; i < length; i++) {
      let c = block[at + i]!;
      if (negative) c ^= 0xff;
      if (i === 0) c &= 0x7f;
      if (x >> 56n > 0n) return undefined;
      x = (x << 8n) | BigInt(c);
    }
    if (x >> 63n > 0n) return undefined;
    const value = negative ? -x - 1n : x;
    return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER)
      ? Number(value)
      : undefined;
  }
  let start = at;
  let end = at + length;
  while (start < end && (block[start] === 0 || block[start] === 0x20)) start++;
  while (end > start && (block[end - 1] === 0 || block[end - 1] === 0x20)) end--;
  const nul = block.indexOf(0, start);
  if (nul >= 0 && nul < end) end = nul;
  let x = 0;
  for (let i = start; i < end; i++) {
    const d = block[i]! - 0x30;
    if (d < 0 || d > 7) return undefined;
    x = x * 8 + d;
  }
  return Number.isSafeInteger(x) ? x : undefined;
}

/** Go's check: the stored sum matches the sum of the block's bytes, unsigned or signed, its own field as spaces. */
function checksumOk(block: Buffer): boolean {
  const stored = numeric(block, CHECKSUM);
  if (stored === undefined || (block[CHECKSUM[0]]! & 0x80) !== 0) return false;
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= CHECKSUM[0] && i < CHECKSUM[0] + CHECKSUM[1] ? 0x20 : block[i]!;
    unsigned += b;
    signed += b < 0x80 ? b : b - 0x100;
  }
  return stored === unsigned || stored === signed;
}

function formatOf(block: Buffer): Format {
  if (is(block, MAGIC, 'ustar\0')) return is(block, STAR_TRAILER, 'tar\0') ? 'star' : 'ustar';
  if (is(block, MAGIC, 'ustar ') && is(block, VERSION, ' \0')) return 'gnu';
  return 'v7';
}

/** The header block decoded as Go's readHeader does, before PAX and GNU headers are folded in. */
export function decodeHeader(block: Buffer, offset: number): Header & { typeflag: number } {
  if (!checksumOk(block)) throw corrupt(offset, 'a header block with a wrong checksum (not a tar?)');
  const format = formatOf(block);
  const number = (field: readonly [number, number], what: string): number => {
    const n = numeric(block, field);
    if (n === undefined) throw corrupt(offset, `the header's ${what} field is not a number`);
    return n;
  };
  const typeflag = block[TYPEFLAG_AT]!;
  const header: Header & { typeflag: number } = {
    typeflag,
    name: text(block, NAME),
    type: typeflag === TYPEFLAG_NUL ? 'file' : (TYPES.get(typeflag) ?? null),
    linkname: block[LINKNAME[0]] === 0 ? null : text(block, LINKNAME),
    mode: number(MODE, 'mode'),
    uid: number(UID, 'uid'),
    gid: number(GID, 'gid'),
    size: number(SIZE, 'size'),
    mtime: new Date(number(MTIME, 'mtime') * 1000),
    uname: '',
    gname: '',
    devmajor: 0,
    devminor: 0,
    pax: null,
  };
  if (format === 'v7') return header;
  header.uname = text(block, UNAME);
  header.gname = text(block, GNAME);
  header.devmajor = number(DEVMAJOR, 'devmajor');
  header.devminor = number(DEVMINOR, 'devminor');
  let prefix = '';
  if (format === 'ustar') prefix = text(block, PREFIX);
  else if (format === 'star') {
    prefix = text(block, STAR_PREFIX);
    for (const field of STAR_TIMES) number(field, 'atime or ctime');
  }
  if (prefix !== '') header.name = `${prefix}/${header.name}`;
  return header;
}

/** What Go's reader parses PAX numbers with: decimal integers, and times with decimal fractions. */
const PAX_INTEGERS = new Set(['size', 'uid', 'gid']);
const PAX_TIMES = new Set(['atime', 'mtime', 'ctime']);
const INT64_MAX = (1n << 63n) - 1n;

/** A PAX integer Go's ParseInt takes: optional sign, decimal digits, within int64. */
function paxInteger(value: string): boolean {
  return /^[+-]?[0-9]+$/.test(value) && BigInt(value) <= INT64_MAX && BigInt(value) >= -INT64_MAX - 1n;
}

/**
 * The records of a PAX header, values as bytes. Throws unless they are well formed, as Go's reader
 * checks them: `<length> <key>=<value>\n` with the length counting the whole record, a key without `=`,
 * no NUL in the key (nor in the value of a path or a name).
 */
export function paxRecords(buf: Buffer, offset: number): [string, Buffer][] {
  const records: [string, Buffer][] = [];
  const bad = (why: string) => corrupt(offset, `a PAX header with ${why}`);
  for (let at = 0; at < buf.length; ) {
    const space = buf.indexOf(0x20, at);
    const digits = space < 0 ? '' : buf.toString('latin1', at, space);
    const length = /^\+?[0-9]+$/.test(digits) ? Number(digits) : Number.NaN;
    if (!(length >= 5 && at + length <= buf.length && length > digits.length + 1))
      throw bad('a bad record length');
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
    records.push([key, record.subarray(eq + 1)]);
    at = end;
  }
  return records;
}

/** Go's mergePAX: an empty value keeps the header's own; sizes, ids and times must parse. */
export function mergePax(header: Header, records: [string, Buffer][], offset: number): void {
  const pax: Record<string, string> = {};
  const xattrs: Record<string, Buffer> = {};
  for (const [key, raw] of records) {
    // path and linkpath are bytes; other values are ASCII in practice and read the same way.
    const value = decodeName(raw);
    pax[key] = value;
    if (key.startsWith(XATTR_PREFIX)) xattrs[key.slice(XATTR_PREFIX.length)] = raw;
  }
  for (const [key, value] of Object.entries(pax)) {
    if (value === '') continue;
    const number = PAX_INTEGERS.has(key)
      ? paxInteger(value)
      : PAX_TIMES.has(key)
        ? /^[+-]?[0-9]+(\.[0-9]*)?$/.test(value) && paxInteger(value.split('.')[0]!)
        : true;
    if (!number) throw corrupt(offset, `PAX record ${JSON.stringify(key)} is no number`);
    if (key === 'path') header.name = value;
    else if (key === 'linkpath') header.linkname = value;
    else if (key === 'size') header.size = Number(value);
  }
  header.pax = pax;
  header.xattrs = xattrs;
}
