// Appending a stream to an ingest in big writes: chunks gather while the previous write lands, so the
// network keeps flowing while the disk works and a 64 KiB socket read is not one write (and one trip
// through the thread pool) each. A chunk that arrives while no write is in flight is written at once: a
// slow source's bytes reach the readers following the ingest as they come, not a batch later.
/**
 * Bytes gathered while a write is in flight before reading waits for it. More than one socket read's
 * worth by far: a write that stalls for a moment (a thread pool busy with syncs, a loaded disk) does not
 * stop the sender at once; the next write then takes all that gathered.
 */
const MAX_GATHERED_BYTES = 4 << 20;

/** What takes the batches: an ingest writer (in order, one call at a time). */
export interface ChunkSink {
  write(chunks: readonly Uint8Array[]): Promise<void>;
}

/**
 * Appends `stream` to `sink` with at most one write in flight; memory stays under twice
 * MAX_GATHERED_BYTES. `check` sees every chunk before it is batched; when it throws, that chunk and the
 * batch it was gathering are dropped and the error is thrown once the write in flight is done. When the
 * stream fails, what did arrive is written first (so a later attempt resumes after it). A failed write
 * is thrown, and nothing is written after it. Leaving early ends the iteration, which destroys a
 * Readable iterated as it is; a caller that still answers on the stream's connection (an HTTP request)
 * passes `readable.iterator({ destroyOnReturn: false })` and drains the rest itself.
 */
export async function appendStream(
  sink: ChunkSink,
  stream: AsyncIterable<Uint8Array | string>,
  check?: (chunk: Uint8Array) => void,
): Promise<void> {
  let inFlight: Promise<void> | undefined;
  let failure: { err: unknown } | undefined;
  let batch: Uint8Array[] = [];
  let batched = 0;
  const start = (): void => {
    const data = batch;
    batch = [];
    batched = 0;
    const done = (): void => {
      if (inFlight === write) inFlight = undefined;
    };
    const write: Promise<void> = sink.write(data).then(done, (err: unknown) => {
      failure ??= { err };
      done();
    });
    inFlight = write;
  };
  /** Waits for the write in flight; throws the first write failure. */
  const settle = async (): Promise<void> => {
    await inFlight;
    if (failure) throw failure.err;
  };
  try {
    for await (const chunk of stream) {
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
      if (failure) throw failure.err;
      batch.push(bytes);
      batched += bytes.byteLength;
      if (inFlight && batched >= MAX_GATHERED_BYTES) await settle();
      if (!inFlight) start();
    }
  } catch (err) {
    // Keep what did arrive (nothing of a batch `check` refused), so the next attempt resumes after it.
    await settle().catch(() => {});
    if (!failure && batched > 0) {
      start();
      await settle().catch(() => {});
    }
    throw err;
  }
  await settle();
  if (batched > 0) {
    start();
    await settle();
  }
}
