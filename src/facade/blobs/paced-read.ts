// An uncached read of a source blob (the cache disk has no room, or it failed) that does not hold an
// upstream connection for as long as the client takes. The registry client keeps a few connections per
// registry (16); a response whose reader has stopped keeps its connection, so a handful of stalled
// clients would queue every other request to that registry behind them. Here the source's bytes are read
// ahead at the source's pace into a bounded buffer; once it is full the response is let go of (its
// connection is freed) and the rest is asked for again, from the next byte, once the client has drained
// half of it. A client that keeps up is served from one response; one that does not costs a request per
// half buffer, and a buffer's memory, never a connection held while it dawdles.
import { pipeline, Readable } from 'node:stream';
import { dataLoss } from '../../errors.ts';
import type { Blob } from '../../oci/blob.ts';
import { VerifyingStream } from '../../oci/digest.ts';

/** Bytes read ahead for one uncached reader before its source's response is let go of. */
export const READ_AHEAD_BYTES = 4 << 20;

/**
 * What all uncached readers may hold together. Past `max`, a reader lets go of its response as soon as it
 * holds anything and asks again only once its client has taken it all: memory stays near `max` (plus a
 * chunk per reader in flight) however many slow clients there are.
 */
export interface ReadAheadBudget {
  max: number;
  held: number;
}
export const READ_AHEAD_BUDGET: ReadAheadBudget = { max: 128 << 20, held: 0 };

/**
 * Bytes [offset, end) of `source`, read ahead as above. The first response is opened before this returns,
 * so a source that refuses the blob fails the call, not the stream. The whole blob is verified against its
 * digest as it goes (the stream fails at the end when it does not match).
 */
export async function pacedRead(
  source: Blob,
  offset: number,
  end: number,
  signal?: AbortSignal,
  limit = READ_AHEAD_BYTES,
  budget = READ_AHEAD_BUDGET,
): Promise<Readable> {
  const { digest, size } = source.descriptor;
  const first = offset < end ? await openAt(source, offset, end, signal) : undefined;
  const paced = new PacedRead(source, offset, end, limit, budget, signal, first);
  if (offset !== 0 || end !== size) return paced;
  return pipeline(paced, new VerifyingStream(digest, size), () => {});
}

function openAt(
  source: Blob,
  at: number,
  end: number,
  signal: AbortSignal | undefined,
  onRangeIgnored?: () => void,
): Promise<Readable> {
  return source.open({ range: { offset: at, length: end - at }, signal, verify: false, onRangeIgnored });
}

class PacedRead extends Readable {
  private readonly source: Blob;
  private readonly end: number;
  private readonly limit: number;
  private readonly budget: ReadAheadBudget;
  private readonly signal: AbortSignal | undefined;
  /** Bytes received and not yet handed on. */
  private readonly queue: Uint8Array[] = [];
  private queued = 0;
  /** The first byte not yet received. */
  private next: number;
  /** The source's response being read, if any. */
  private body: Readable | undefined;
  private opening = false;
  /** The consumer asked for more than was handed on. */
  private wanted = false;
  private finished = false;
  /**
   * The source answered a range with the whole blob: asking it again would fetch the whole prefix again
   * each time, so this reader holds on to its response and pauses it instead, as a plain pipe would.
   */
  private rangeIgnored = false;

  constructor(
    source: Blob,
    offset: number,
    end: number,
    limit: number,
    budget: ReadAheadBudget,
    signal: AbortSignal | undefined,
    first: Readable | undefined,
  ) {
    super();
    this.source = source;
    this.next = offset;
    this.end = end;
    this.limit = limit;
    this.budget = budget;
    this.signal = signal;
    if (first) this.follow(first);
  }

  override _read(): void {
    this.wanted = true;
    this.pump();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.budget.held -= this.queued;
    this.queued = 0;
    this.queue.length = 0;
    const body = this.body;
    this.body = undefined;
    body?.destroy();
    callback(err);
  }

  /** Hands on what the consumer wants, ends at the end, and asks the source again when half drained. */
  private pump(): void {
    while (this.wanted && this.queue.length > 0) {
      const chunk = this.queue.shift()!;
      this.queued -= chunk.byteLength;
      this.budget.held -= chunk.byteLength;
      this.wanted = this.push(chunk);
    }
    const paused = this.body?.isPaused();
    if (paused && this.queued <= this.limit / 2) this.body?.resume();
    if (this.destroyed || this.finished || this.body || this.opening) return;
    if (this.next >= this.end) {
      if (this.queue.length === 0) {
        this.finished = true;
        this.push(null);
      }
      return;
    }
    const spent = this.budget.held >= this.budget.max;
    if (this.queued <= this.limit / 2 && (!spent || this.queued === 0)) void this.reopen();
  }

  private async reopen(): Promise<void> {
    this.opening = true;
    let body: Readable;
    try {
      body = await openAt(this.source, this.next, this.end, this.signal, () => {
        this.rangeIgnored = true;
      });
    } catch (err) {
      this.destroy(err as Error);
      return;
    } finally {
      this.opening = false;
    }
    if (this.destroyed) body.destroy();
    else this.follow(body);
  }

  private follow(body: Readable): void {
    this.body = body;
    body.on('data', (chunk: Uint8Array) => {
      if (this.body !== body) return;
      this.queue.push(chunk);
      this.queued += chunk.byteLength;
      this.budget.held += chunk.byteLength;
      this.next += chunk.byteLength;
      const full = this.queued >= this.limit || this.budget.held >= this.budget.max;
      if (full && this.next < this.end) {
        if (this.rangeIgnored) {
          body.pause();
        } else {
          // Full: the connection goes back to the pool while the consumer catches up.
          this.body = undefined;
          body.destroy();
        }
      }
      this.pump();
    });
    body.on('end', () => {
      if (this.body !== body) return;
      this.body = undefined;
      if (this.next < this.end) {
        this.destroy(dataLoss(`blob ${this.source.descriptor.digest}: source ended at byte ${this.next}`));
      } else this.pump();
    });
    // Also after it was let go of (its destroy may report an abort): only the live response's error counts.
    body.on('error', (err) => {
      if (this.body === body) this.destroy(err);
    });
  }
}
