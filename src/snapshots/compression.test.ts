import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { pipeline } from 'node:stream/promises';
import { describe, test } from 'node:test';
import { gzipSync, zstdCompressSync } from 'node:zlib';
import { dataLoss, isDataLoss, isInvalidArgument } from '../errors.ts';
import { MediaType } from '../oci/media-types.ts';
import { compressionOf, compressStream, decompressStream, sniffCompression } from './compression.ts';

const payload = randomBytes(100_000);

async function through(input: Buffer | Buffer[], arg?: string): Promise<Buffer> {
  const chunks = Array.isArray(input) ? input : [input];
  return buffer(Readable.from(chunks).pipe(decompressStream(arg)));
}

describe('compression', () => {
  test('sniffs gzip and zstd magic, anything else is a plain tar', () => {
    assert.equal(sniffCompression(gzipSync(payload)), 'gzip');
    assert.equal(sniffCompression(zstdCompressSync(payload)), 'zstd');
    assert.equal(sniffCompression(Buffer.from('ustar')), 'none');
    assert.equal(sniffCompression(Buffer.from([0x1f])), 'none');
    assert.equal(sniffCompression(Buffer.alloc(0)), 'none');
  });

  test('maps media types, and refuses ones that are not layers', () => {
    assert.equal(compressionOf(MediaType.ociLayerGzip), 'gzip');
    assert.equal(compressionOf(MediaType.dockerLayerZstd), 'zstd');
    assert.equal(compressionOf(`${MediaType.ociLayer}; x=y`), 'none');
    assert.equal(compressionOf('auto'), 'auto');
    assert.throws(() => compressionOf(MediaType.ociConfig), isInvalidArgument);
  });

  test('decompresses by sniffing, even when the magic arrives a byte at a time', async () => {
    for (const packed of [gzipSync(payload), zstdCompressSync(payload), payload]) {
      assert.ok((await through(packed)).equals(payload));
      const bytes = [...packed.subarray(0, 8)].map((b) => Buffer.from([b]));
      assert.ok((await through([...bytes, packed.subarray(8)])).equals(payload));
    }
    assert.equal((await through(Buffer.alloc(0))).length, 0);
    assert.ok((await through(Buffer.from('ab'))).equals(Buffer.from('ab')));
  });

  test('a declared compression is used as declared', async () => {
    assert.ok((await through(gzipSync(payload), MediaType.ociLayerGzip)).equals(payload));
    await assert.rejects(through(payload, 'gzip'), isInvalidArgument);
    // Declared "none": gzip bytes pass through untouched.
    const gz = gzipSync(payload);
    assert.ok((await through(gz, 'none')).equals(gz));
  });

  test('corrupt and truncated streams are InvalidArgument', async () => {
    const gz = gzipSync(payload);
    await assert.rejects(through(gz.subarray(0, gz.length - 50)), isInvalidArgument);
    const z = zstdCompressSync(payload);
    await assert.rejects(through(z.subarray(0, z.length - 50)), isInvalidArgument);
    const bad = Buffer.from(gz);
    bad.fill(0x55, 30, 60);
    await assert.rejects(through(bad), isInvalidArgument);
  });

  test("the source's own error passes through unchanged", async () => {
    const gz = gzipSync(payload);
    async function* failing() {
      yield gz.subarray(0, 1000);
      throw dataLoss('digest mismatch upstream');
    }
    await assert.rejects(
      pipeline(Readable.from(failing()), decompressStream(), async (src: AsyncIterable<Buffer>) => {
        for await (const _ of src);
      }),
      isDataLoss,
    );
  });

  test('compressStream round-trips through decompressStream', async () => {
    for (const c of ['gzip', 'zstd', 'none'] as const) {
      const packed = await buffer(Readable.from([payload]).pipe(compressStream(c, { level: 3 })));
      assert.equal(sniffCompression(packed), c);
      assert.ok((await through(packed)).equals(payload));
    }
  });
});
