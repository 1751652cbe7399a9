// Mounting and unmounting snapshot mounts with util-linux's mount(8) (Node has no mount API). Long lower
// directory lists are shortened as containerd's mount package does: when the options approach a page
// (the kernel copies at most one), the lowerdirs' common parent becomes mount's working directory and
// the lowerdirs are given relative to it.
import { execFile } from 'node:child_process';
import { mkdtemp, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { internal, messageOf, unimplemented } from '../errors.ts';
import type { Mount, SnapshotDirs } from './snapshotter.ts';

const run = promisify(execFile);
const TIMEOUT_MS = 30_000;
const PAGE = 4096;

/** The mount's options with a long lowerdir list made relative to a common directory, and that directory. */
export function compactLowerdirs(options: readonly string[]): { cwd?: string; options: string[] } {
  const size = options.reduce((n, o) => n + o.length + 1, 0);
  const at = options.findIndex((o) => o.startsWith('lowerdir='));
  if (size < PAGE - 512 || at < 0) return { options: [...options] };
  const dirs = options[at]!.slice('lowerdir='.length).split(':');
  if (dirs.length < 2) return { options: [...options] };
  let prefix = dirs[0]!;
  for (const d of dirs) {
    let i = 0;
    while (i < prefix.length && i < d.length && prefix[i] === d[i]) i++;
    prefix = prefix.slice(0, i);
  }
  // Back to a whole directory: the common prefix may end inside a name.
  const common = prefix.endsWith('/') ? prefix.slice(0, -1) : dirname(prefix);
  if (common === '' || common === '/') return { options: [...options] };
  const relative = dirs.map((d) => d.slice(common.length + 1));
  const rest = options.filter((_, i) => i !== at);
  return { cwd: common, options: [...rest, `lowerdir=${relative.join(':')}`] };
}

/** Mounts `m` on `target` (an existing directory). */
export async function mountAt(m: Mount, target: string): Promise<void> {
  const { cwd, options } = m.type === 'overlay' ? compactLowerdirs(m.options) : { options: m.options };
  const args = ['-t', m.type === 'bind' ? 'none' : m.type];
  if (options.length > 0) args.push('-o', options.join(','));
  args.push('--', m.source, target);
  try {
    await run('mount', args, { timeout: TIMEOUT_MS, ...(cwd ? { cwd } : {}) });
  } catch (err) {
    throw internal(`mount ${m.type} on ${target} failed: ${stderrOf(err)}`, { cause: err });
  }
}

/** Unmounts `target`, lazily when it is busy (an abandoned reader must not pin it). */
export async function unmount(target: string): Promise<void> {
  try {
    await run('umount', ['--', target], { timeout: TIMEOUT_MS });
  } catch {
    try {
      await run('umount', ['-l', '--', target], { timeout: TIMEOUT_MS });
    } catch (err) {
      throw internal(`umount ${target} failed: ${stderrOf(err)}`, { cause: err });
    }
  }
}

function stderrOf(err: unknown): string {
  const stderr = (err as { stderr?: unknown } | null)?.stderr;
  return typeof stderr === 'string' && stderr.trim() !== '' ? stderr.trim() : messageOf(err);
}

/**
 * Runs `fn` on one directory showing the whole tree of `dirs`: the directory itself for a single one,
 * else a read-only overlay of them mounted for the call.
 */
export function withTree<T>(dirs: SnapshotDirs, fn: (path: string) => Promise<T>): Promise<T> {
  const all = dirs.upper === undefined ? dirs.lowers : [dirs.upper, ...dirs.lowers];
  if (all.length === 1) return fn(all[0]!);
  return withMounted([{ type: 'overlay', source: 'overlay', options: [`lowerdir=${all.join(':')}`] }], fn);
}

/**
 * Runs `fn` on the tree `mounts` show: a bind mount's source directly (no privileges needed), an overlay
 * mounted on a temporary directory for the call.
 */
export async function withMounted<T>(mounts: readonly Mount[], fn: (path: string) => Promise<T>): Promise<T> {
  const m = mounts[0];
  if (mounts.length !== 1 || !m || !['bind', 'rbind', 'overlay'].includes(m.type)) {
    throw unimplemented(
      `only one bind or overlay mount can be read, the snapshotter gave ${mounts.map((x) => x.type).join(', ') || 'none'}`,
    );
  }
  if (m.type !== 'overlay') return fn(m.source);
  const target = await mkdtemp(join(tmpdir(), 'strata-mount-'));
  try {
    await mountAt(m, target);
    try {
      return await fn(target);
    } finally {
      await unmount(target);
    }
  } finally {
    await rmdir(target).catch(() => {});
  }
}
