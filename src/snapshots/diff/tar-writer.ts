// Tar header blocks for the layer differ, names and PAX values as bytes: a name that is not valid UTF-8,
// or a file capability (binary), must reach the layer exactly as it is on disk, which a string-based
// writer cannot do. The layout is the one tar-stream wrote before (ustar, a name split at a `/` into
// prefix and name when it is long, a PAX header named `PaxHeader` when a name is long or not ASCII or
// when there are records), so layers of ordinary trees keep their digests.
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
  /** PAX records after path and linkpath, in this order. */
  pax?: [string, Buffer][];
}

/** Largest uid or gid the header's 6-digit octal fields hold; bigger ones need PAX records. */
export const MAX_HEADER_ID = 0o777777;

const USTAR_MAGIC = Buffer.from('ustar\x0000', 'latin1');

/** tar-stream's octal field: `n` digits and a space, or all sevens when the value does not fit. */
function octal(value: number, n: number): string {
  const s = value.toString(8);
  return s.length > n ? `${'7'.repeat(n)} ` : `${s.padStart(n, '0')} `;
}

function isAscii(b: Buffer): boolean {
  for (const c of b) if (c >= 0x80) return false;
  return true;
}

interface BlockFields {
  name: Buffer;
  prefix: Buffer;
  type: EntryKind | 'pax-header';
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  linkname: Buffer | undefined;
  devmajor: number;
  devminor: number;
}

function block(f: BlockFields): Buffer {
  const buf = Buffer.alloc(BLOCK);
  f.name.copy(buf, NAME[0]);
  buf.write(octal(f.mode & 0o7777, 6), MODE[0], 'latin1');
  buf.write(octal(f.uid, 6), UID[0], 'latin1');
  buf.write(octal(f.gid, 6), GID[0], 'latin1');
  if (f.size.toString(8).length > 11) {
    // base-256 for sizes past 8 GiB
    buf[SIZE[0]] = 0x80;
    let n = f.size;
    for (let i = SIZE[1] - 1; i > 0; i--) {
      buf[SIZE[0] + i] = n % 0x100;
      n = Math.floor(n / 0x100);
    }
  } else buf.write(octal(f.size, 11), SIZE[0], 'latin1');
  buf.write(octal(f.mtime, 11), MTIME[0], 'latin1');
  buf[TYPEFLAG_AT] = TYPEFLAGS[f.type];
  f.linkname?.copy(buf, LINKNAME[0]);
  USTAR_MAGIC.copy(buf, MAGIC[0]);
  buf.write(octal(f.devmajor, 6), DEVMAJOR[0], 'latin1');
  buf.write(octal(f.devminor, 6), DEVMINOR[0], 'latin1');
  f.prefix.copy(buf, PREFIX[0]);
  // The checksum field counts as spaces.
  const [sumAt, sumLength] = CHECKSUM;
  let sum = sumLength * 0x20;
  for (let i = 0; i < BLOCK; i++) if (i < sumAt || i >= sumAt + sumLength) sum += buf[i]!;
  buf.write(octal(sum, 6), sumAt, 'latin1');
  return buf;
}

/** The name split into a ustar prefix and name, or undefined when it cannot be (PAX is needed). */
function split(name: Buffer): { prefix: Buffer; name: Buffer } | undefined {
  if (!isAscii(name)) return undefined;
  let rest = name;
  const prefixParts: Buffer[] = [];
  while (rest.length > 100) {
    const slash = rest.indexOf(0x2f);
    if (slash < 0) return undefined;
    prefixParts.push(rest.subarray(0, slash));
    rest = rest.subarray(slash + 1);
  }
  const prefix = Buffer.from(prefixParts.map((p) => p.toString('latin1')).join('/'), 'latin1');
  return prefix.length > 155 ? undefined : { prefix, name: rest };
}

/** One PAX record: `<length> <key>=<value>\n`, the length counting itself. */
function record(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`, 'utf8'), value, Buffer.from('\n')]);
  let digits = String(body.length).length;
  if (body.length + digits >= 10 ** digits) digits++;
  return Buffer.concat([Buffer.from(String(body.length + digits), 'latin1'), body]);
}

/** Zero bytes that fill an entry of `size` data bytes to a whole block. */
export const padding = (size: number): Buffer => Buffer.alloc((BLOCK - (size % BLOCK)) % BLOCK);

/** The blocks before an entry's data: its header, preceded by a PAX header when one is needed. */
export function encodeHeader(h: EntryHeader): Buffer {
  const fields = {
    type: h.type,
    mode: h.mode,
    uid: h.uid,
    gid: h.gid,
    size: h.size,
    mtime: h.mtime,
    linkname: h.linkname,
    devmajor: h.devmajor,
    devminor: h.devminor,
  };
  const plain = h.pax?.length ? undefined : split(h.name);
  if (plain && (h.linkname?.length ?? 0) <= 100) return block({ ...fields, ...plain });
  const records: Buffer[] = [];
  if (h.name.length > 0) records.push(record('path', h.name));
  if (h.linkname?.length) records.push(record('linkpath', h.linkname));
  for (const [key, value] of h.pax ?? []) records.push(record(key, value));
  const data = Buffer.concat(records);
  const stand = {
    ...fields,
    name: Buffer.from('PaxHeader'),
    prefix: Buffer.alloc(0),
    linkname: h.linkname?.length ? Buffer.from('PaxHeader') : undefined,
  };
  return Buffer.concat([
    block({ ...stand, type: 'pax-header', size: data.length }),
    data,
    padding(data.length),
    block(stand),
  ]);
}

/** The end of an archive: two zero blocks. */
export const END_OF_ARCHIVE = Buffer.alloc(2 * BLOCK);
