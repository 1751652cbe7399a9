// Content digests: `algorithm:encoded`, as the OCI image spec defines them. The algorithms go-digest (so
// containerd and distribution) knows are accepted, in their canonical lowercase hex form: the two the
// spec registers and sha384.
import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { dataLoss, invalidArgument } from '../errors.ts';

export type Algorithm = 'sha256' | 'sha384' | 'sha512';
/** A validated digest string such as `sha256:9f86d0…`. */
export type Digest = string & { readonly __digest: unique symbol };

const HEX_LENGTH: Record<Algorithm, number> = { sha256: 64, sha384: 96, sha512: 128 };
const DIGEST_RE = /^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/;

export function parseDigest(value: string): Digest {
  const m = DIGEST_RE.exec(value);
  if (!m) throw invalidArgument(`invalid digest ${JSON.stringify(value)}: want algorithm:hex`);
  const algorithm = m[1]!;
  const encoded = m[2]!;
  if (!isAlgorithm(algorithm)) {
    throw invalidArgument(
      `unsupported digest algorithm ${JSON.stringify(algorithm)} in ${JSON.stringify(value)}`,
    );
  }
  const want = HEX_LENGTH[algorithm];
  if (encoded.length !== want) {
    throw invalidArgument(
      `invalid ${algorithm} digest ${JSON.stringify(value)}: want ${want} hex characters`,
    );
  }
  if (!/^[0-9a-f]+$/.test(encoded)) {
    throw invalidArgument(`invalid ${algorithm} digest ${JSON.stringify(value)}: want lowercase hex`);
  }
  return value as Digest;
}

export function isAlgorithm(name: string): name is Algorithm {
  return Object.hasOwn(HEX_LENGTH, name);
}

export function isDigest(value: string): value is Digest {
  try {
    parseDigest(value);
    return true;
  } catch {
    return false;
  }
}

export function algorithmOf(d: Digest): Algorithm {
  return d.slice(0, d.indexOf(':')) as Algorithm;
}

export function encodedOf(d: Digest): string {
  return d.slice(d.indexOf(':') + 1);
}

export function digestOf(data: Uint8Array | string, algorithm: Algorithm = 'sha256'): Digest {
  return `${algorithm}:${createHash(algorithm).update(data).digest('hex')}` as Digest;
}

/** The digest of `data` by the algorithm of `like`: what to compare with `like` to verify data. */
export function digestLike(data: Uint8Array | string, like: Digest | string): Digest {
  const alg = like.slice(0, like.indexOf(':'));
  return digestOf(data, isAlgorithm(alg) ? alg : 'sha256');
}

/** Incremental hashing for streamed content. */
export class Digester {
  readonly algorithm: Algorithm;
  private readonly hash: Hash;
  private count = 0;
  constructor(algorithm: Algorithm = 'sha256') {
    this.algorithm = algorithm;
    this.hash = createHash(algorithm);
  }
  update(chunk: Uint8Array): void {
    this.hash.update(chunk);
    this.count += chunk.byteLength;
  }
  get size(): number {
    return this.count;
  }
  /** The digest so far; the digester can keep going afterwards. */
  digest(): Digest {
    return `${this.algorithm}:${this.hash.copy().digest('hex')}` as Digest;
  }
}

/**
 * A pass-through stream that hashes what flows through it and fails at the end (or as soon as the size is
 * exceeded) when the bytes are not the expected ones. Consumers must treat its error as "content is wrong".
 */
export class VerifyingStream extends Transform {
  readonly expected: Digest;
  readonly expectedSize: number | undefined;
  private readonly digester: Digester;
  /** The last chunk was checked and passed. */
  private verified = false;

  /**
   * `expectedSize` is the size of the whole blob. When resuming, `seed` holds the bytes already seen
   * (hashed by the caller) and only the rest flows through; `bytes` then counts both.
   */
  constructor(expected: Digest, expectedSize?: number, seed?: Digester) {
    super();
    if (seed && seed.algorithm !== algorithmOf(expected)) {
      throw invalidArgument(
        `resume seed uses ${seed.algorithm}, but ${expected} needs ${algorithmOf(expected)}`,
      );
    }
    this.expected = expected;
    this.expectedSize = expectedSize;
    this.digester = seed ?? new Digester(algorithmOf(expected));
  }

  get bytes(): number {
    return this.digester.size;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.digester.update(chunk);
    if (this.expectedSize !== undefined && this.digester.size > this.expectedSize) {
      cb(dataLoss(`content ${this.expected}: more than the expected ${this.expectedSize} bytes`));
      return;
    }
    // The chunk that completes the blob passes only once the digest matches: a consumer that counts
    // bytes (an HTTP response with a Content-Length) must never get a whole body of wrong bytes.
    if (this.digester.size === this.expectedSize) {
      const err = this.mismatch();
      if (err) {
        cb(err);
        return;
      }
      this.verified = true;
    }
    cb(null, chunk);
  }

  private mismatch(): Error | undefined {
    const got = this.digester.digest();
    return got === this.expected
      ? undefined
      : dataLoss(`content digest mismatch: expected ${this.expected}, got ${got}`);
  }

  override _flush(cb: TransformCallback): void {
    if (this.verified) {
      cb();
      return;
    }
    if (this.expectedSize !== undefined && this.digester.size !== this.expectedSize) {
      cb(
        dataLoss(`content ${this.expected}: got ${this.digester.size} bytes, expected ${this.expectedSize}`),
      );
      return;
    }
    cb(this.mismatch());
  }
}
