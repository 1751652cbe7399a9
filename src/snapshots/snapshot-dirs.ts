// The snapshot directories both snapshotters keep under ROOT/snapshots: they come into being as `new-<id>`
// and are renamed once complete; removal renames to `rm-<id>` first. Cleanup removes whatever directory
// no snapshot record names (left by garbage collection or a crash), sparing directories still being filled.
import { readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { messageOf } from '../errors.ts';

export class SnapshotDirectories {
  /** Where the snapshot directories are. */
  readonly dir: string;
  /** Names of `new-*` directories being filled right now: cleanup must not take them. */
  readonly filling = new Set<string>();
  private readonly isId: (name: string) => boolean;
  private readonly logger: Logger | undefined;

  constructor(dir: string, isId: (name: string) => boolean, logger: Logger | undefined) {
    this.dir = dir;
    this.isId = isId;
    this.logger = logger;
  }

  path(id: string): string {
    return join(this.dir, id);
  }

  /** Fills `new-<id>` with `fill` and renames it to `<id>`; on failure removes it and rethrows. */
  async create(id: string, fill: (temp: string) => Promise<void>): Promise<void> {
    const temp = `new-${id}`;
    const tempPath = join(this.dir, temp);
    this.filling.add(temp);
    try {
      await fill(tempPath);
      await rename(tempPath, this.path(id));
    } catch (err) {
      await rm(tempPath, { recursive: true, force: true }).catch(() => {});
      throw err;
    } finally {
      this.filling.delete(temp);
    }
  }

  /** Removes directory `id`; a failure leaves an `rm-` directory for cleanup. */
  async remove(id: string): Promise<void> {
    const doomed = join(this.dir, `rm-${id}`);
    try {
      await rename(this.path(id), doomed);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    await rm(doomed, { recursive: true, force: true }).catch((err: unknown) =>
      this.logger?.warn({ dir: doomed, err: messageOf(err) }, 'cannot remove snapshot directory'),
    );
  }

  /** Removes directories whose id `ids()` lacks; returns how many. */
  async cleanup(ids: () => Set<string>): Promise<number> {
    // Directory names first, records second: a directory renamed into place after the listing has a
    // record already, so it cannot be mistaken for garbage.
    const names = await readdir(this.dir);
    const known = ids();
    let removed = 0;
    for (const name of names) {
      if (this.filling.has(name)) continue;
      if (this.isId(name) && known.has(name)) continue;
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
}
