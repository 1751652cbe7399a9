// Deterministic test content of any size, addressable at any offset, so a crashed writer and the test
// that resumes it agree on every byte without passing the bytes around.
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { type Digest, Digester } from '../../src/oci/digest.ts';

export const CHUNK = 64 * 1024;

/** The `index`-th 64 KiB chunk of the blob named `seed`. */
export function chunkOf(seed: string, index: number): Buffer {
  const block = createHash('sha256').update(`${seed}:${index}`).digest();
  const out = Buffer.allocUnsafe(CHUNK);
  for (let i = 0; i < CHUNK; i += block.length) block.copy(out, i);
  return out;
}

/** Bytes [offset, offset+length) of the blob named `seed`. */
export function bytesAt(seed: string, offset: number, length: number): Buffer {
  const parts: Buffer[] = [];
  let pos = offset;
  const end = offset + length;
  while (pos < end) {
    const index = Math.floor(pos / CHUNK);
    const within = pos - index * CHUNK;
    const take = Math.min(CHUNK - within, end - pos);
    parts.push(chunkOf(seed, index).subarray(within, within + take));
    pos += take;
  }
  return Buffer.concat(parts);
}

/** The blob from `from` to `size`, in pieces of at most one chunk. */
export function streamFrom(seed: string, size: number, from = 0): Readable {
  let pos = from;
  return new Readable({
    read() {
      if (pos >= size) {
        this.push(null);
        return;
      }
      const n = Math.min(CHUNK - (pos % CHUNK), size - pos);
      this.push(bytesAt(seed, pos, n));
      pos += n;
    },
  });
}

export function digestOfBlob(seed: string, size: number): Digest {
  const d = new Digester();
  for (let pos = 0; pos < size; pos += CHUNK) d.update(bytesAt(seed, pos, Math.min(CHUNK, size - pos)));
  return d.digest();
}
