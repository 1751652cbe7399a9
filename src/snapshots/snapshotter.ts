// What the Snapshots and Diff services need from a snapshotter, whichever keeps the trees (`native`
// copies directories, `overlayfs` stacks them). Semantics and messages are containerd's; records live in
// the metadata database through SnapshotStore.
import type { SnapshotRecord, SnapshotUsage } from '../metadata/snapshots.ts';

/** A mount as containerd's API carries it. */
export interface Mount {
  type: string;
  source: string;
  options: string[];
}

export interface CreateOptions {
  labels?: Record<string, string>;
  /** The request's lease: it holds what this call creates. */
  lease?: string;
  signal?: AbortSignal;
}

/**
 * The directories behind mounts a snapshotter handed out. A bind mount is one directory (`lowers`
 * empty); an overlay is `upper` (absent for a read-only view of several layers) over `lowers`.
 */
export interface SnapshotDirs {
  upper?: string;
  /** Parents' directories, nearest first. */
  lowers: string[];
  /** Makes an overlayfs whiteout (a 0/0 character device) at a path in `upper`, for overlays. */
  whiteout?: (path: string) => Promise<void>;
}

export interface Snapshotter {
  /** The name clients use (`native`, `overlayfs`). */
  readonly name: string;
  /** The snapshotter's root directory. */
  readonly root: string;
  /** An active snapshot on committed `parent` (or on nothing), mounted read-write. */
  prepare(ns: string, key: string, parent: string, opts?: CreateOptions): Promise<Mount[]>;
  /** A read-only snapshot of committed `parent` (or of an empty tree). */
  view(ns: string, key: string, parent: string, opts?: CreateOptions): Promise<Mount[]>;
  /** The mounts of an active or view snapshot; FailedPrecondition for a committed one. */
  mounts(ns: string, key: string): Mount[];
  /** Commits active snapshot `key` as `name`, recording its disk usage. */
  commit(ns: string, name: string, key: string, opts?: CreateOptions): Promise<SnapshotRecord>;
  /** NotFound; FailedPrecondition while it has children. */
  remove(ns: string, key: string, opts?: { lease?: string }): Promise<void>;
  stat(ns: string, key: string): SnapshotRecord;
  update(
    ns: string,
    info: { name: string; labels: Record<string, string> },
    paths: readonly string[],
  ): SnapshotRecord;
  list(ns: string, filters: readonly string[]): Promise<SnapshotRecord[]>;
  /** Active snapshots are measured now; committed ones report what was measured at commit. */
  usage(ns: string, key: string, signal?: AbortSignal): Promise<SnapshotUsage>;
  /** Removes directories no snapshot record names; returns how many. */
  cleanup(): Promise<number>;
  /** Stops what the snapshotter runs beside the daemon (helper processes). */
  close(): void;
  /**
   * The directories behind a mount this snapshotter handed out, undefined when the mount is none of
   * its own (not under its root). InvalidArgument for a mount under its root that is no snapshot of
   * namespace `ns`, or (when `writable`) not an active snapshot's read-write mount.
   */
  resolveMount(ns: string, mount: Mount, opts: { writable: boolean }): SnapshotDirs | undefined;
}
