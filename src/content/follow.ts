// Following an ingest while it is written: a reader that joins a fill in progress gets the bytes as they
// land on disk, from any offset, without waiting for the commit and without a second fetch. The last byte
// of the blob is only handed out once the commit has verified the whole blob, so a reader of wrong bytes
// fails before it can complete; a restarted or failed ingest fails its readers with the writer's reason.
import type { FileHandle } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { aborted, dataLoss } from '../errors.ts';
import { isENOENT } from './fs-util.ts';

/** Reads of a growing file in pieces this big; up to FOLLOW_BUFFER bytes wait ahead of a slow consumer. */
const READ_CHUNK = 256 * 1024;
const FOLLOW_BUFFER = 1024 * 1024;

/** The progress of one live ingest, as its writer reports it. */
export class Growth {
  readonly ref: string;
  readonly dataPath: string;
  /** Bytes on disk. */
  written = 0;
  /** Bumped when the ingest is cut back: bytes already handed out may no longer be there. */
  restarts = 0;
  /** The blob's file once committed. */
  committed: string | undefined;
  failure: Error | undefined;
  private waiters: (() => void)[] = [];

  constructor(ref: string, dataPath: string, written: number) {
    this.ref = ref;
    this.dataPath = dataPath;
    this.written = written;
  }

  get ended(): boolean {
    return this.committed !== undefined || this.failure !== undefined;
  }

  advance(written: number): void {
    this.written = written;
    this.wake();
  }

  restart(written: number): void {
    this.restarts++;
    this.written = written;
    this.wake();
  }

  commit(blobPath: string): void {
    this.committed = blobPath;
    this.wake();
  }

  fail(err: Error): void {
    if (this.ended) return;
    this.failure = err;
    this.wake();
  }

  /** Resolves at the next change; rejects when `signal` aborts first. */
  changed(signal: AbortSignal | undefined): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(aborted('reader went away'));
        return;
      }
      const onAbort = () => reject(aborted('reader went away'));
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      });
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}

/**
 * A stream of bytes [start, end) of the blob of `size` bytes that `g` is writing, as they arrive. It fails
 * when the ingest fails or restarts, and never ends short.
 */
export function followGrowth(
  g: Growth,
  size: number,
  start: number,
  end: number,
  signal?: AbortSignal,
): Readable {
  return Readable.from(follow(g, size, start, end, signal), {
    objectMode: false,
    highWaterMark: FOLLOW_BUFFER,
  });
}

async function* follow(
  g: Growth,
  size: number,
  start: number,
  end: number,
  signal: AbortSignal | undefined,
): AsyncGenerator<Buffer> {
  const restarts = g.restarts;
  let fh: FileHandle | undefined;
  try {
    let pos = start;
    while (pos < end) {
      if (g.restarts !== restarts) throw aborted(`ingest ${g.ref} was restarted while being read`);
      if (g.committed === undefined && g.failure) throw g.failure;
      // Of a blob not yet verified, everything but the last byte.
      const avail = g.committed !== undefined ? g.written : Math.min(g.written, size - 1);
      if (avail <= pos) {
        await g.changed(signal);
        continue;
      }
      fh ??= await openGrowing(g);
      if (fh === undefined) {
        await g.changed(signal);
        continue;
      }
      const len = Math.min(READ_CHUNK, Math.min(avail, end) - pos);
      const buf = Buffer.allocUnsafe(len);
      const { bytesRead } = await fh.read(buf, 0, len, pos);
      if (bytesRead === 0) throw dataLoss(`ingest ${g.ref}: file shorter than the ${avail} bytes written`);
      pos += bytesRead;
      yield bytesRead === len ? buf : buf.subarray(0, bytesRead);
    }
  } finally {
    await fh?.close().catch(() => {});
  }
}

/**
 * The ingest's data file, or the blob's once committed. Undefined while a commit is moving the file (the
 * caller waits for the next change); the writer's failure once it failed.
 */
async function openGrowing(g: Growth): Promise<FileHandle | undefined> {
  const committed = g.committed;
  try {
    return await open(committed ?? g.dataPath, 'r');
  } catch (err) {
    if (!isENOENT(err)) throw err;
  }
  if (g.committed !== undefined && committed === undefined) return openGrowing(g);
  if (g.failure) throw g.failure;
  if (committed !== undefined) throw dataLoss(`ingest ${g.ref}: committed blob is gone`);
  return undefined;
}
