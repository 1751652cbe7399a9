// Cuts a byte stream into chunks of a fixed size (the last may be shorter), for chunked uploads. Only one
// chunk is held at a time, so memory stays bounded by the chunk size.
import type { Readable } from 'node:stream';

export async function* chunksOf(source: Readable | Uint8Array, size: number): AsyncGenerator<Buffer> {
  if (!(source instanceof Uint8Array)) {
    yield* fromStream(source, size);
    return;
  }
  const bytes = Buffer.from(source.buffer, source.byteOffset, source.byteLength);
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
}

async function* fromStream(stream: Readable, size: number): AsyncGenerator<Buffer> {
  let parts: Buffer[] = [];
  let held = 0;
  for await (const raw of stream) {
    let chunk = typeof raw === 'string' ? Buffer.from(raw) : (raw as Buffer);
    while (held + chunk.length >= size) {
      const take = size - held;
      parts.push(chunk.subarray(0, take));
      yield Buffer.concat(parts, size);
      parts = [];
      held = 0;
      chunk = chunk.subarray(take);
    }
    if (chunk.length > 0) {
      parts.push(chunk);
      held += chunk.length;
    }
  }
  if (held > 0) yield Buffer.concat(parts, held);
}
