// What a pull reports while it runs, for progress displays. Byte counts are absolute positions in the
// blob, so a resumed ingest starts past 0.
import type { Descriptor } from '../../oci/descriptor.ts';
import type { Digest } from '../../oci/digest.ts';

export type BlobKind = 'index' | 'manifest' | 'config' | 'layer';

export type PullEvent =
  | { type: 'resolved'; name: string; descriptor: Descriptor }
  /** A blob the namespace lacks is being fetched, from `offset` (past 0 when an ingest is resumed). */
  | { type: 'fetch-start'; kind: BlobKind; descriptor: Descriptor; offset: number }
  | { type: 'fetch-progress'; descriptor: Descriptor; bytes: number }
  | { type: 'fetch-done'; kind: BlobKind; descriptor: Descriptor; ms: number; bytes: number }
  /** The namespace had the blob, or the daemon's content store did (then linked in): nothing fetched. */
  | { type: 'exists'; kind: BlobKind; descriptor: Descriptor }
  | { type: 'unpack-start'; layer: Descriptor; chainId: Digest }
  | { type: 'unpack-done'; layer: Descriptor; chainId: Digest; applied: boolean; ms: number }
  | { type: 'image'; name: string; target: Descriptor; created: boolean };

export type PullListener = (event: PullEvent) => void;
