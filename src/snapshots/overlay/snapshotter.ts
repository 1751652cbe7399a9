// The `overlayfs` snapshotter, as containerd's: every snapshot is ROOT/snapshots/<id>/fs (its own
// changes only) plus `work` for an active one, nothing is copied, and mounts stack the parents' fs
// directories under the snapshot's own with overlayfs. Mounts are containerd's: a bind mount for a snapshot
// without parents, `overlay` with `lowerdir` (nearest parent first), `upperdir` and `workdir` for an active
// snapshot, a read-only bind of the parent or a lowerdir-only overlay for a view. Ids are decimal like
// containerd's, which keeps lowerdir lists short (see mount.ts for lists longer than a page), and never
// given twice, also across restarts (ROOT/next-id), as containerd's bolt sequence: a client still holding
// the mounts of a removed snapshot must not reach a newer one through the same directory.
//
// Layers are applied straight into the upper directory (see OverlayTarget): a deletion becomes an
// overlayfs whiteout, a hard link to the one whiteout device ROOT/whiteout (the kernel shares one too),
// so no process is forked per whiteout.
import { execFile } from 'node:child_process';
import {
  type BigIntStats,
  closeSync,
  fsyncSync,
  openSync,
  readFileSync,
  renameSync,
  writeSync,
} from 'node:fs';
import { access, link, lstat, mkdir, mkdtemp, rename, rm, unlink } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { failedPrecondition, invalidArgument, messageOf } from '../../errors.ts';
import type { SnapshotRecord, SnapshotUsage } from '../../metadata/snapshots.ts';
import { fsPath } from '../byte-names.ts';
import { diskUsage } from '../disk-usage.ts';
import { mountAt, unmount } from '../mount.ts';
import { RecordedSnapshotter, type SnapshotterOptions } from '../recorded-snapshotter.ts';
import type { Mount, SnapshotDirs } from '../snapshotter.ts';

export const OVERLAYFS = 'overlayfs';

const run = promisify(execFile);
const ID = /^[1-9][0-9]*$/;
const TIMEOUT_MS = 30_000;
/** Ids reserved on disk at a time: one synced write per this many snapshots. */
const ID_BLOCK = 1024;

/**
 * Whether overlayfs can be mounted with upper and work directories on the file system of `dir`, as
 * containerd checks before loading its overlayfs plugin. Rejects with the kernel's refusal.
 */
export async function probeOverlay(dir: string): Promise<void> {
  const base = await mkdtemp(join(dir, 'probe-'));
  try {
    for (const d of ['l1', 'l2', 'upper', 'work', 'merged']) await mkdir(join(base, d));
    const merged = join(base, 'merged');
    const options = [`lowerdir=${join(base, 'l1')}:${join(base, 'l2')}`, `upperdir=${join(base, 'upper')}`];
    await mountAt(
      { type: 'overlay', source: 'overlay', options: [...options, `workdir=${join(base, 'work')}`] },
      merged,
    );
    await unmount(merged);
  } finally {
    await rm(base, { recursive: true, force: true }).catch(() => {});
  }
}

export class OverlaySnapshotter extends RecordedSnapshotter {
  /** The whiteout device every whiteout links to. */
  private readonly whiteoutPath: string;
  /**
   * `dev:ino` of the whiteout devices whiteouts link to (each open and each device out of links makes a
   * new one): usage counts each link to them as an inode, as containerd, which makes a device per
   * whiteout, would. Known: the devices of this run and the one before it; older ones count once.
   */
  private readonly whiteoutDevices = new Set<string>();
  /** containerd sets index=off where the kernel has the index feature, so upper dirs stay portable. */
  private indexOff = false;
  private nextId = 1;
  /** Ids from here on were never handed out: the file next-id says so on disk. */
  private reservedUpTo = 1;

  protected readonly mountsFailure = 'failed to get active mount';

  private constructor(opts: SnapshotterOptions) {
    super(OVERLAYFS, opts, (name) => ID.test(name));
    this.whiteoutPath = join(this.root, 'whiteout');
  }

  /**
   * Opens the snapshotter at `root`. FailedPrecondition, naming the way out, when the kernel or the
   * root's file system cannot do overlay.
   */
  static async open(
    opts: SnapshotterOptions & { probe?: (dir: string) => Promise<void> },
  ): Promise<OverlaySnapshotter> {
    const sn = new OverlaySnapshotter(opts);
    await mkdir(sn.dir, { recursive: true, mode: 0o700 });
    try {
      await (opts.probe ?? probeOverlay)(sn.root);
    } catch (err) {
      throw failedPrecondition(
        `the overlayfs snapshotter cannot mount overlay on ${sn.root} (${messageOf(err)}); ` +
          'give the daemon a root on a file system that can (ext4, xfs), or pick the native snapshotter ' +
          'with `strata daemon --snapshotter native`',
        { cause: err },
      );
    }
    sn.indexOff = await access('/sys/module/overlay/parameters/index').then(
      () => true,
      () => false,
    );
    await sn.newWhiteoutDevice();
    // Half-made (`new-`) and half-removed (`rm-`) directories of a previous run have no record, once the
    // records of creations it did not finish are gone.
    await sn.dropUnfilled();
    await sn.cleanup();
    let max = 0;
    for (const id of sn.store.backingIds()) if (ID.test(id)) max = Math.max(max, Number(id));
    sn.nextId = Math.max(max + 1, sn.readReserved());
    sn.reservedUpTo = sn.nextId;
    return sn;
  }

  protected ownTree(id: string): string {
    return this.upper(id);
  }

  protected override measure(id: string, signal: AbortSignal | undefined): Promise<SnapshotUsage> {
    return diskUsage(this.upper(id), {
      ...(signal ? { signal } : {}),
      eachLinkCounts: (key) => this.whiteoutDevices.has(key),
    });
  }

  private upper(id: string): string {
    return join(this.dirs.path(id), 'fs');
  }

  private work(id: string): string {
    return join(this.dirs.path(id), 'work');
  }

  /** A fresh whiteout device in place of the one whiteouts link to (which may have run out of links). */
  private async newWhiteoutDevice(): Promise<void> {
    const identity = (st: BigIntStats) => `${st.dev}:${st.ino}`;
    const previous = await lstat(this.whiteoutPath, { bigint: true }).catch(() => undefined);
    if (previous?.isCharacterDevice()) this.whiteoutDevices.add(identity(previous));
    const temp = `${this.whiteoutPath}-${process.pid}`;
    await unlink(temp).catch(() => {});
    await run('mknod', ['-m', '000', '--', temp, 'c', '0', '0'], { timeout: TIMEOUT_MS });
    this.whiteoutDevices.add(identity(await lstat(temp, { bigint: true })));
    await rename(temp, this.whiteoutPath);
  }

  /** Makes an overlayfs whiteout at `path` (a hard link to the whiteout device; names per byte-names.ts). */
  private readonly makeWhiteout = async (name: string): Promise<void> => {
    const path = fsPath(name);
    try {
      await link(this.whiteoutPath, path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EMLINK') throw err;
      await this.newWhiteoutDevice();
      await link(this.whiteoutPath, path);
    }
  };

  protected newId(): string {
    if (this.nextId >= this.reservedUpTo) this.reserve(this.nextId + ID_BLOCK);
    return String(this.nextId++);
  }

  private get idFile(): string {
    return join(this.root, 'next-id');
  }

  /** The first id no earlier run can have handed out (1 without the file). */
  private readReserved(): number {
    let text: string;
    try {
      text = readFileSync(this.idFile, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 1;
      throw err;
    }
    if (!ID.test(text.trim()))
      throw failedPrecondition(`${this.idFile} holds no snapshot id: ${JSON.stringify(text.slice(0, 40))}`);
    return Number(text.trim());
  }

  /** Records on disk, before any of them is used, that ids below `upTo` may be handed out. */
  private reserve(upTo: number): void {
    const temp = `${this.idFile}.${process.pid}`;
    const fd = openSync(temp, 'w', 0o600);
    try {
      writeSync(fd, `${upTo}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, this.idFile);
    // The rename itself must last too: the directory's entry is synced like the file.
    const dir = openSync(this.root, 'r');
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
    this.reservedUpTo = upTo;
  }

  protected hasOwnDir(): boolean {
    return true;
  }

  /** Nothing is copied: an empty `fs`, and `work` for an active snapshot. */
  protected async fill(kind: 'active' | 'view', id: string): Promise<void> {
    await this.dirs.create(id, async (temp) => {
      await mkdir(temp, { mode: 0o700 });
      await mkdir(join(temp, 'fs'), { mode: 0o755 });
      if (kind === 'active') await mkdir(join(temp, 'work'), { mode: 0o711 });
    });
  }

  /** The backing ids of `rec`'s parents, nearest first. */
  private parentIds(ns: string, rec: SnapshotRecord): string[] {
    const ids: string[] = [];
    for (let name = rec.parent; name !== ''; ) {
      const p = this.store.stat(ns, name);
      ids.push(p.backingId);
      name = p.parent;
    }
    return ids;
  }

  protected mountsOf(ns: string, rec: SnapshotRecord): Mount[] {
    const parents = this.parentIds(ns, rec);
    if (parents.length === 0) {
      const mode = rec.kind === 'view' ? 'ro' : 'rw';
      return [{ type: 'bind', source: this.upper(rec.backingId), options: [mode, 'rbind'] }];
    }
    const options = this.indexOff ? ['index=off'] : [];
    if (rec.kind === 'active') {
      options.push(`workdir=${this.work(rec.backingId)}`, `upperdir=${this.upper(rec.backingId)}`);
    } else if (parents.length === 1) {
      return [{ type: 'bind', source: this.upper(parents[0]!), options: ['ro', 'rbind'] }];
    }
    options.push(`lowerdir=${parents.map((id) => this.upper(id)).join(':')}`);
    return [{ type: 'overlay', source: 'overlay', options }];
  }

  /**
   * The directories behind a mount this snapshotter handed out to namespace `ns`: the one directory of
   * a bind mount, or an overlay's upper (active) over its lowers. An overlay's lowers must be exactly the
   * snapshot's parents, so a client cannot make the daemon read directories of its choosing.
   */
  resolveMount(ns: string, m: Mount, opts: { writable: boolean }): SnapshotDirs | undefined {
    const inside = (p: string) => resolve(p).startsWith(`${this.dir}/`);
    if (m.type === 'overlay') {
      const opt = (name: string) => m.options.find((o) => o.startsWith(`${name}=`))?.slice(name.length + 1);
      const upperdir = opt('upperdir');
      const lowers = (opt('lowerdir') ?? '').split(':').filter((d) => d !== '');
      const first = upperdir ?? lowers[0];
      if (first === undefined || !inside(first)) return undefined;
      const refuse = (why: string) =>
        invalidArgument(`overlay mount ${JSON.stringify(m.options.join(','))} ${why}: invalid argument`);
      let rec: SnapshotRecord | undefined;
      let chain: string[];
      if (upperdir !== undefined) {
        rec = this.recordOf(ns, upperdir);
        if (rec?.kind !== 'active') throw refuse(`is no active snapshot of namespace ${ns}`);
        if (opt('workdir') !== this.work(rec.backingId)) throw refuse('has the wrong workdir');
        chain = this.parentIds(ns, rec);
      } else {
        if (opts.writable) throw refuse('is read-only');
        rec = this.recordOf(ns, lowers[0]!);
        if (rec?.kind !== 'committed') throw refuse(`is no view of namespace ${ns}`);
        chain = [rec.backingId, ...this.parentIds(ns, rec)];
      }
      const expected = chain.map((id) => this.upper(id));
      if (lowers.length !== expected.length || lowers.some((d, i) => d !== expected[i])) {
        throw refuse("does not stack the snapshot's parents");
      }
      return {
        ...(upperdir !== undefined ? { upper: this.upper(rec.backingId) } : {}),
        lowers: expected,
        whiteout: this.makeWhiteout,
      };
    }
    if (!inside(m.source)) return undefined;
    if (m.type !== 'bind') {
      throw invalidArgument(
        `unsupported mount type ${JSON.stringify(m.type)}: only bind and overlay mounts of ${OVERLAYFS} snapshots are accepted`,
      );
    }
    // A bind mount shows a whole tree only for a snapshot without parents.
    const rec = this.recordOf(ns, m.source);
    if (rec?.parent !== '')
      throw invalidArgument(`mount source ${JSON.stringify(m.source)} is no snapshot of namespace ${ns}`);
    if (opts.writable && (rec.kind !== 'active' || m.options.includes('ro'))) {
      throw invalidArgument(`mount source ${JSON.stringify(m.source)} is read-only`);
    }
    return { upper: this.upper(rec.backingId), lowers: [] };
  }

  /** The namespace's snapshot whose fs directory is `path`. */
  private recordOf(ns: string, path: string): SnapshotRecord | undefined {
    const rel = resolve(path)
      .slice(this.dir.length + 1)
      .split('/');
    if (rel.length !== 2 || rel[1] !== 'fs' || !ID.test(rel[0]!)) return undefined;
    return this.store.byBackingId(ns, rel[0]!);
  }
}
