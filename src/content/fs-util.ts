// Small filesystem helpers the store needs for crash safety: directory fsync, atomic file replacement,
// and temporary names that say which process owns them so leftovers of dead processes can be removed.
// The store's metadata steps (small files, renames, links, unlinks) run as synchronous calls: each takes
// microseconds, while a promise-based call waits for the thread pool and then for a turn of an event loop
// that is busy streaming, ~5-10 ms a step under a fill (a commit's dozen steps held a followed blob's
// last byte ~30-160 ms). Data writes, reads and fsyncs stay asynchronous.
import { randomBytes } from 'node:crypto';
import { renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export function errnoCode(err: unknown): string | undefined {
  return err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}

export const isENOENT = (err: unknown): boolean => errnoCode(err) === 'ENOENT';
export const isEEXIST = (err: unknown): boolean => errnoCode(err) === 'EEXIST';

/** Makes a rename, link or unlink inside `dir` durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** `<pid>-<random>`: the pid lets a later process tell whether the owner is gone. */
export function tmpName(tmpDir: string, what: string): string {
  return join(tmpDir, `${process.pid}-${randomBytes(8).toString('hex')}-${what}`);
}

/** The pid a tmp entry was created by, or undefined for names we did not make. */
export function tmpOwner(name: string): number | undefined {
  const m = /^(\d+)-[0-9a-f]{16}-/.exec(name);
  return m ? Number(m[1]) : undefined;
}

/**
 * Replaces `path` with `data` so a reader sees the old or the new file, never a torn one (after a crash
 * too, unless `durable` is false).
 */
export async function writeFileAtomic(
  path: string,
  data: string,
  tmpDir: string,
  durable = true,
): Promise<void> {
  const tmp = tmpName(tmpDir, 'file');
  try {
    // A flushed write waits for the disk: off the event loop.
    if (durable) await writeFile(tmp, data, { flush: true });
    else writeFileSync(tmp, data);
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}

export async function exists(path: string): Promise<boolean> {
  try {
    statSync(path);
    return true;
  } catch (err) {
    if (isENOENT(err)) return false;
    throw err;
  }
}
