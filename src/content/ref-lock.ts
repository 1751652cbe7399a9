// One writer per ref, across processes. A lock is a file created atomically (link of a complete temp file,
// which fails if the name exists) that names its owner: boot id, pid and the process start time, so a
// lock left by a dead process, or by a pid that was reused since, is recognised as stale and reclaimed.
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  fstatSync,
  linkSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { unavailable } from '../errors.ts';
import { isEEXIST, isENOENT, tmpName } from './fs-util.ts';

export interface LockOwner {
  pid: number;
  /** Process start time in clock ticks since boot (from /proc), when known. */
  start?: number;
  boot?: string;
  /** When the lock was taken, ms since the epoch. */
  since: number;
  token: string;
}

function readProc(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

interface ProcStat {
  state: string;
  start: number;
}

function procStat(pid: number): ProcStat | undefined {
  const text = readProc(`/proc/${pid}/stat`);
  if (text === undefined) return undefined;
  // The command name (field 2) may contain spaces and parentheses; the fields after it do not.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const start = Number(fields[19]);
  return { state: fields[0] ?? '', start };
}

const BOOT_ID = readProc('/proc/sys/kernel/random/boot_id')?.trim();
const SELF_START = procStat(process.pid)?.start;

/** Whether the process that took the lock may still be running. */
export function ownerAlive(owner: LockOwner): boolean {
  if (owner.pid === process.pid) return owner.start === undefined || owner.start === SELF_START;
  if (owner.boot !== undefined && BOOT_ID !== undefined && owner.boot !== BOOT_ID) return false;
  try {
    process.kill(owner.pid, 0);
  } catch (err) {
    // EPERM: it exists but belongs to someone else.
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
  }
  const st = procStat(owner.pid);
  if (st === undefined) return BOOT_ID === undefined; // no /proc: trust kill(0)
  if (st.state === 'Z' || st.state === 'X') return false; // killed, not yet reaped
  return owner.start === undefined || owner.start === st.start;
}

function parseOwner(text: string): LockOwner | undefined {
  try {
    const v = JSON.parse(text) as Partial<LockOwner>;
    if (!Number.isSafeInteger(v.pid) || typeof v.since !== 'number' || typeof v.token !== 'string') {
      return undefined;
    }
    return v as LockOwner;
  } catch {
    return undefined;
  }
}

/** Reads a lock file and its inode from one open file, so both describe the same lock. */
function readLock(path: string): { owner: LockOwner | undefined; ino: number } | undefined {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    if (isENOENT(err)) return undefined;
    throw err;
  }
  try {
    const st = fstatSync(fd);
    const text = readFileSync(fd, 'utf8');
    return { owner: parseOwner(text), ino: st.ino };
  } finally {
    closeSync(fd);
  }
}

function formatDuration(ms: number): string {
  return ms < 1000 ? `${Math.max(0, Math.round(ms))}ms` : `${(ms / 1000).toFixed(3)}s`;
}

/**
 * Tokens of the locks this process holds. A lock file naming this process with any other token is one
 * whose release failed to remove it (EIO, EROFS): stale, though its owner is alive.
 */
const HELD = new Set<string>();

/** Whether the lock may still be held: by a live process, and when by this one, not released. */
export function lockHeld(owner: LockOwner): boolean {
  if (owner.pid === process.pid && !HELD.has(owner.token)) return false;
  return ownerAlive(owner);
}

export class RefLock {
  readonly path: string;
  readonly owner: LockOwner;
  private released = false;
  constructor(path: string, owner: LockOwner) {
    this.path = path;
    this.owner = owner;
  }

  /** Removes the lock if it is still ours; safe to call twice. */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    HELD.delete(this.owner.token);
    const cur = readLock(this.path);
    if (cur?.owner?.token === this.owner.token) rmSync(this.path, { force: true });
  }
}

const ATTEMPTS = 4;

/**
 * Takes the lock for `ref` at `path`, or throws Unavailable naming how long the live holder has had it.
 * `tmpDir` must be on the same filesystem as `path`.
 */
export async function acquireRefLock(path: string, ref: string, tmpDir: string): Promise<RefLock> {
  const owner: LockOwner = {
    pid: process.pid,
    since: Date.now(),
    token: randomBytes(12).toString('hex'),
  };
  if (SELF_START !== undefined) owner.start = SELF_START;
  if (BOOT_ID !== undefined) owner.boot = BOOT_ID;
  const tmp = tmpName(tmpDir, 'lock');
  writeFileSync(tmp, JSON.stringify(owner));
  try {
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      try {
        linkSync(tmp, path);
        HELD.add(owner.token);
        return new RefLock(path, owner);
      } catch (err) {
        if (!isEEXIST(err)) throw err;
      }
      const cur = readLock(path);
      if (cur === undefined) continue; // released meanwhile
      if (cur.owner !== undefined && lockHeld(cur.owner)) throw lockedError(ref, cur.owner);
      reclaim(path, cur.ino, tmpDir);
    }
    throw unavailable(`ref ${ref} locked: lock contended, try again: unavailable`);
  } finally {
    rmSync(tmp, { force: true });
  }
}

function lockedError(ref: string, owner: LockOwner): Error {
  const since = new Date(owner.since);
  return unavailable(
    `ref ${ref} locked for ${formatDuration(Date.now() - owner.since)} (since ${since.toISOString()}): unavailable`,
  );
}

/**
 * Removes the stale lock with inode `staleIno`. Moving it aside first (atomic) and checking the inode of
 * what was moved means a fresh lock another process took meanwhile is put back rather than deleted.
 */
function reclaim(path: string, staleIno: number, tmpDir: string): void {
  const aside = tmpName(tmpDir, 'stale-lock');
  try {
    renameSync(path, aside);
  } catch (err) {
    if (isENOENT(err)) return;
    throw err;
  }
  try {
    const st = statSync(aside);
    if (st.ino !== staleIno) {
      try {
        linkSync(aside, path);
      } catch (err) {
        if (!isEEXIST(err)) throw err;
      }
    }
  } finally {
    try {
      unlinkSync(aside);
    } catch {}
  }
}
