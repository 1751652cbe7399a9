// Appending a stream to an ingest in big writes: chunks gather while the previous write lands, so the
// network keeps flowing while the disk works and a 64 KiB socket read is not one write (and one trip
// through the thread pool) each. A chunk that arrives while no write is in flight is written at once: a
// slow source's bytes reach the readers following the ingest as they come, not a batch later.
import type { Readable } from 'node:stream';

/** Bytes gathered before one disk write. */
const WRITE_BATCH_BYTES = 1 << 20;

/** What takes the batches: an ingest writer (in order, one call at a time). */
export interface ChunkSink {
  write(chunks: readonly Uint8Array[]): Promise<void>;
}

/**
 * Appends `stream` to `sink` with at most one write in flight; memory stays under two batches. `check`
 * sees every chunk before it is batched; when it throws, that chunk and the batch it was gathering are
 * dropped and the error is thrown once the write in flight is done. When the stream fails, what did
 * arrive is written first (so a later attempt resumes after it).
 */
export async function appendStream(
  sink: ChunkSink,
  stream: Readable,
  check?: (chunk: Uint8Array) => void,
): Promise<void> {
  let inFlight: Promise<void> = Promise.resolve();
  let busy = false;
  let batch: Uint8Array[] = [];
  let batched = 0;
  const flush = async (): Promise<void> => {
    await inFlight;
    if (batched === 0) return;
    const data = batch;
    batch = [];
    batched = 0;
    inFlight = sink.write(data);
    busy = true;
    // Awaited at the next flush; this also keeps a failure from counting as unhandled meanwhile.
    const idle = () => {
      busy = false;
    };
    inFlight.then(idle, idle);
  };
  try {
    for await (const chunk of stream as AsyncIterable<Uint8Array | string>) {
      const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      if (check) {
        try {
          check(bytes);
        } catch (err) {
          batch = [];
          batched = 0;
          throw err;
        }
      }
      batch.push(bytes);
      batched += bytes.byteLength;
      if (batched >= WRITE_BATCH_BYTES || !busy) await flush();
    }
  } catch (err) {
    // Keep what did arrive (nothing of a batch `check` refused), so the next attempt resumes after it.
    await flush().catch(() => {});
    await inFlight.catch(() => {});
    throw err;
  }
  await flush();
  await inFlight;
}
