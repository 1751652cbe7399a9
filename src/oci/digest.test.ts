import assert from 'node:assert/strict';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { isDataLoss, isInvalidArgument } from '../errors.ts';
import {
  algorithmOf,
  type Digest,
  Digester,
  digestOf,
  encodedOf,
  isDigest,
  parseDigest,
  VerifyingStream,
} from './digest.ts';

// Published test vectors (FIPS 180-2 "abc" and the empty string).
const SHA256_EMPTY = 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
const SHA256_ABC = 'sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad';
const SHA512_ABC =
  'sha512:ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f';

describe('parseDigest', () => {
  const good = [
    SHA256_EMPTY,
    SHA256_ABC,
    SHA512_ABC,
    `sha256:${'0'.repeat(64)}`,
    `sha512:${'f'.repeat(128)}`,
    `sha384:${'a'.repeat(96)}`,
  ];
  for (const d of good) test(`accepts ${d.slice(0, 20)}…`, () => assert.equal(parseDigest(d), d));

  const bad: [string, RegExp][] = [
    ['', /want algorithm:hex/],
    ['sha256', /want algorithm:hex/],
    ['sha256:', /want algorithm:hex/],
    [`:${'a'.repeat(64)}`, /want algorithm:hex/],
    [`sha256:${'a'.repeat(63)}`, /want 64 hex/],
    [`sha256:${'a'.repeat(65)}`, /want 64 hex/],
    [`sha256:${'a'.repeat(128)}`, /want 64 hex/],
    [`sha512:${'a'.repeat(64)}`, /want 128 hex/],
    [`sha512:${'a'.repeat(127)}`, /want 128 hex/],
    [`sha256:${'A'.repeat(64)}`, /want lowercase hex/],
    [`sha256:${'g'.repeat(64)}`, /want lowercase hex/],
    [`sha256:${'=_'.repeat(32)}`, /want lowercase hex/],
    [`SHA256:${'a'.repeat(64)}`, /want algorithm:hex/],
    [`sha384:${'a'.repeat(64)}`, /want 96 hex/],
    [`md5:${'a'.repeat(32)}`, /unsupported digest algorithm "md5"/],
    [`sha256+b64u:${'a'.repeat(43)}`, /unsupported digest algorithm/],
    [` sha256:${'a'.repeat(64)}`, /want algorithm:hex/],
    [`sha256:${'a'.repeat(64)} `, /want algorithm:hex/],
    [`sha256:${'a'.repeat(64)}\n`, /want algorithm:hex/],
    [`sha256:${'a'.repeat(32)}:${'a'.repeat(31)}`, /want algorithm:hex/],
    [`sha256 :${'a'.repeat(64)}`, /want algorithm:hex/],
  ];
  for (const [d, reason] of bad) {
    test(`rejects ${JSON.stringify(d.length > 30 ? `${d.slice(0, 30)}…` : d)}`, () => {
      assert.throws(
        () => parseDigest(d),
        (err: unknown) => isInvalidArgument(err) && reason.test((err as Error).message),
      );
      assert.equal(isDigest(d), false);
    });
  }

  test('property: accepted exactly when canonical sha256, sha384 or sha512', () => {
    const canonical = /^(?:sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})$/;
    const hexish = fc.stringMatching(/^[0-9a-fA-Fg]{0,130}$/);
    const arb = fc.oneof(
      fc
        .tuple(fc.constantFrom('sha256', 'sha512', 'sha384', 'SHA256', 'sha', ''), hexish)
        .map(([a, h]) => `${a}:${h}`),
      fc.stringMatching(/^sha(?:256|512):[0-9a-f]{64}(?:[0-9a-f]{64})?$/),
      fc.string(),
    );
    fc.assert(
      fc.property(arb, (s) => {
        assert.equal(isDigest(s), canonical.test(s), s);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('digest helpers', () => {
  test('digestOf matches the published vectors', () => {
    assert.equal(digestOf(''), SHA256_EMPTY);
    assert.equal(digestOf('abc'), SHA256_ABC);
    assert.equal(digestOf(new TextEncoder().encode('abc')), SHA256_ABC);
    assert.equal(digestOf('abc', 'sha512'), SHA512_ABC);
  });
  test('algorithmOf and encodedOf split a digest', () => {
    const d = parseDigest(SHA512_ABC);
    assert.equal(algorithmOf(d), 'sha512');
    assert.equal(encodedOf(d), SHA512_ABC.slice(7));
    assert.equal(algorithmOf(parseDigest(SHA256_ABC)), 'sha256');
  });
  test('Digester hashes incrementally, can be read midway and keeps going', () => {
    const g = new Digester();
    assert.equal(g.digest(), SHA256_EMPTY);
    g.update(new TextEncoder().encode('a'));
    assert.equal(g.digest(), digestOf('a'));
    g.update(new TextEncoder().encode('bc'));
    assert.equal(g.size, 3);
    assert.equal(g.digest(), SHA256_ABC);
    assert.equal(g.digest(), SHA256_ABC, 'reading the digest does not consume it');
    const s = new Digester('sha512');
    s.update(new TextEncoder().encode('abc'));
    assert.equal(s.digest(), SHA512_ABC);
  });
});

/** Pipes `chunks` through a VerifyingStream into a sink; returns what reached the sink, or the error. */
async function verify(
  chunks: Uint8Array[],
  expected: string,
  size?: number,
  seed?: Digester,
): Promise<{ received: number; error?: unknown }> {
  let received = 0;
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      received += chunk.byteLength;
      cb();
    },
  });
  try {
    await pipeline(Readable.from(chunks), new VerifyingStream(expected as Digest, size, seed), sink);
    return { received };
  } catch (error) {
    return { received, error };
  }
}

const bytes = (s: string) => new TextEncoder().encode(s);

describe('VerifyingStream', () => {
  test('passes correct content through unchanged', async () => {
    const out: Buffer[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        out.push(chunk);
        cb();
      },
    });
    const v = new VerifyingStream(parseDigest(SHA256_ABC), 3);
    await pipeline(Readable.from([bytes('a'), bytes('b'), bytes('c')]), v, sink);
    assert.equal(Buffer.concat(out).toString(), 'abc');
    assert.equal(v.bytes, 3);
  });

  test('verifies without a size, with sha512, and empty content', async () => {
    assert.equal((await verify([bytes('abc')], SHA256_ABC)).error, undefined);
    assert.equal((await verify([bytes('ab'), bytes('c')], SHA512_ABC, 3)).error, undefined);
    assert.equal((await verify([], SHA256_EMPTY, 0)).error, undefined);
  });

  test('a wrong digest fails with DataLoss, and the chunk that completes the size never passes', async () => {
    // A consumer counting bytes (an HTTP body with a Content-Length) never gets a whole wrong body.
    const r = await verify([bytes('ab'), bytes('d')], SHA256_ABC, 3);
    assert.ok(isDataLoss(r.error), String(r.error));
    assert.match((r.error as Error).message, /digest mismatch: expected sha256:ba78.*, got sha256:/);
    assert.equal(r.received, 2);
    // Without a size the end is known only at the end: the bytes have passed.
    const unsized = await verify([bytes('abd')], SHA256_ABC);
    assert.ok(isDataLoss(unsized.error));
    assert.equal(unsized.received, 3);
  });

  test('fails on short content at the end', async () => {
    const r = await verify([bytes('ab')], SHA256_ABC, 3);
    assert.ok(isDataLoss(r.error));
    assert.match((r.error as Error).message, /got 2 bytes, expected 3/);
  });

  test('fails on long content as soon as the size is exceeded, without passing the excess', async () => {
    const r = await verify([bytes('ab'), bytes('cd'), bytes('ef')], SHA256_ABC, 3);
    assert.ok(isDataLoss(r.error));
    assert.match((r.error as Error).message, /more than the expected 3 bytes/);
    assert.equal(r.received, 2);
  });

  test('long content without a size is a digest mismatch', async () => {
    const r = await verify([bytes('abcd')], SHA256_ABC);
    assert.ok(isDataLoss(r.error));
    assert.match((r.error as Error).message, /digest mismatch/);
  });

  test('resumes from a seed holding the bytes already seen', async () => {
    const seed = new Digester();
    seed.update(bytes('ab'));
    const ok = await verify([bytes('c')], SHA256_ABC, 3, seed);
    assert.equal(ok.error, undefined);
    assert.equal(ok.received, 1);

    const wrongSeed = new Digester();
    wrongSeed.update(bytes('xb'));
    const bad = await verify([bytes('c')], SHA256_ABC, 3, wrongSeed);
    assert.ok(isDataLoss(bad.error));

    const longSeed = new Digester();
    longSeed.update(bytes('ab'));
    const over = await verify([bytes('cd')], SHA256_ABC, 3, longSeed);
    assert.ok(isDataLoss(over.error));
    assert.match((over.error as Error).message, /more than the expected 3 bytes/);

    const shortSeed = new Digester();
    shortSeed.update(bytes('a'));
    const under = await verify([bytes('c')], SHA256_ABC, 3, shortSeed);
    assert.match((under.error as Error).message, /got 2 bytes, expected 3/);
  });

  test('refuses a seed of another algorithm', () => {
    assert.throws(
      () => new VerifyingStream(parseDigest(SHA256_ABC), 3, new Digester('sha512')),
      (err: unknown) => isInvalidArgument(err),
    );
  });

  test('property: any split of the right bytes passes; any changed byte fails', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ minLength: 1, maxLength: 512 }),
        fc.array(fc.nat(), { maxLength: 5 }),
        fc.nat(),
        async (data, cuts, flipAt) => {
          const points = [...new Set(cuts.map((c) => c % data.length))].sort((a, b) => a - b);
          const chunks: Uint8Array[] = [];
          let prev = 0;
          for (const p of [...points, data.length]) {
            chunks.push(data.slice(prev, p));
            prev = p;
          }
          const d = digestOf(data);
          assert.equal((await verify(chunks, d, data.length)).error, undefined);
          const changed = data.slice();
          changed[flipAt % data.length]! ^= 1;
          assert.ok(isDataLoss((await verify([changed], d, data.length)).error));
        },
      ),
      { numRuns: 100 },
    );
  });
});
