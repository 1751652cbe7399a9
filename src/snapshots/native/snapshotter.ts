// The `native` snapshotter: every snapshot with a tree of its own is a plain directory under
// ROOT/snapshots/<id>, an active snapshot starts as a full copy of its committed parent, and mounts are
// bind mounts of those directories, as containerd's native snapshotter does (works on any file system,
// needs no mount privileges). A view of a committed snapshot has no directory: it mounts the parent's,
// read-only. Metadata (keys, kinds, parents, labels, leases) lives in the metadata database.
//
// Directories come into being as `new-<id>` and are renamed once complete; removal renames to
// `rm-<id>` first. Cleanup removes whatever directory no snapshot record names (left by garbage
// collection or a crash), sparing directories still being filled.
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Logger } from 'pino';
import { failedPrecondition, invalidArgument, messageOf } from '../../errors.ts';
import type { MetadataDb } from '../../metadata/db.ts';
import { type SnapshotRecord, SnapshotStore, type SnapshotUsage } from '../../metadata/snapshots.ts';
import { tracePhase } from '../../trace.ts';
import type { CreateOptions, Mount, SnapshotDirs, Snapshotter } from '../snapshotter.ts';
import { XattrDumper } from '../xattr.ts';
import { copyTree } from './copy-tree.ts';
import { diskUsage } from './disk-usage.ts';

export const NATIVE = 'native';

export interface NativeSnapshotterOptions {
  /** The snapshotter's root (e.g. DAEMON_ROOT/snapshots/native); snapshot directories go in `snapshots/`. */
  root: string;
  db: MetadataDb;
  logger?: Logger;
}

const ID = /^[0-9a-f]{16}$/;
const newId = (): string => randomBytes(8).toString('hex');

export class NativeSnapshotter implements Snapshotter {
  readonly name = NATIVE;
  readonly root: string;
  /** Where the snapshot directories are. */
  readonly dir: string;
  readonly store: SnapshotStore;
  private readonly logger: Logger | undefined;
  /** Names of `new-*` directories being filled right now: cleanup must not take them. */
  private readonly filling = new Set<string>();
  /** Dumps parents' extended attributes for every copy; stopped by close(). */
  private readonly xattrs = new XattrDumper();

  private constructor(opts: NativeSnapshotterOptions) {
    this.root = resolve(opts.root);
    this.dir = join(this.root, 'snapshots');
    this.store = new SnapshotStore(opts.db, NATIVE);
    this.logger = opts.logger;
  }

  static async open(opts: NativeSnapshotterOptions): Promise<NativeSnapshotter> {
    const sn = new NativeSnapshotter(opts);
    await mkdir(sn.dir, { recursive: true, mode: 0o700 });
    // Forked now, while the daemon's heap is small: every parent copy dumps extended attributes.
    sn.xattrs.start();
    // Half-made (`new-`) and half-removed (`rm-`) directories of a previous run have no record.
    await sn.cleanup();
    return sn;
  }

  /** Stops the snapshotter's helper process. */
  close(): void {
    this.xattrs.stop();
  }

  private path(id: string): string {
    return join(this.dir, id);
  }

  /** An active snapshot: a copy of `parent` (or an empty directory), mounted read-write. */
  prepare(ns: string, key: string, parent: string, opts: CreateOptions = {}): Promise<Mount[]> {
    return this.create('active', ns, key, parent, opts);
  }

  /** A read-only snapshot of `parent` (or of an empty directory). */
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
    const id = newId();
    const { record, parent: parentRec } = this.store.create(ns, {
      key,
      parent,
      kind,
      labels: opts.labels ?? {},
      backingId: id,
      ...(opts.lease ? { lease: opts.lease } : {}),
    });
    if (kind === 'active' || !parentRec) {
      const temp = `new-${id}`;
      const tempPath = join(this.dir, temp);
      this.filling.add(temp);
      try {
        await mkdir(tempPath, { mode: 0o755 });
        if (parentRec) {
          const endCopy = tracePhase('daemon-copy-parent');
          const copied = await copyTree(this.path(parentRec.backingId), tempPath, {
            signal: opts.signal,
            xattrs: this.xattrs,
          });
          endCopy(`${copied.entries} entries`);
        }
        await rename(tempPath, this.path(id));
      } catch (err) {
        this.store.forget(ns, key, id, opts.lease);
        await rm(tempPath, { recursive: true, force: true }).catch(() => {});
        throw err;
      } finally {
        this.filling.delete(temp);
      }
    }
    return this.mountsOf(record, parentRec);
  }

  private mountsOf(rec: SnapshotRecord, parent: SnapshotRecord | undefined): Mount[] {
    const source = rec.kind === 'view' && parent ? this.path(parent.backingId) : this.path(rec.backingId);
    return [{ type: 'bind', source, options: ['rbind', rec.kind === 'view' ? 'ro' : 'rw'] }];
  }

  /** The mounts of an active or view snapshot; FailedPrecondition for a committed one. */
  mounts(ns: string, key: string): Mount[] {
    const rec = this.store.stat(ns, key);
    if (rec.kind === 'committed') {
      throw failedPrecondition(
        `failed to get snapshot mount: requested snapshot ${key} not active or view: failed precondition`,
      );
    }
    const parent = rec.kind === 'view' && rec.parent !== '' ? this.store.stat(ns, rec.parent) : undefined;
    return this.mountsOf(rec, parent);
  }

  /** Commits active snapshot `key` as `name`, recording its disk usage. */
  async commit(ns: string, name: string, key: string, opts: CreateOptions = {}): Promise<SnapshotRecord> {
    const rec = this.store.get(ns, key);
    // The commit below re-checks everything; the walk is only worth it for what can be committed.
    const usage =
      rec?.kind === 'active'
        ? await diskUsage(this.path(rec.backingId), opts.signal)
        : { size: 0, inodes: 0 };
    return this.store.commit(ns, {
      name,
      key,
      labels: opts.labels ?? {},
      usage,
      ...(opts.lease ? { lease: opts.lease } : {}),
    });
  }

  /** Removes the snapshot and its directory. NotFound; FailedPrecondition while it has children. */
  async remove(ns: string, key: string, opts: { lease?: string } = {}): Promise<void> {
    const rec = this.store.remove(ns, key, opts.lease);
    if (rec.kind === 'view' && rec.parent !== '') return;
    await this.removeDir(rec.backingId);
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

  list(ns: string, filters: readonly string[]): SnapshotRecord[] {
    return this.store.list(ns, filters);
  }

  /** Active snapshots are measured now; committed ones report what was measured at commit. */
  async usage(ns: string, key: string, signal?: AbortSignal): Promise<SnapshotUsage> {
    const rec = this.store.stat(ns, key);
    if (rec.kind === 'active') return diskUsage(this.path(rec.backingId), signal);
    return rec.usage;
  }

  /** Removes directories no snapshot record names; returns how many. */
  async cleanup(): Promise<number> {
    // Directory names first, records second: a directory renamed into place after the listing has a
    // record already, so it cannot be mistaken for garbage.
    const names = await readdir(this.dir);
    const ids = this.store.backingIds();
    let removed = 0;
    for (const name of names) {
      if (this.filling.has(name)) continue;
      if (ID.test(name) && ids.has(name)) continue;
      try {
        await rm(join(this.dir, name), { recursive: true, force: true });
        removed++;
      } catch (err) {
        this.logger?.warn(
          { dir: name, err: messageOf(err) },
          'snapshot cleanup could not remove a directory',
        );
      }
    }
    if (removed > 0) this.logger?.info({ removed }, 'snapshot directories cleaned up');
    return removed;
  }

  /**
   * The directory behind a bind mount this snapshotter handed out in namespace `ns`; undefined for a
   * mount outside its directory. Refused with InvalidArgument: other mount types, names that are no
   * snapshot directory, snapshots of other namespaces, and (when `writable`) anything but an active
   * snapshot mounted read-write.
   */
  resolveMount(ns: string, m: Mount, opts: { writable: boolean }): SnapshotDirs | undefined {
    const source = resolve(m.source);
    if (!source.startsWith(`${this.dir}/`)) return undefined;
    if (m.type !== 'bind') {
      throw invalidArgument(
        `unsupported mount type ${JSON.stringify(m.type)}: only bind mounts of ${NATIVE} snapshots are accepted`,
      );
    }
    const id = source.slice(this.dir.length + 1);
    if (!ID.test(id)) {
      throw invalidArgument(`mount source ${JSON.stringify(m.source)} is not a ${NATIVE} snapshot`);
    }
    const rec = this.store.byBackingId(ns, id);
    if (!rec)
      throw invalidArgument(`mount source ${JSON.stringify(m.source)} is no snapshot of namespace ${ns}`);
    if (opts.writable && (rec.kind !== 'active' || m.options.includes('ro'))) {
      throw invalidArgument(`mount source ${JSON.stringify(m.source)} is read-only`);
    }
    return { upper: source, lowers: [] };
  }

  private async removeDir(id: string): Promise<void> {
    const doomed = join(this.dir, `rm-${id}`);
    try {
      await rename(this.path(id), doomed);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    // The record is gone already; a failure here leaves an `rm-` directory for cleanup.
    await rm(doomed, { recursive: true, force: true }).catch((err: unknown) =>
      this.logger?.warn({ dir: doomed, err: messageOf(err) }, 'cannot remove snapshot directory'),
    );
  }
}
