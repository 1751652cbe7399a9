// One daemon per state directory, judged by a lock the kernel drops when its holder dies, as containerd
// holds a flock on its bolt database. Node has no flock; SQLite's file locks (fcntl) are such a lock:
// ROOT/daemon.lock is a one-row SQLite file that the daemon opens in exclusive locking mode and writes
// once, which keeps its exclusive lock until the connection closes or the process ends, however it ends.
// ROOT/daemon.pid only names the holder for the message and for people; it decides nothing, so a stale
// file naming some live process (PID reuse after a crash) no longer blocks a start.
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { unavailable } from '../errors.ts';

const isBusy = (err: unknown): boolean =>
  (err as { code?: string }).code === 'SQLITE_BUSY' || (err as { code?: string }).code === 'SQLITE_LOCKED';

/**
 * Takes ROOT's lock, or fails at once with Unavailable `state directory ROOT is in use by another daemon
 * (pid N)`. The returned function releases it. The lock file is never removed: a starter that opened it
 * just before the removal would lock a file nobody else sees.
 */
export async function lockRoot(root: string): Promise<() => Promise<void>> {
  const pidFile = join(root, 'daemon.pid');
  const db = new Database(join(root, 'daemon.lock'), { timeout: 0 });
  try {
    db.pragma('locking_mode = EXCLUSIVE');
    db.exec('CREATE TABLE IF NOT EXISTS holder (pid INTEGER NOT NULL)');
    db.transaction(() => {
      db.exec('DELETE FROM holder');
      db.prepare('INSERT INTO holder (pid) VALUES (?)').run(process.pid);
    }).exclusive();
  } catch (err) {
    db.close();
    if (!isBusy(err)) throw err;
    const holder = Number.parseInt(await readFile(pidFile, 'utf8').catch(() => ''), 10);
    const who = Number.isInteger(holder) && holder > 0 ? ` (pid ${holder})` : '';
    throw unavailable(`state directory ${root} is in use by another daemon${who}`, { cause: err });
  }
  await writeFile(pidFile, `${process.pid}\n`, { mode: 0o644 });
  return async () => {
    await rm(pidFile, { force: true });
    db.close();
  };
}
