// The inputs of the last successful build of each source (remote, Dockerfile and context paths, or a
// reference), on disk, so that the next build can say what changed even after a restart. Bounded in
// number of sources; the oldest go first.
//
// A large context's record is tens of MB: one JSON.parse or JSON.stringify of it held the builder's event
// loop for 0.3-1 s. So a record is a file of lines, written and read a chunk at a time: a header line
// (FORMAT, the key, when, the inputs but their files, how many files), then one [path, `mode id`] line
// per file in the record's order. Whether the files need comparing at all is known from the header, so
// it can be read alone (head).
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { isENOENT } from '../content/fs-util.ts';
import { aborted, messageOf } from '../errors.ts';
import { type BuildInputs, type FileId, fileIdsOf } from './build-key.ts';

export interface HistoryEntry {
  key: string;
  /** A Dockerfile build's inputs (a reference source has only its key). */
  inputs?: BuildInputs;
  /** Unix ms. */
  builtAt: number;
}

/** A build's inputs but the files it read, which a large context's record is almost all of. */
export type HeadInputs = Omit<BuildInputs, 'files'>;

/** A history entry without its files: what the header of its record holds. */
export interface HistoryHead {
  key: string;
  inputs?: HeadInputs;
  builtAt: number;
}

/** Raised when the file's lines change meaning; a file of another format is read as no history. */
const FORMAT = 2;
const EXT = '.jsonl';
/** The previous format: the whole entry as one JSON text (see getPrevious). */
const PREVIOUS_EXT = '.json';
/** A record being written: renamed to its record's name once whole. */
const TMP = '.tmp';
/** A previous-format file up to this size is parsed in one step (a few ms); a larger one only in part. */
const PREVIOUS_PARSE_MAX = 256 * 1024;
/**
 * Longer lines are not read (the file is not a record): a header holds at most a request's build args
 * (16 MiB on the wire) and what the Dockerfile names (1 MiB expanded), a file's line a path.
 */
const MAX_LINE = 32 << 20;
/** Records whose age prune asks for at once. */
const PRUNE_STATS = 16;
/** About as many bytes are read, or characters written, in one step. */
const CHUNK = 64 * 1024;

type Header = {
  format: number;
  key: string;
  builtAt: number;
  files: number;
  inputs?: HeadInputs;
};

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

export class SourceHistory {
  private readonly dir: string;
  private readonly logger: Logger;
  private readonly max: number;
  private writes = 0;
  /** The write under way per source: a source's writes go one after another through its one temp file. */
  private readonly writing = new Map<string, Promise<void>>();
  /** The removal of temp files a process that ended mid-write left; every write of this one waits for it. */
  private swept: Promise<void> | undefined;

  constructor(dir: string, logger: Logger, maxSources = 2000) {
    this.dir = dir;
    this.logger = logger;
    this.max = maxSources;
  }

  private path(source: string, ext = EXT): string {
    return join(this.dir, `${createHash('sha256').update(source).digest('hex')}${ext}`);
  }

  /** The last build of `source`; `signal` ends the read between two chunks (Aborted). */
  get(source: string, signal?: AbortSignal): Promise<HistoryEntry | undefined> {
    return this.load(
      source,
      signal,
      async (path) => {
        const files: FileId[] = [];
        const { key, builtAt, inputs } = await read(path, signal, files);
        return { key, builtAt, ...(inputs && { inputs: { ...inputs, files } }) };
      },
      (entry) => entry,
    );
  }

  /**
   * The last build of `source` without its files: only the record's first line is read, so a caller that
   * needs no file comparison (the key is the same, or there are no inputs) holds and parses none of them.
   */
  head(source: string, signal?: AbortSignal): Promise<HistoryHead | undefined> {
    return this.load(
      source,
      signal,
      async (path) => {
        const { key, builtAt, inputs } = await read(path, signal);
        return { key, builtAt, ...(inputs && { inputs }) };
      },
      ({ key, builtAt, inputs }) => ({ key, builtAt, ...(inputs && { inputs: withoutFiles(inputs) }) }),
    );
  }

  /** A record read by `fromRecord`, else the previous format's, as `fromPrevious` makes it. */
  private async load<T>(
    source: string,
    signal: AbortSignal | undefined,
    fromRecord: (path: string) => Promise<T>,
    fromPrevious: (entry: HistoryEntry) => T,
  ): Promise<T | undefined> {
    const path = this.path(source);
    try {
      return await fromRecord(path);
    } catch (err) {
      if (signal?.aborted) throw err;
      if (!isENOENT(err)) {
        this.logger.warn(
          { path, err: messageOf(err) },
          'cannot read the last build’s inputs; treated as none',
        );
        return undefined;
      }
    }
    const previous = await this.getPrevious(this.path(source, PREVIOUS_EXT));
    return previous && fromPrevious(previous);
  }

  /**
   * Records `entry` as the last build of `source`, replacing the one before once it is whole. `signal`
   * ends the write between two chunks (Aborted), leaving the previous record.
   */
  async put(source: string, entry: HistoryEntry, signal?: AbortSignal): Promise<void> {
    const before = this.writing.get(source);
    const mine = (before ?? Promise.resolve())
      .catch(() => undefined)
      .then(() => this.write(source, entry, signal));
    this.writing.set(source, mine);
    try {
      await mine;
    } finally {
      if (this.writing.get(source) === mine) this.writing.delete(source);
    }
    if (++this.writes % 100 === 0) await this.prune();
  }

  private async write(source: string, entry: HistoryEntry, signal: AbortSignal | undefined): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    this.swept ??= this.sweep();
    await this.swept;
    const path = this.path(source);
    try {
      await writeFile(`${path}${TMP}`, lines(entry, signal));
      await rename(`${path}${TMP}`, path);
    } catch (err) {
      await rm(`${path}${TMP}`, { force: true });
      throw err;
    }
    await rm(this.path(source, PREVIOUS_EXT), { force: true });
  }

  /**
   * A record in the previous format. A small one is parsed whole. A large one would hold the event loop as
   * the old reads did, so only its key and time are taken (from its ends, where that format wrote them):
   * the reason then says the inputs differ without listing files, once, until the next build rewrites it.
   */
  private async getPrevious(path: string): Promise<HistoryEntry | undefined> {
    try {
      const { size } = await stat(path);
      if (size <= PREVIOUS_PARSE_MAX) return previousEntry(JSON.parse(await readFile(path, 'utf8')));
      const ends = await readEnds(path, size);
      this.logger.info(
        { path, bytes: size },
        'last build’s inputs in the previous format, too large to compare file by file: using its key alone',
      );
      return ends;
    } catch (err) {
      if (isENOENT(err)) return undefined;
      this.logger.warn({ path, err: messageOf(err) }, 'cannot read the last build’s inputs; treated as none');
      return undefined;
    }
  }

  /**
   * Removes the temp files of writes cut by the end of their process (a crash, a kill): nothing else
   * removes them, and a large record's is tens of MB. Run before this process writes any, and a state
   * directory has one builder (its start removes the work of the one before), so none is being written.
   */
  private async sweep(): Promise<void> {
    try {
      for (const name of await readdir(this.dir)) {
        if (name.endsWith(TMP)) await rm(join(this.dir, name), { force: true });
      }
    } catch (err) {
      this.logger.warn({ dir: this.dir, err: messageOf(err) }, 'cannot remove unfinished build records');
    }
  }

  private async prune(): Promise<void> {
    const names = (await readdir(this.dir)).filter((n) => n.endsWith(EXT) || n.endsWith(PREVIOUS_EXT));
    if (names.length <= this.max) return;
    // A few at a time: the rest of the builder's file operations would wait behind thousands at once.
    const aged: Array<{ n: string; t: number }> = [];
    for (let i = 0; i < names.length; i += PRUNE_STATS) {
      const group = names.slice(i, i + PRUNE_STATS);
      const times = await Promise.all(
        group.map((n) =>
          stat(join(this.dir, n)).then(
            (s) => s.mtimeMs,
            // Removed meanwhile (a write of its source replacing a previous-format record): one less.
            (err: unknown) => {
              if (isENOENT(err)) return undefined;
              throw err;
            },
          ),
        ),
      );
      group.forEach((n, j) => {
        const t = times[j];
        if (t !== undefined) aged.push({ n, t });
      });
    }
    aged.sort((a, b) => a.t - b.t);
    const over = Math.max(0, aged.length - this.max);
    for (const { n } of aged.slice(0, over)) await rm(join(this.dir, n), { force: true });
  }
}

const WRITING = 'recording the build’s inputs';
const READING = 'reading the last build’s inputs';

/** `entry` as the lines of a history file, in chunks of about CHUNK characters. */
async function* lines(entry: HistoryEntry, signal: AbortSignal | undefined): AsyncGenerator<string> {
  const files = entry.inputs?.files ?? [];
  const header: Header = { format: FORMAT, key: entry.key, builtAt: entry.builtAt, files: files.length };
  if (entry.inputs) header.inputs = withoutFiles(entry.inputs);
  let chunk = `${JSON.stringify(header)}\n`;
  for (const pair of files) {
    if (chunk.length >= CHUNK) {
      yield chunk;
      if (signal?.aborted) throw aborted(`${WRITING}: cancelled`, { cause: signal.reason });
      chunk = '';
    }
    chunk += `${JSON.stringify(pair)}\n`;
  }
  yield chunk;
}

function withoutFiles(inputs: BuildInputs): HeadInputs {
  const { files: _notHere, ...rest } = inputs;
  return rest;
}

/**
 * A history file's header, a chunk of lines a step; with `files`, its files are read into it, else the
 * read ends with the header's line.
 */
async function read(path: string, signal: AbortSignal | undefined, files?: FileId[]): Promise<Header> {
  let header: Header | undefined;
  let partial = '';
  for await (const chunk of createReadStream(path, { encoding: 'utf8', highWaterMark: CHUNK })) {
    const text = chunk as string;
    const end = text.lastIndexOf('\n');
    if (end < 0) {
      // Split only where a line ends: splitting the whole unfinished line again at every chunk made a
      // file without newlines (zeros, as a crash can leave) cost time in its size squared.
      partial += text;
      if (partial.length > MAX_LINE) throw new Error('a line longer than any record has');
    } else {
      const lines = (partial + text.slice(0, end)).split('\n');
      partial = text.slice(end + 1);
      for (const line of lines) {
        if (header === undefined) {
          header = parseHeader(line);
          // Leaving the loop closes the file.
          if (files === undefined) return header;
        } else files?.push(parseFile(line, files.at(-1)));
      }
    }
    if (signal?.aborted) throw aborted(`${READING}: cancelled`, { cause: signal.reason });
  }
  if (header === undefined || partial !== '' || files?.length !== header.files) throw new Error('cut short');
  return header;
}

function parseHeader(line: string): Header {
  const v: unknown = JSON.parse(line);
  if (!isObject(v) || v.format !== FORMAT) throw new Error(`not format ${FORMAT}`);
  const { key, builtAt, files, inputs } = v;
  if (typeof key !== 'string' || typeof builtAt !== 'number' || typeof files !== 'number') {
    throw new Error('header incomplete');
  }
  if (inputs !== undefined && !isObject(inputs)) throw new Error('inputs not an object');
  return {
    format: FORMAT,
    key,
    builtAt,
    files,
    ...(inputs && { inputs: inputs as HeadInputs }),
  };
}

/** One file's line, which must come after `last` in the record's order (describeChanges merges by it). */
function parseFile(line: string, last: FileId | undefined): FileId {
  const v: unknown = JSON.parse(line);
  if (!Array.isArray(v) || v.length !== 2 || typeof v[0] !== 'string' || typeof v[1] !== 'string') {
    throw new Error('a file line is not [path, id]');
  }
  if (last !== undefined && !(last[0] < v[0])) throw new Error('files out of order');
  return [v[0], v[1]];
}

/** A previous-format entry parsed whole: its files record becomes FileIds. */
function previousEntry(v: unknown): HistoryEntry {
  if (!isObject(v) || typeof v.key !== 'string' || typeof v.builtAt !== 'number') {
    throw new Error('not a history entry');
  }
  const { key, builtAt, inputs } = v;
  if (inputs === undefined) return { key, builtAt };
  if (!isObject(inputs) || !isObject(inputs.files)) throw new Error('inputs without files');
  const files = fileIdsOf(inputs.files as Record<string, string>);
  return { key, builtAt, inputs: { ...(inputs as unknown as BuildInputs), files } };
}

/**
 * The key and time of a large previous-format entry, which was written as `{"key":…,…,"builtAt":…}` (the
 * builder's put named them in that order).
 */
async function readEnds(path: string, size: number): Promise<HistoryEntry> {
  const file = await open(path);
  try {
    const head = Buffer.alloc(4096);
    const tail = Buffer.alloc(64);
    const { bytesRead: headBytes } = await file.read(head, 0, head.length, 0);
    const { bytesRead: tailBytes } = await file.read(tail, 0, tail.length, size - tail.length);
    const key = /^\{"key":("(?:[^"\\]|\\.)*")/.exec(head.toString('utf8', 0, headBytes))?.[1];
    const builtAt = /,"builtAt":(\d+)\}$/.exec(tail.toString('utf8', 0, tailBytes))?.[1];
    if (key === undefined || builtAt === undefined) throw new Error('key or time not where written');
    return { key: JSON.parse(key) as string, builtAt: Number(builtAt) };
  } finally {
    await file.close();
  }
}
