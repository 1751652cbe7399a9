// A byte range of a file on this machine (a committed blob, a static layer), as a Readable for any
// consumer. The facade's HTTP server sends it its own way instead (open(), then reads into buffers it
// reuses across downloads; see facade/http/send-buffers.ts).
import { type FileHandle, open } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { dataLoss } from '../errors.ts';

export const FILE_CHUNK = 1024 * 1024;

export class FileRange extends Readable {
  /** The file's path, or a name for it in messages when the caller opened it. */
  readonly path: string;
  /** Half-open byte range [start, end) of the file. */
  readonly start: number;
  readonly end: number;
  /** Whether the range is the whole file (its size was given and the range covers it). */
  readonly whole: boolean;
  private readonly chunk: number;
  private opening: Promise<FileHandle> | undefined;
  /** For a handle the caller shares: given back instead of closed. */
  private readonly release: (() => void) | undefined;
  private pos: number;

  /**
   * `file` is a path, opened on first use, or a handle the caller opened (`name` then stands for it in
   * messages); the stream closes it when done, or calls `release` instead for a shared handle. An aborted
   * `signal` destroys the stream.
   */
  constructor(
    file: string | { fh: FileHandle; name: string; release?: () => void },
    start: number,
    end: number,
    options: { chunk?: number; signal?: AbortSignal | undefined; size?: number } | number = {},
  ) {
    const o = typeof options === 'number' ? { chunk: options } : options;
    const { chunk = FILE_CHUNK, signal } = o;
    super({ highWaterMark: chunk, ...(signal ? { signal } : {}) });
    if (typeof file === 'string') this.path = file;
    else {
      this.path = file.name;
      this.opening = Promise.resolve(file.fh);
      this.release = file.release;
    }
    this.start = start;
    this.end = end;
    this.whole = start === 0 && o.size !== undefined && end >= o.size;
    this.pos = start;
    this.chunk = chunk;
  }

  /** Opens the file (once); a caller that must answer before sending anything awaits this first. */
  open(): Promise<FileHandle> {
    this.opening ??= open(this.path, 'r');
    return this.opening;
  }

  override _read(): void {
    const len = Math.min(this.chunk, this.end - this.pos);
    if (len <= 0) {
      this.push(null);
      return;
    }
    this.readChunk(Buffer.allocUnsafe(len)).then(
      (buf) => {
        this.push(buf);
        if (this.pos >= this.end) this.push(null);
      },
      (err: Error) => this.destroy(err),
    );
  }

  private async readChunk(buf: Buffer): Promise<Buffer> {
    const fh = await this.open();
    const len = Math.min(buf.length, this.end - this.pos);
    const { bytesRead } = await fh.read(buf, 0, len, this.pos);
    if (bytesRead === 0) {
      throw dataLoss(`${this.path}: file ends at ${this.pos}, before byte ${this.end} of the range`);
    }
    this.pos += bytesRead;
    return bytesRead === buf.length ? buf : buf.subarray(0, bytesRead);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    const opening = this.opening;
    if (this.release) {
      this.release();
      cb(err);
      return;
    }
    if (!opening) {
      cb(err);
      return;
    }
    opening
      .then((fh) => fh.close())
      .catch(() => {})
      .then(() => cb(err));
  }
}
