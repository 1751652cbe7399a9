// Tar header blocks for the layer differ, names and PAX values as bytes: a name that is not valid UTF-8,
// or a file capability (binary), must reach the layer exactly as it is on disk, which a string-based
// writer cannot do. The layout is the one Go's archive/tar writes for containerd's differ (headers it
// asks to be PAX, whole-second times): a plain ustar header whenever one can hold the entry, a long name
// split into prefix and name at the last `/` that fits; otherwise a PAX header named
// `<dir>/PaxHeaders.0/<base>` with its records sorted by key, then a header holding what ustar can (ASCII
// only, cut to the field). Numbers are zero-padded octal ended by a NUL, the checksum six digits, a NUL
// and a space. So a diff of a tree has the bytes, and the digest, containerd's diff of it has.
import {
  BLOCK,
  CHECKSUM,
  DEVMAJOR,
  DEVMINOR,
  type EntryType,
  GID,
  LINKNAME,
  MAGIC,
  MODE,
  MTIME,
  NAME,
  PREFIX,
  SIZE,
  TYPEFLAG_AT,
  UID,
} from '../apply/tar-header.ts';

/** The entry types a snapshot tree has (the reader's, without the old contiguous file). */
export type EntryKind = Exclude<EntryType, 'contiguous-file'>;

const TYPEFLAGS: Record<EntryKind | 'pax-header', number> = {
  file: 0x30,
  link: 0x31,
  symlink: 0x32,
  'character-device': 0x33,
  'block-device': 0x34,
  directory: 0x35,
  fifo: 0x36,
  'pax-header': 0x78,
};

export interface EntryHeader {
  /** The entry's name as bytes (a directory's ends in `/`). */
  name: Buffer;
  type: EntryKind;
  /** st_mode; only the permission bits are written. */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Whole seconds since the epoch. */
  mtime: number;
  /** Link target as bytes, for links and symlinks. */
  linkname?: Buffer;
  devmajor: number;
  devminor: number;
  /** PAX records of the entry's own (a file capability); path, linkpath, ids and size are the writer's. */
  pax?: [string, Buffer][];
}

/** ustar's magic and version, as Go writes them for ustar and PAX headers. */
const USTAR_MAGIC = Buffer.from('ustar\x0000', 'latin1');
const PAX_HEADERS_DIR = Buffer.from('PaxHeaders.0');
const SLASH = 0x2f;

type Field = readonly [offset: number, length: number];

/** Whether `value` fits a field's octal digits (all but the NUL at its end). */
const fitsOctal = (value: number, [, length]: Field): boolean => value >= 0 && value < 8 ** (length - 1);

/** Zero-padded octal ended by a NUL; 0 for a value the field cannot hold (a PAX record carries it). */
function putOctal(buf: Buffer, field: Field, value: number): void {
  const [at, length] = field;
  const digits = (fitsOctal(value, field) ? value : 0).toString(8).padStart(length - 1, '0');
  buf.write(`${digits}\0`, at, 'latin1');
}

/**
 * Bytes into a field, NUL-terminated when shorter, cut when longer. A cut that would end in `/` ends at
 * the slashes instead, so no reader of the field alone takes a file for a directory.
 */
function putBytes(buf: Buffer, [at, length]: Field, value: Buffer): void {
  value.copy(buf, at, 0, Math.min(value.length, length));
  if (value.length > length && buf[at + length - 1] === SLASH) {
    let n = length - 1;
    while (n > 0 && value[n - 1] === SLASH) n--;
    buf[at + n] = 0;
  }
}

function isAscii(b: Buffer): boolean {
  for (const c of b) if (c >= 0x80) return false;
  return true;
}

/** The bytes a header field can hold of a name: the ASCII ones. */
const asciiOnly = (b: Buffer): Buffer => (isAscii(b) ? b : Buffer.from(b.filter((c) => c < 0x80 && c !== 0)));

/** A long ASCII name split at the last `/` that leaves a prefix ustar holds, or undefined. */
function splitUstar(name: Buffer): { prefix: Buffer; name: Buffer } | undefined {
  if (name.length <= NAME[1] || !isAscii(name)) return undefined;
  let end = name.length;
  if (end > PREFIX[1] + 1) end = PREFIX[1] + 1;
  else if (name[end - 1] === SLASH) end--;
  const i = name.subarray(0, end).lastIndexOf(SLASH);
  const rest = name.length - i - 1;
  if (i <= 0 || rest > NAME[1] || rest === 0 || i > PREFIX[1]) return undefined;
  return { prefix: name.subarray(0, i), name: name.subarray(i + 1) };
}

/** Writes the magic and the checksum (six octal digits, a NUL and a space) of a filled block. */
function seal(buf: Buffer): Buffer {
  USTAR_MAGIC.copy(buf, MAGIC[0]);
  const [at, length] = CHECKSUM;
  let sum = length * 0x20; // the checksum field counts as spaces
  for (let i = 0; i < BLOCK; i++) if (i < at || i >= at + length) sum += buf[i]!;
  buf.write(`${sum.toString(8).padStart(6, '0')}\0 `, at, 'latin1');
  return buf;
}

/**
 * The header block of an entry: as ustar, its name (split when `prefix` is given) and link as they are;
 * after a PAX header, their ASCII bytes cut to the fields.
 */
function entryBlock(h: EntryHeader, format: 'ustar' | 'pax', name: Buffer, prefix?: Buffer): Buffer {
  const buf = Buffer.alloc(BLOCK);
  putBytes(buf, NAME, format === 'ustar' ? name : asciiOnly(name));
  putOctal(buf, MODE, h.mode & 0o7777);
  putOctal(buf, UID, h.uid);
  putOctal(buf, GID, h.gid);
  putOctal(buf, SIZE, h.size);
  putOctal(buf, MTIME, h.mtime);
  buf[TYPEFLAG_AT] = TYPEFLAGS[h.type];
  if (h.linkname) putBytes(buf, LINKNAME, format === 'ustar' ? h.linkname : asciiOnly(h.linkname));
  putOctal(buf, DEVMAJOR, h.devmajor);
  putOctal(buf, DEVMINOR, h.devminor);
  if (prefix) putBytes(buf, PREFIX, prefix);
  return seal(buf);
}

/** One PAX record: `<length> <key>=<value>\n`, the length counting itself. */
function record(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`, 'utf8'), value, Buffer.from('\n')]);
  let digits = String(body.length).length;
  if (body.length + digits >= 10 ** digits) digits++;
  return Buffer.concat([Buffer.from(String(body.length + digits), 'latin1'), body]);
}

/** The PAX header's own name: `PaxHeaders.0` between the entry's directory and base name. */
function paxHeaderName(name: Buffer): Buffer {
  const slash = name.lastIndexOf(SLASH);
  const dir = name.subarray(0, slash + 1);
  const base = name.subarray(slash + 1);
  const joined = Buffer.concat(
    base.length > 0 ? [dir, PAX_HEADERS_DIR, Buffer.from('/'), base] : [dir, PAX_HEADERS_DIR],
  );
  let cut = asciiOnly(joined).subarray(0, NAME[1]);
  while (cut.length > 0 && cut[cut.length - 1] === SLASH) cut = cut.subarray(0, -1);
  return cut;
}

/** Zero bytes that fill an entry of `size` data bytes to a whole block. */
export const padding = (size: number): Buffer => Buffer.alloc((BLOCK - (size % BLOCK)) % BLOCK);

/** The blocks before an entry's data: its header, preceded by a PAX header when one is needed. */
export function encodeHeader(h: EntryHeader): Buffer {
  const records = new Map<string, Buffer>();
  let ustar = !h.pax?.length;
  const longName = h.name.length > NAME[1] || !isAscii(h.name);
  const split = longName ? splitUstar(h.name) : undefined;
  if (longName) {
    records.set('path', h.name);
    if (!split) ustar = false;
  }
  if (h.linkname && (h.linkname.length > LINKNAME[1] || !isAscii(h.linkname))) {
    records.set('linkpath', h.linkname);
    ustar = false;
  }
  for (const [key, value, field] of [
    ['uid', h.uid, UID],
    ['gid', h.gid, GID],
    ['size', h.size, SIZE],
    ['mtime', h.mtime, MTIME], // before 1970, or past 2242
  ] as const) {
    if (!fitsOctal(value, field)) {
      records.set(key, Buffer.from(String(value)));
      ustar = false;
    }
  }
  if (ustar) return entryBlock(h, 'ustar', split?.name ?? h.name, split?.prefix);

  for (const [key, value] of h.pax ?? []) if (!records.has(key)) records.set(key, value);
  const keys = [...records.keys()].sort(); // the keys are ASCII: code unit order is byte order
  const data = Buffer.concat(keys.map((k) => record(k, records.get(k)!)));
  const pax = Buffer.alloc(BLOCK);
  putBytes(pax, NAME, paxHeaderName(h.name));
  putOctal(pax, MODE, 0);
  putOctal(pax, UID, 0);
  putOctal(pax, GID, 0);
  putOctal(pax, SIZE, data.length);
  putOctal(pax, MTIME, 0);
  pax[TYPEFLAG_AT] = TYPEFLAGS['pax-header'];
  return Buffer.concat([seal(pax), data, padding(data.length), entryBlock(h, 'pax', h.name)]);
}

/** The end of an archive: two zero blocks. */
export const END_OF_ARCHIVE = Buffer.alloc(2 * BLOCK);
