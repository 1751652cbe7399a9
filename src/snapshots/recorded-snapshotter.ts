// What both snapshotters share: records in the metadata database (SnapshotStore), one directory per
// snapshot under ROOT/snapshots (SnapshotDirectories), and containerd's Mounts, Commit, Remove, Stat,
// Update, List, Usage and Cleanup over them. A snapshotter adds how it creates a snapshot's tree, which
// directory holds a snapshot's own data (measured for usage), its mounts, and which mounts it accepts.
import { access } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Logger } from 'pino';
import { failedPrecondition } from '../errors.ts';
import type { MetadataDb } from '../metadata/db.ts';
import { backendKey, type SnapshotRecord, SnapshotStore, type SnapshotUsage } from '../metadata/snapshots.ts';
import { diskUsage } from './disk-usage.ts';
import { SnapshotDirectories } from './snapshot-dirs.ts';
import type { CreateOptions, Mount, SnapshotDirs, Snapshotter } from './snapshotter.ts';

const pathExists = (path: string): Promise<boolean> =>
  access(path).then(
    () => true,
    () => false,
  );

export interface SnapshotterOptions {
  /** The snapshotter's root (e.g. DAEMON_ROOT/snapshots/<name>); snapshot directories go in `snapshots/`. */
  root: string;
  db: MetadataDb;
  logger?: Logger;
}

export abstract class RecordedSnapshotter implements Snapshotter {
  readonly name: string;
  readonly root: string;
  /** Where the snapshot directories are. */
  readonly dir: string;
  readonly store: SnapshotStore;
  protected readonly dirs: SnapshotDirectories;
  protected readonly logger: Logger | undefined;

  protected constructor(name: string, opts: SnapshotterOptions, isId: (name: string) => boolean) {
    this.name = name;
    this.root = resolve(opts.root);
    this.dir = join(this.root, 'snapshots');
    this.store = new SnapshotStore(opts.db, name);
    this.dirs = new SnapshotDirectories(this.dir, isId, opts.logger);
    this.logger = opts.logger;
  }

  /** How containerd's snapshotter of this name words a Mounts failure (each has its own). */
  protected abstract readonly mountsFailure: string;

  abstract resolveMount(ns: string, mount: Mount, opts: { writable: boolean }): SnapshotDirs | undefined;
  /** The mounts of an active or view snapshot. */
  protected abstract mountsOf(ns: string, rec: SnapshotRecord): Mount[];
  /** The directory holding what snapshot directory `id` itself adds (measured for usage). */
  protected abstract ownTree(id: string): string;
  /** The disk usage of what snapshot directory `id` itself adds, as containerd measures it. */
  protected measure(id: string, signal: AbortSignal | undefined): Promise<SnapshotUsage> {
    return diskUsage(this.ownTree(id), signal ? { signal } : {});
  }
  /** A fresh id for a snapshot directory. */
  protected abstract newId(): string;
  /** Whether the snapshot has a directory of its own (fill() made one). */
  protected abstract hasOwnDir(rec: SnapshotRecord): boolean;
  /** Makes the directory of new snapshot `id` (if it needs one), through `dirs.create`. */
  protected abstract fill(
    kind: 'active' | 'view',
    id: string,
    parent: SnapshotRecord | undefined,
    signal: AbortSignal | undefined,
  ): Promise<void>;

  /** An active snapshot on committed `parent` (or on nothing), mounted read-write. */
  prepare(ns: string, key: string, parent: string, opts: CreateOptions = {}): Promise<Mount[]> {
    return this.create('active', ns, key, parent, opts);
  }

  /** A read-only snapshot of committed `parent` (or of an empty tree). */
  view(ns: string, key: string, parent: string, opts: CreateOptions = {}): Promise<Mount[]> {
    return this.create('view', ns, key, parent, opts);
  }

  private async create(
    kind: 'active' | 'view',
    ns: string,
    key: string,
    parent: string,
    opts: CreateOptions,
  ): Promise<Mount[]> {
    const id = this.newId();
    const { record, parent: parentRec } = this.store.create(ns, {
      key,
      parent,
      kind,
      labels: opts.labels ?? {},
      backingId: id,
      ...(opts.lease ? { lease: opts.lease } : {}),
    });
    try {
      await this.fill(kind, id, parentRec, opts.signal);
    } catch (err) {
      this.store.forget(ns, key, id, opts.lease);
      throw err;
    }
    return this.mountsOf(ns, record);
  }

  /** The mounts of an active or view snapshot; FailedPrecondition for a committed one. */
  mounts(ns: string, key: string): Mount[] {
    const rec = this.store.stat(ns, key);
    if (rec.kind === 'committed') {
      throw failedPrecondition(
        `${this.mountsFailure}: requested snapshot ${backendKey(ns, rec)} not active or view: failed precondition`,
      );
    }
    return this.mountsOf(ns, rec);
  }

  /** Commits active snapshot `key` as `name`, recording its disk usage. */
  async commit(ns: string, name: string, key: string, opts: CreateOptions = {}): Promise<SnapshotRecord> {
    const rec = this.store.get(ns, key);
    // The commit below re-checks everything; the walk is only worth it for what can be committed.
    const usage =
      rec?.kind === 'active' ? await this.measure(rec.backingId, opts.signal) : { size: 0, inodes: 0 };
    return this.store.commit(ns, {
      name,
      key,
      labels: opts.labels ?? {},
      usage,
      ...(opts.lease ? { lease: opts.lease } : {}),
    });
  }

  /** Removes the snapshot and its directory (if it has one). NotFound; FailedPrecondition with children. */
  async remove(ns: string, key: string, opts: { lease?: string } = {}): Promise<void> {
    const rec = this.store.remove(ns, key, opts.lease);
    await this.dirs.remove(rec.backingId);
  }

  stat(ns: string, key: string): SnapshotRecord {
    return this.store.stat(ns, key);
  }

  update(
    ns: string,
    info: { name: string; labels: Record<string, string> },
    paths: readonly string[],
  ): SnapshotRecord {
    return this.store.update(ns, info, paths);
  }

  list(ns: string, filters: readonly string[]): Promise<SnapshotRecord[]> {
    return this.store.list(ns, filters);
  }

  /** Active snapshots are measured now; committed ones report what was measured at commit. */
  async usage(ns: string, key: string, signal?: AbortSignal): Promise<SnapshotUsage> {
    const rec = this.store.stat(ns, key);
    if (rec.kind === 'active') return this.measure(rec.backingId, signal);
    return rec.usage;
  }

  /**
   * What a daemon killed during a prepare or view left: the record is written before its directory is
   * filled (so the key is taken while the copy runs), and a kill in between leaves a record whose
   * directory never came. containerd writes both in one transaction, so such a snapshot never existed for
   * its clients: drop the records (to be called on open, before cleanup takes the half-filled directory).
   */
  protected async dropUnfilled(): Promise<void> {
    for (const { ns, record } of this.store.all()) {
      if (record.kind === 'committed' || !this.hasOwnDir(record)) continue;
      if (await pathExists(this.dirs.path(record.backingId))) continue;
      this.store.forget(ns, record.name, record.backingId);
      this.logger?.warn(
        { namespace: ns, key: record.name, snapshotter: this.name },
        'dropped a snapshot whose creation was interrupted',
      );
    }
  }

  /** Removes directories no snapshot record names; returns how many. */
  cleanup(): Promise<number> {
    return this.dirs.cleanup(() => this.store.backingIds());
  }

  /** Stops what the snapshotter runs beside the daemon (helper processes). */
  close(): void {}
}
