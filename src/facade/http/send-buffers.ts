// The buffers file downloads are sent from (see pumpFile): two per download, 1 MiB each while few
// downloads run, smaller as more run at once, so that all of them together hold about `budget` bytes.
// With 200 clients each fetching a layer, 1 MiB buffers alone took the process past 300 MiB; a big single
// download still gets the large buffers that make it fast.
//
// A finished download's buffers go back to a small pool for the next downloads: each fresh 1 MiB buffer
// is memory outside V8's heap that V8 counts towards its next full collection, and fresh buffers for
// every download made each skopeo pull of a 226 MiB image pay a mark-compact (~20-50 ms of the server's
// CPU, paused writes included). The pool empties once downloads have stopped for a while, so an idle
// server does not keep it.
import type { PositionalReader } from '../../content/follow.ts';
import { dataLoss } from '../../errors.ts';

export const SEND_BUFFER_MAX = 1024 * 1024;
export const SEND_BUFFER_MIN = 64 * 1024;
/** How long spare buffers outlive the last download. */
const SPARE_IDLE_MS = 10_000;

/** One download's share of the send buffers. */
export interface SendLease {
  /** The size of this download's buffers. */
  chunk: number;
  /**
   * A buffer of `min(bytes, chunk)` bytes for this download alone until leave(): a spare one when that
   * is a whole chunk, else a new one (a small blob or range does not hold a whole chunk).
   */
  take(bytes: number): Buffer;
  /**
   * The download ended. With `reuse` its buffers go back to the pool: only when no write can still hold
   * one (every write it started has completed). Leaving twice counts once.
   */
  leave(reuse?: boolean): void;
}

export class SendBuffers {
  private readonly budget: number;
  private readonly spareLimit: number;
  private active = 0;
  /** Buffers of finished downloads by size, at most `spareLimit` bytes in all. */
  private readonly spare = new Map<number, Buffer[]>();
  private spareBytes = 0;
  private idleTimer: NodeJS.Timeout | undefined;

  /**
   * `budget`: bytes of send buffers over all downloads at once (default 64 MiB); `spare`: bytes of
   * finished downloads' buffers kept for the next ones (default 8 MiB, four downloads at full size; they
   * count towards the server's resident memory).
   */
  constructor(budget = 64 * 1024 * 1024, spare = 8 * 1024 * 1024) {
    this.budget = budget;
    this.spareLimit = spare;
  }

  /** A download starts: the buffer size it should use, its buffers, and what to call when it ends. */
  enter(): SendLease {
    this.active++;
    const share = Math.floor(this.budget / (2 * this.active) / SEND_BUFFER_MIN) * SEND_BUFFER_MIN;
    const chunk = Math.min(SEND_BUFFER_MAX, Math.max(SEND_BUFFER_MIN, share));
    const taken: Buffer[] = [];
    let left = false;
    return {
      chunk,
      take: (bytes) => {
        if (bytes < chunk) return Buffer.allocUnsafeSlow(bytes);
        let buf = this.spare.get(chunk)?.pop();
        if (buf) this.spareBytes -= buf.length;
        else buf = Buffer.allocUnsafeSlow(chunk);
        taken.push(buf);
        return buf;
      },
      leave: (reuse = false) => {
        if (left) return;
        left = true;
        this.active--;
        if (reuse) for (const buf of taken) this.giveBack(buf);
        if (this.active === 0) this.startIdleTimer();
      },
    };
  }

  get downloads(): number {
    return this.active;
  }

  /** Bytes held in spare buffers. */
  get spareSize(): number {
    return this.spareBytes;
  }

  private giveBack(buf: Buffer): void {
    if (this.spareBytes + buf.length > this.spareLimit) return;
    const list = this.spare.get(buf.length);
    if (list) list.push(buf);
    else this.spare.set(buf.length, [buf]);
    this.spareBytes += buf.length;
  }

  private startIdleTimer(): void {
    if (this.idleTimer) {
      this.idleTimer.refresh();
      return;
    }
    this.idleTimer = setTimeout(() => {
      if (this.active === 0) this.dropSpare();
    }, SPARE_IDLE_MS);
    this.idleTimer.unref();
  }

  /** Lets the spare buffers go (an idle server does not keep them). */
  dropSpare(): void {
    this.spare.clear();
    this.spareBytes = 0;
  }
}

/**
 * Sends bytes [start, end) of an open file (or a growing one) through `write` (which resolves once the
 * socket has taken its chunk; the buffer is then free again), in the lease's buffers, with the next read
 * running while a write is in flight. A file shorter than the range is DataLoss. `name` stands for the
 * file in messages.
 */
export async function pumpFile(
  fh: PositionalReader,
  name: string,
  range: { start: number; end: number },
  lease: SendLease,
  write: (chunk: Buffer) => Promise<void>,
): Promise<void> {
  const buffers: Buffer[] = [];
  let writing: Promise<void> = Promise.resolve();
  for (let pos = range.start, i = 0; pos < range.end; i ^= 1) {
    // The buffer read into now was last written two rounds ago, and that write was awaited.
    buffers[i] ??= lease.take(range.end - pos);
    const buf = buffers[i]!;
    let bytesRead: number;
    try {
      ({ bytesRead } = await fh.read(buf, 0, Math.min(buf.length, range.end - pos), pos));
    } catch (err) {
      // What was read before goes out first (a growing file fails when its fill does).
      await writing.catch(() => {});
      throw err;
    }
    if (bytesRead === 0)
      throw dataLoss(`${name}: file ends at ${pos}, before byte ${range.end} of the range`);
    pos += bytesRead;
    await writing;
    writing = write(bytesRead === buf.length ? buf : buf.subarray(0, bytesRead));
    // Awaited next round; until then a failed write must not count as unhandled.
    writing.catch(() => {});
  }
  await writing;
}
