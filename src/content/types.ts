// The shapes the content store hands out; the gRPC Content adapter maps them field by field.
import type { Digest } from '../oci/digest.ts';

export interface ContentInfo {
  digest: Digest;
  size: number;
  createdAt: Date;
  updatedAt: Date;
  /** Always empty here: labels are per namespace and belong to the metadata layer, as in containerd. */
  labels: Record<string, string>;
}

export interface IngestStatus {
  ref: string;
  /** Bytes written so far. */
  offset: number;
  /** Declared size, 0 when unknown. */
  total: number;
  expected?: Digest;
  startedAt: Date;
  updatedAt: Date;
}

export interface WriterOptions {
  expected?: Digest;
  total?: number;
  /**
   * Once this many bytes were written since the last one, start syncing the data to disk in the
   * background (one sync at a time), so the commit's own sync finds little left to write back. For
   * writers whose commit a client waits for right after the last byte (a registry upload's PUT); 0 or
   * undefined: never. The commit syncs regardless: this only moves disk work earlier.
   */
  syncEvery?: number;
}

/** The commit steps, in order; test hooks run before each so crash tests can stop a process there. */
export type CommitStep = 'sync' | 'move' | 'link' | 'cleanup';

export interface StoreHooks {
  beforeCommitStep?: (step: CommitStep, ref: string) => void | Promise<void>;
  /** For tests: a background sync (WriterOptions.syncEvery) starts with `offset` bytes written. */
  onSyncAhead?: (ref: string, offset: number) => void;
}
