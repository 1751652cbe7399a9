// The `native` snapshotter: every snapshot with a tree of its own is a plain directory under
// ROOT/snapshots/<id>, an active snapshot starts as a full copy of its committed parent, and mounts are
// bind mounts of those directories, as containerd's native snapshotter does (works on any file system,
// needs no mount privileges). A view of a committed snapshot has no directory: it mounts the parent's,
// read-only. Metadata (keys, kinds, parents, labels, leases) lives in the metadata database.
// Directories are made and removed through SnapshotDirectories (`new-`, `rm-`, cleanup).
import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { invalidArgument } from '../../errors.ts';
import type { SnapshotRecord } from '../../metadata/snapshots.ts';
import { tracePhase } from '../../trace.ts';
import { RecordedSnapshotter, type SnapshotterOptions } from '../recorded-snapshotter.ts';
import type { Mount, SnapshotDirs } from '../snapshotter.ts';
import { XattrDumper } from '../xattr.ts';
import { CopyRunner } from './copy-runner.ts';
import { copyTree } from './copy-tree.ts';

export const NATIVE = 'native';

const ID = /^[0-9a-f]{16}$/;

export class NativeSnapshotter extends RecordedSnapshotter {
  /** Dumps parents' extended attributes for every copy; stopped by close(). */
  private readonly xattrs = new XattrDumper();
  /** Copies parent trees on a worker thread; stopped by close(). */
  private readonly copier = new CopyRunner();

  protected readonly mountsFailure = 'failed to get snapshot mount';

  private constructor(opts: SnapshotterOptions) {
    super(NATIVE, opts, (name) => ID.test(name));
  }

  static async open(opts: SnapshotterOptions): Promise<NativeSnapshotter> {
    const sn = new NativeSnapshotter(opts);
    await mkdir(sn.dir, { recursive: true, mode: 0o700 });
    // Forked now, while the daemon's heap is small: every parent copy dumps extended attributes.
    sn.xattrs.start();
    sn.copier.start();
    // Half-made (`new-`) and half-removed (`rm-`) directories of a previous run have no record, once the
    // records of creations it did not finish are gone.
    await sn.dropUnfilled();
    await sn.cleanup();
    return sn;
  }

  /** Stops the snapshotter's helper process and copy worker. */
  override close(): void {
    this.xattrs.stop();
    void this.copier.close();
  }

  private path(id: string): string {
    return this.dirs.path(id);
  }

  protected newId(): string {
    return randomBytes(8).toString('hex');
  }

  protected hasOwnDir(rec: SnapshotRecord): boolean {
    return !(rec.kind === 'view' && rec.parent !== '');
  }

  /** An active snapshot starts as a copy of its parent; a view of a parent needs no directory. */
  protected async fill(
    kind: 'active' | 'view',
    id: string,
    parent: SnapshotRecord | undefined,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    if (kind === 'view' && parent) return; // see hasOwnDir
    await this.dirs.create(id, async (tempPath) => {
      await mkdir(tempPath, { mode: 0o755 });
      if (parent) {
        const endCopy = tracePhase('daemon-copy-parent');
        const copied = await copyTree(this.path(parent.backingId), tempPath, {
          signal,
          xattrs: this.xattrs,
          runner: this.copier,
        });
        endCopy(`${copied.entries} entries`);
      }
    });
  }

  protected mountsOf(ns: string, rec: SnapshotRecord): Mount[] {
    const parent = rec.kind === 'view' && rec.parent !== '' ? this.store.stat(ns, rec.parent) : undefined;
    const source = this.path(parent ? parent.backingId : rec.backingId);
    return [{ type: 'bind', source, options: ['rbind', rec.kind === 'view' ? 'ro' : 'rw'] }];
  }

  protected ownTree(id: string): string {
    return this.path(id);
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
}
