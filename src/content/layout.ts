// Where the store keeps things under its root. Committed blobs live at blobs/<alg>/<hex>; an ingest (an
// in-progress write) lives in ingest/<sha256 of ref>/ so any ref string maps to a safe directory name; ref
// locks live apart in locks/ so removing an ingest never removes someone's lock; tmp/ is on the same
// filesystem so a rename or link from it is atomic.
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { invalidArgument } from '../errors.ts';
import { type Algorithm, algorithmOf, type Digest, encodedOf, parseDigest } from '../oci/digest.ts';

export const ALGORITHMS: readonly Algorithm[] = ['sha256', 'sha384', 'sha512'];

/** Refs are opaque to the store; the cap keeps lock and metadata files small. */
export const MAX_REF_BYTES = 4096;

export function validateRef(ref: string): void {
  if (typeof ref !== 'string' || ref.length === 0) throw invalidArgument('ref must not be empty');
  // Lone surrogates would encode to the same bytes as other refs and so share their ingest.
  if (!ref.isWellFormed()) throw invalidArgument('ref must be well-formed unicode');
  const bytes = Buffer.byteLength(ref);
  if (bytes > MAX_REF_BYTES) {
    throw invalidArgument(`ref is ${bytes} bytes long, more than the limit of ${MAX_REF_BYTES}`);
  }
}

export class Layout {
  readonly root: string;
  constructor(root: string) {
    this.root = root;
  }

  get blobsDir(): string {
    return join(this.root, 'blobs');
  }
  get ingestRoot(): string {
    return join(this.root, 'ingest');
  }
  get locksDir(): string {
    return join(this.root, 'locks');
  }
  get tmpDir(): string {
    return join(this.root, 'tmp');
  }

  blobDir(alg: Algorithm): string {
    return join(this.blobsDir, alg);
  }

  /** Validates the digest first: it becomes a path, so it must never carry separators or dots. */
  blobPath(d: Digest): string {
    parseDigest(d);
    return join(this.blobDir(algorithmOf(d)), encodedOf(d));
  }

  ingestKey(ref: string): string {
    return createHash('sha256').update(ref).digest('hex');
  }
  ingestDir(ref: string): string {
    return join(this.ingestRoot, this.ingestKey(ref));
  }
  ingestData(ref: string): string {
    return join(this.ingestDir(ref), 'data');
  }
  ingestMeta(ref: string): string {
    return join(this.ingestDir(ref), 'meta.json');
  }
  lockPath(ref: string): string {
    return join(this.locksDir, `${this.ingestKey(ref)}.lock`);
  }
}
