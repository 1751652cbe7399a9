// The one blob abstraction: a descriptor plus a way to open a range of its bytes. The content store,
// the registry client and the facade's sources all hand out blobs in this shape.
import type { Readable } from 'node:stream';
import type { Descriptor } from './descriptor.ts';

export interface ByteRange {
  /** First byte, from 0. */
  offset: number;
  /** Number of bytes; to the end when omitted. */
  length?: number;
}

export interface OpenOptions {
  range?: ByteRange | undefined;
  signal?: AbortSignal | undefined;
  /**
   * False for callers that hash the bytes themselves anyway (a content store commit checks size and
   * digest), so a full read is hashed once. Default true.
   */
  verify?: boolean;
  /**
   * Called when a range was asked for and the source sent the blob from its start instead (the bytes
   * before the range are read and dropped): asking such a source again costs the whole prefix again.
   */
  onRangeIgnored?: (() => void) | undefined;
}

export interface Blob {
  readonly descriptor: Descriptor;
  /**
   * A stream of the blob's bytes (or of the range asked for). Full reads are verified against the digest
   * (unless `verify` is false); the stream fails rather than end short.
   */
  open(options?: OpenOptions): Promise<Readable>;
}
