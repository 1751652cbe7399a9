// GNU sparse files in PAX form (what `tar --sparse --format=posix` writes), read as Go's archive/tar and
// so containerd read them: the entry's real name and size come from GNU.sparse.* records, and its data
// holds only the non-hole segments, listed by a map in the records (format 0.1) or at the head of the
// data (format 1.0). Holes stay holes in the written file.
import { ftruncateSync as ftruncate, writeSync } from 'node:fs';
import { invalidArgument } from '../../errors.ts';
import { BLOCK } from './tar-header.ts';

export interface Segment {
  offset: number;
  length: number;
}

export interface SparseFile {
  /** The file's real name, when the records give one. */
  name?: string;
  /** The file's real size. */
  size: number;
  /** The data segments; undefined for format 1.0, whose map leads the entry's data. */
  map?: Segment[];
}

function bad(what: string): never {
  throw invalidArgument(`layer entry has a malformed GNU sparse ${what}`);
}

function count(text: string | undefined, what: string): number {
  if (text === undefined || !/^[0-9]+$/.test(text)) bad(what);
  const n = Number(text);
  if (!Number.isSafeInteger(n)) bad(what);
  return n;
}

function pairs(numbers: readonly string[], what: string): Segment[] {
  const out: Segment[] = [];
  for (let i = 0; i + 1 < numbers.length; i += 2) {
    out.push({ offset: count(numbers[i], what), length: count(numbers[i + 1], what) });
  }
  return out;
}

/**
 * The sparse file an entry's PAX records describe, or undefined when they describe none (as Go, an
 * unknown sparse version is an ordinary file). Format 0.0 repeats its map records, which the tar parser
 * keeps only the last of: it is refused rather than written wrong.
 */
export function sparseOf(
  pax: Readonly<Record<string, string>> | null | undefined,
  storedSize: number,
): SparseFile | undefined {
  if (!pax) return undefined;
  const major = pax['GNU.sparse.major'] ?? '';
  const minor = pax['GNU.sparse.minor'] ?? '';
  const mapText = pax['GNU.sparse.map'] ?? '';
  let v1: boolean;
  if (major === '1' && minor === '0') v1 = true;
  else if (major === '0' && (minor === '0' || minor === '1')) v1 = false;
  else if (major !== '' || minor !== '') return undefined;
  else if (mapText !== '' || pax['GNU.sparse.offset'] !== undefined) v1 = false;
  else return undefined;
  if (!v1 && mapText === '' && pax['GNU.sparse.offset'] !== undefined) {
    throw invalidArgument('layer entry is a GNU sparse file of format 0.0, which is not supported');
  }
  const sizeText = pax['GNU.sparse.size'] || pax['GNU.sparse.realsize'];
  const size = sizeText ? count(sizeText, 'size') : storedSize;
  const name = pax['GNU.sparse.name'] || undefined;
  const file: SparseFile = { size, ...(name !== undefined ? { name } : {}) };
  if (v1) return file;
  const blocks = count(pax['GNU.sparse.numblocks'], 'block count');
  const numbers = mapText === '' ? [] : mapText.split(',');
  if (numbers.length !== 2 * blocks) bad('map');
  return { ...file, map: pairs(numbers, 'map') };
}

/** Segments in order, not overlapping, inside the file (the checks Go's reader makes). */
function validate(map: readonly Segment[], size: number): void {
  let end = 0;
  for (const s of map) {
    if (s.offset < end || s.offset + s.length > size) bad('map');
    end = s.offset + s.length;
  }
}

/** Bytes of an entry's data, taken in pieces of a chosen length. */
class Bytes {
  private readonly it: AsyncIterator<Buffer>;
  private head: Buffer = Buffer.alloc(0);

  constructor(chunks: AsyncIterable<Buffer>) {
    this.it = chunks[Symbol.asyncIterator]();
  }

  /** Up to `max` bytes (fewer only at the end, none once it is reached). */
  async take(max: number): Promise<Buffer> {
    if (this.head.length === 0) {
      const r = await this.it.next();
      if (r.done) return this.head;
      this.head = r.value;
    }
    const out = this.head.subarray(0, max);
    this.head = this.head.subarray(out.length);
    return out;
  }
}

/**
 * Format 1.0's map is held in memory before the data it describes: a larger one is refused. Go reads any
 * size (a map of 1.8 MiB applies in containerd, and here); a 128 MiB map, 130 KiB gzipped, took the
 * daemon to 3 GiB.
 */
export const MAX_SPARSE_MAP_BYTES = 4 << 20;

/** Format 1.0's map: decimal numbers, one a line, in whole blocks at the head of the data. */
async function readMap(data: Bytes): Promise<Segment[]> {
  let text = '';
  let lines = 0;
  const feed = async (wanted: number): Promise<void> => {
    while (lines < wanted) {
      if (text.length + BLOCK > MAX_SPARSE_MAP_BYTES) bad(`map (more than ${MAX_SPARSE_MAP_BYTES} bytes)`);
      let block: Buffer = Buffer.alloc(0);
      while (block.length < BLOCK) {
        const got = await data.take(BLOCK - block.length);
        if (got.length === 0) bad('map (the data ends inside it)');
        block = Buffer.concat([block, got]);
      }
      const s = block.toString('latin1');
      text += s;
      for (const c of s) if (c === '\n') lines++;
    }
  };
  await feed(1);
  const entries = count(text.slice(0, text.indexOf('\n')), 'map');
  // Each entry needs two lines of at least two bytes: a count the data cannot hold is refused before reading.
  if (entries > Number.MAX_SAFE_INTEGER / 4) bad('map');
  await feed(1 + 2 * entries);
  return pairs(text.split('\n').slice(1, 1 + 2 * entries), 'map');
}

/** Writes the sparse entry's data into `fd` (a new, empty file) and gives the file its real size. */
export async function writeSparse(
  fd: number,
  chunks: AsyncIterable<Buffer>,
  file: SparseFile,
): Promise<void> {
  const data = new Bytes(chunks);
  const map = file.map ?? (await readMap(data));
  validate(map, file.size);
  for (const s of map) {
    let at = s.offset;
    const end = s.offset + s.length;
    while (at < end) {
      const chunk = await data.take(end - at);
      if (chunk.length === 0) bad('entry (its data is shorter than its map)');
      for (let done = 0; done < chunk.length; )
        done += writeSync(fd, chunk, done, chunk.length - done, at + done);
      at += chunk.length;
    }
  }
  if ((await data.take(1)).length > 0) bad('entry (its data is longer than its map)');
  ftruncate(fd, file.size);
}
