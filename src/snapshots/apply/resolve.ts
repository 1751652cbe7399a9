// Resolving paths inside a root directory as if the process were chrooted into it: symlinks met on the
// way are followed, but absolute targets restart at the root and `..` stops at the root. The result is a
// list of real directory names, so a later operation on `root/<result>/<base>` crosses no symlink.
import { chmod, lstat, mkdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { invalidArgument } from '../../errors.ts';

/** As Linux's MAXSYMLINKS: more symlinks than this in one resolution is a loop. */
export const MAX_SYMLINKS = 40;

export interface ResolveOptions {
  /** Create missing directories (mode 0755, as containerd does for implicit parents). */
  create: boolean;
  /** Told about each directory created, as a root-relative path. */
  onCreate?: (rel: string) => void;
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
    let st: Awaited<ReturnType<typeof lstat>>;
    try {
      st = await lstat(abs);
    } catch (err) {
      if (codeOf(err) !== 'ENOENT') throw err;
      if (!opts.create) return undefined;
      await mkdir(abs);
      await chmod(abs, 0o755); // exact, whatever the umask
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
      const target = await readlink(abs);
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
