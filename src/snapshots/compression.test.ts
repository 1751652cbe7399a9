import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, test } from 'node:test';
import { gzipSync, zstdCompressSync } from 'node:zlib';
import { dataLoss, isDataLoss, isInvalidArgument } from '../errors.ts';
import { MediaType } from '../oci/media-types.ts';
import {
  compressionOf,
  compressStream,
  decompressFile,
  decompressStream,
  sniffCompression,
} from './compression.ts';

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

  describe('decompressFile', () => {
    let dir: string;
    // Bigger than the reused read buffers together (3 x 1 MiB), so every buffer is refilled.
    const big = Buffer.concat([randomBytes(3 << 20), Buffer.alloc(2 << 20, 7), randomBytes(1234)]);

    async function fromFile(bytes: Buffer, arg?: string): Promise<Buffer> {
      const path = join(dir, `f-${randomBytes(4).toString('hex')}`);
      await writeFile(path, bytes);
      const fh = await open(path, 'r');
      try {
        return await buffer(decompressFile(fh, arg));
      } finally {
        await fh.close();
      }
    }

    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'strata-decompress-file-'));
    });
    after(() => rm(dir, { recursive: true, force: true }));

    test('decodes gzip and zstd files larger than its buffers, declared or sniffed', async () => {
      for (const [packed, kind] of [
        [gzipSync(big), 'gzip'],
        [zstdCompressSync(big), 'zstd'],
      ] as const) {
        assert.ok((await fromFile(packed)).equals(big), kind);
        assert.ok((await fromFile(packed, kind)).equals(big), kind);
      }
    });

    test('passes plain files on, each piece in a buffer of its own', async () => {
      const path = join(dir, 'plain');
      await writeFile(path, big);
      const fh = await open(path, 'r');
      const pieces: Buffer[] = [];
      try {
        for await (const piece of decompressFile(fh, 'auto')) pieces.push(piece as Buffer);
      } finally {
        await fh.close();
      }
      // Kept pieces must not be overwritten by later reads (a tar parser holds on to them).
      assert.ok(Buffer.concat(pieces).equals(big));
      assert.equal(new Set(pieces.map((p) => p.buffer)).size, pieces.length);
      assert.equal((await fromFile(Buffer.alloc(0))).length, 0);
      assert.ok((await fromFile(Buffer.from('ab'))).equals(Buffer.from('ab')));
    });

    test('corrupt, truncated or mislabelled files are InvalidArgument', async () => {
      const gz = gzipSync(big);
      await assert.rejects(fromFile(gz.subarray(0, gz.length - 50)), isInvalidArgument);
      const bad = Buffer.from(gz);
      bad.fill(0x55, 2 << 20, (2 << 20) + 64);
      await assert.rejects(fromFile(bad), isInvalidArgument);
      await assert.rejects(fromFile(big, 'gzip'), isInvalidArgument);
      const z = zstdCompressSync(big);
      await assert.rejects(fromFile(z.subarray(0, z.length - 50)), isInvalidArgument);
    });

    test('a consumer that stops early leaves nothing running on the file', async () => {
      const path = join(dir, 'early');
      await writeFile(path, gzipSync(big));
      const fh = await open(path, 'r');
      const stream = decompressFile(fh);
      for await (const _ of stream) break;
      assert.ok(stream.destroyed);
      // Closing waits for reads in flight; it must neither hang nor fail.
      await fh.close();
    });
  });
});
