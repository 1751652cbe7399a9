// What identifies this daemon to clients: a UUID kept in the state directory (so restarts keep it, as
// containerd's does), its process and pid namespace, and the source revision it runs.
import { randomUUID } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Reads ROOT/server-uuid, creating it (atomically) on first start or if it is unreadable garbage. */
export async function serverUuid(root: string): Promise<string> {
  const path = join(root, 'server-uuid');
  try {
    const text = (await readFile(path, 'utf8')).trim();
    if (UUID_RE.test(text)) return text;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const uuid = randomUUID();
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    await writeFile(tmp, `${uuid}\n`, { mode: 0o644 });
    await rename(tmp, path);
  } finally {
    await rm(tmp, { force: true });
  }
  return uuid;
}

/** The inode of this process's pid namespace (what containerd reports as pidns), 0 if unknown. */
export function pidNamespace(): number {
  try {
    return statSync('/proc/self/ns/pid').ino;
  } catch {
    return 0;
  }
}

/**
 * The git commit of the checkout the daemon runs from: STRATA_REVISION if set, else read from .git
 * without running git; '' when not a checkout.
 */
export function sourceRevision(repoRoot = fileURLToPath(new URL('../../', import.meta.url))): string {
  const fromEnv = process.env.STRATA_REVISION;
  if (fromEnv) return fromEnv;
  try {
    const git = join(repoRoot, '.git');
    const head = readFileSync(join(git, 'HEAD'), 'utf8').trim();
    if (!head.startsWith('ref: ')) return /^[0-9a-f]{40}$/.test(head) ? head : '';
    const ref = head.slice(5);
    try {
      return readFileSync(join(git, ref), 'utf8').trim();
    } catch {
      const packed = readFileSync(join(git, 'packed-refs'), 'utf8');
      const line = packed.split('\n').find((l) => l.endsWith(` ${ref}`));
      return line ? line.slice(0, 40) : '';
    }
  } catch {
    return '';
  }
}
