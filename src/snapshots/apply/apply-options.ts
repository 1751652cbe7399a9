// What an apply is asked and what it answers: shared by the caller's side (apply-layer.ts,
// apply-workers.ts), the messages between threads (apply-messages.ts) and the applier on a worker
// (layer-applier.ts).
import type { Digest } from '../../oci/digest.ts';
import type { IdRange } from './id-map.ts';

/** Why an entry was not (fully) written. */
export type SkipKind =
  /** Character or block device while devices are not allowed (or we are not root). */
  | 'device'
  /** Extended attributes (`SCHILY.xattr.*`) that could not be set as they are. Counted per attribute. */
  | 'xattr'
  /** AUFS metadata (`.wh..wh.plnk` and friends). */
  | 'aufs-meta'
  /** An entry naming the root itself (`./`); containerd ignores those too. */
  | 'root';

export interface ApplyOptions {
  signal?: AbortSignal;
  /** A layer media type, `gzip`/`zstd`/`none`, or `auto` (default): sniff the magic bytes. */
  compression?: string;
  /**
   * Create character and block devices (needs root; uses the `mknod` command). Default false; the
   * daemon's Diff.Apply sets it when running as root outside a user namespace, as containerd does.
   */
  allowDevices?: boolean;
  /** Change owners to those in the layer. Default: when running as root. */
  chown?: boolean;
  uidMap?: readonly IdRange[];
  gidMap?: readonly IdRange[];
  /** Refuse layers with more entries than this. Default 1,000,000. */
  maxEntries?: number;
  /**
   * Refuse layers whose entries need more child processes than this: a fifo, a device, an entry's
   * xattrs, an overlay opaque marker or a copy-up each take one. Default 4,096 (DEFAULT_MAX_PROCESSES).
   */
  maxProcesses?: number;
  /** Told about each skipped entry or attribute, for logging. */
  onSkip?: (kind: SkipKind, name: string) => void;
  /**
   * The root is an overlay's upper directory over these lowers: deletions become overlayfs whiteouts
   * and opaque directories in the upper, names are resolved as the merged tree shows them.
   */
  overlay?: OverlayTarget;
}

export interface OverlayTarget {
  /** Lower directories, nearest first. */
  lowers: readonly string[];
  /** Makes an overlayfs whiteout (a 0/0 character device) at this path (byte-names.ts: see fsPath). */
  whiteout: (abs: string) => Promise<void>;
}

export interface ApplyResult {
  /** sha256 of the uncompressed tar: the layer's diff_id. */
  diffId: Digest;
  /** Bytes of the uncompressed tar. */
  size: number;
  entries: number;
  skipped: Record<SkipKind, number>;
}
