// Resolving paths inside a root directory as if the process were chrooted into it: symlinks met on the
// way are followed, but absolute targets restart at the root and `..` stops at the root. The result is a
// list of real directory names, so a later operation on `root/<result>/<base>` crosses no symlink.
//
// The root may be an overlay's upper directory over lower ones. Then, as containerd applies layers onto
// overlayfs, names resolve inside the upper alone, and a missing parent is made in the upper with the mode,
// owner and times of the nearest lower's directory at that path (resolved inside that lower); a lower
// that has a non-directory there stops the search. So a layer writing through a symlink of a lower layer
// makes a directory where the link was, exactly as containerd's overlayfs unpack does.
//
// File-system calls are synchronous: the applier runs on a worker thread of its own, where a direct
// system call costs microseconds and a trip through libuv's thread pool many times that.
import type { Stats } from 'node:fs';
import { join } from 'node:path';
import { invalidArgument } from '../../errors.ts';
import { setXattr } from '../xattr.ts';
import { chmod, lchown, lstat, lutimes, mkdir, readlink, unlink } from './fs-names.ts';

/** As Linux's MAXSYMLINKS: more symlinks than this in one resolution is a loop. */
export const MAX_SYMLINKS = 40;

export interface ResolveOptions {
  /** Create missing directories (mode 0755, as containerd does for implicit parents). */
  create: boolean;
  /** Told about each directory created, as a root-relative path. */
  onCreate?: (rel: string) => void;
  /** Directories overlaid below `root`, nearest first. */
  lowers?: readonly string[];
  /** Marks a directory of the upper opaque (default setOpaque): the applier counts what it costs. */
  markOpaque?: (abs: string) => Promise<void>;
}

/** Marks an overlay upper directory opaque: the lowers' entries below it no longer show. */
export function setOpaque(abs: string): Promise<void> {
  return setXattr(abs, 'trusted.overlay.opaque', Buffer.from('y'));
}

/** overlayfs's whiteout: a character device 0/0. */
export function isWhiteout(st: Stats): boolean {
  return st.isCharacterDevice() && st.rdev === 0;
}

/**
 * The nearest lower's entry at `parts` (its parents resolved inside that lower, the last component
 * followed only when `follow`); undefined when no lower has one, or the nearest has a whiteout.
 */
export async function lookupLower(
  lowers: readonly string[],
  parts: readonly string[],
  follow = false,
): Promise<{ path: string; st: Stats } | undefined> {
  for (const lower of lowers) {
    let dir: string[] | undefined;
    try {
      dir = await resolveDirInRoot(lower, follow ? parts : parts.slice(0, -1), { create: false });
    } catch {
      return undefined; // a non-directory (or a loop) at that path: nothing to inherit
    }
    if (dir === undefined) continue;
    const path = follow ? join(lower, ...dir) : join(lower, ...dir, parts[parts.length - 1]!);
    let st: Stats;
    try {
      st = lstat(path);
    } catch (err) {
      if (codeOf(err) === 'ENOENT') continue;
      throw err;
    }
    return isWhiteout(st) ? undefined : { path, st };
  }
  return undefined;
}

function codeOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/**
 * Resolve `components` (already cleaned, no `..` above the root) to an existing directory inside `root`.
 * Returns its real root-relative components, or undefined when a directory is missing and `create` is false.
 * Throws InvalidArgument when a component is not a directory or symlinks loop.
 */
export async function resolveDirInRoot(
  root: string,
  components: readonly string[],
  opts: ResolveOptions,
): Promise<string[] | undefined> {
  const out: string[] = [];
  const queue = [...components];
  let links = 0;
  while (queue.length > 0) {
    const c = queue.shift()!;
    if (c === '' || c === '.') continue;
    if (c === '..') {
      out.pop();
      continue;
    }
    const abs = join(root, ...out, c);
    let st: Stats;
    try {
      st = lstat(abs);
    } catch (err) {
      if (codeOf(err) !== 'ENOENT') throw err;
      if (opts.lowers) {
        // containerd makes every missing parent in the upper, inheriting from the lowers.
        const lower = await lookupLower(opts.lowers, [...out, c], true);
        mkdir(abs);
        out.push(c);
        if (lower?.st.isDirectory()) {
          inherit(lower.st, abs);
          continue;
        }
      } else {
        if (!opts.create) return undefined;
        mkdir(abs);
        out.push(c);
      }
      chmod(abs, 0o755); // exact, whatever the umask
      opts.onCreate?.(out.join('/'));
      continue;
    }
    if (opts.lowers && isWhiteout(st)) {
      // This layer deleted the name earlier: a directory made there now must not show the lowers'.
      if (!opts.create) return undefined;
      unlink(abs);
      mkdir(abs);
      chmod(abs, 0o755);
      await (opts.markOpaque ?? setOpaque)(abs);
      out.push(c);
      opts.onCreate?.(out.join('/'));
      continue;
    }
    if (st.isSymbolicLink()) {
      if (++links > MAX_SYMLINKS) {
        throw invalidArgument(
          `too many levels of symbolic links resolving ${JSON.stringify(components.join('/'))}`,
        );
      }
      const target = readlink(abs);
      if (target.startsWith('/')) out.length = 0;
      queue.unshift(...target.split('/'));
      continue;
    }
    if (!st.isDirectory()) {
      throw invalidArgument(
        `${JSON.stringify([...out, c].join('/'))} is not a directory (resolving ${JSON.stringify(components.join('/'))})`,
      );
    }
    out.push(c);
  }
  return out;
}

/** A lower directory's mode, owner and times, for its new counterpart in the upper. */
function inherit(st: Stats, abs: string): void {
  lchown(abs, st.uid, st.gid);
  chmod(abs, st.mode & 0o7777);
  lutimes(abs, st.atime, st.mtime);
}
