// One process per state directory, judged by a lock the kernel drops when its holder dies, as containerd
// holds a flock on its bolt database. Node has no flock; SQLite's file locks (fcntl) are such a lock:
// ROOT/daemon.lock is a one-row SQLite file that the holder opens in exclusive locking mode and writes
// once, which keeps its exclusive lock until the connection closes or the process ends, however it ends.
// A daemon, a facade with hosted repositories and `strata up` all take it, since each runs a garbage
// collector over the root's store. A builder takes its state directory's: its start removes the work of
// the builder before it, and its history is written through one temp file per source. ROOT/daemon.pid
// (`<pid> <role>`) only names the holder for the message and for people (the lock file cannot be read
// while it is held); it decides nothing, so a stale file naming some live process (PID reuse after a
// crash) no longer blocks a start.
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { unavailable } from '../errors.ts';

/** What holds a root: the command that took its lock. */
export type RootHolder = 'daemon' | 'facade' | 'up' | 'builder';

const HOLDER_WORDS: Record<RootHolder, string> = {
  daemon: 'another daemon',
  facade: 'a facade serving hosted repositories',
  up: 'strata up',
  builder: 'another builder',
};

const isBusy = (err: unknown): boolean =>
  (err as { code?: string }).code === 'SQLITE_BUSY' || (err as { code?: string }).code === 'SQLITE_LOCKED';

/** The holder a pid file names: `<pid> <role>`, or a bare `<pid>` as older versions wrote it (a daemon). */
export function parseHolder(text: string): { pid?: number; role?: RootHolder } {
  const [pidText, roleText] = text.trim().split(/\s+/, 2);
  const pid = Number.parseInt(pidText ?? '', 10);
  const out: { pid?: number; role?: RootHolder } = {};
  if (Number.isInteger(pid) && pid > 0) {
    out.pid = pid;
    out.role = 'daemon';
  }
  if (roleText !== undefined && Object.hasOwn(HOLDER_WORDS, roleText)) out.role = roleText as RootHolder;
  return out;
}

/**
 * Takes ROOT's lock for `role`, or fails at once with Unavailable `state directory ROOT is in use by
 * <holder> (pid N)`, the holder named as its pid file says (`another daemon`, `a facade serving hosted
 * repositories`, `strata up`). The returned function releases it. The lock file is never removed: a
 * starter that opened it just before the removal would lock a file nobody else sees.
 */
export async function lockRoot(root: string, role: RootHolder = 'daemon'): Promise<() => Promise<void>> {
  const pidFile = join(root, 'daemon.pid');
  const db = new Database(join(root, 'daemon.lock'), { timeout: 0 });
  try {
    db.pragma('locking_mode = EXCLUSIVE');
    db.exec('CREATE TABLE IF NOT EXISTS holder (pid INTEGER NOT NULL)');
    const columns = db.prepare('PRAGMA table_info(holder)').all() as { name: string }[];
    if (!columns.some((c) => c.name === 'role'))
      db.exec("ALTER TABLE holder ADD COLUMN role TEXT NOT NULL DEFAULT ''");
    db.transaction(() => {
      db.exec('DELETE FROM holder');
      db.prepare('INSERT INTO holder (pid, role) VALUES (?, ?)').run(process.pid, role);
    }).exclusive();
  } catch (err) {
    db.close();
    if (!isBusy(err)) throw err;
    const holder = parseHolder(await readFile(pidFile, 'utf8').catch(() => ''));
    const who = holder.pid !== undefined ? ` (pid ${holder.pid})` : '';
    const words = holder.role ? HOLDER_WORDS[holder.role] : 'another process';
    throw unavailable(`state directory ${root} is in use by ${words}${who}`, { cause: err });
  }
  await writeFile(pidFile, `${process.pid} ${role}\n`, { mode: 0o644 });
  return async () => {
    await rm(pidFile, { force: true });
    db.close();
  };
}
