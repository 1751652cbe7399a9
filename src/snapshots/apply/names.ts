// Names inside a layer: cleaning tar entry names into root-relative paths, and recognising OCI whiteouts.
import { posix } from 'node:path';
import { invalidArgument } from '../../errors.ts';
import { nameBytes } from '../byte-names.ts';

export const WHITEOUT_PREFIX = '.wh.';
export const WHITEOUT_META_PREFIX = '.wh..wh.';
export const WHITEOUT_OPAQUE = '.wh..wh..opq';

/** Linux PATH_MAX and NAME_MAX, in bytes. */
export const MAX_PATH_BYTES = 4096;
export const MAX_NAME_BYTES = 255;

/**
 * A tar name as components relative to the root (empty for the root itself). Leading `/` and `./` are
 * dropped, as containerd treats absolute names as relative to the rootfs; a name that climbs above
 * the root with `..` is refused rather than clamped.
 */
export function cleanName(name: string, what = 'entry name'): string[] {
  if (name.includes('\0')) throw invalidArgument(`${what} ${JSON.stringify(name)} contains a NUL byte`);
  if (nameBytes(name) > MAX_PATH_BYTES) {
    throw invalidArgument(
      `${what} ${JSON.stringify(name.slice(0, 64))}… is longer than ${MAX_PATH_BYTES} bytes`,
    );
  }
  const normal = posix.normalize(`./${name}`);
  if (normal === '..' || normal.startsWith('../')) {
    throw invalidArgument(`${what} ${JSON.stringify(name)} escapes the root`);
  }
  const parts = normal.split('/').filter((p) => p !== '' && p !== '.');
  for (const p of parts) {
    if (nameBytes(p) > MAX_NAME_BYTES) {
      throw invalidArgument(
        `${what} ${JSON.stringify(name.slice(0, 64))}… has a component longer than ${MAX_NAME_BYTES} bytes`,
      );
    }
  }
  return parts;
}

export type WhiteoutKind =
  | { kind: 'none' }
  | { kind: 'opaque' }
  | { kind: 'whiteout'; target: string }
  /** Other `.wh..wh.` names (AUFS metadata such as `.wh..wh.plnk`): never written, never acted on. */
  | { kind: 'meta' };

/** What the last component of an entry name means to the OCI layer format. */
export function whiteoutOf(base: string): WhiteoutKind {
  if (!base.startsWith(WHITEOUT_PREFIX)) return { kind: 'none' };
  if (base === WHITEOUT_OPAQUE) return { kind: 'opaque' };
  if (base.startsWith(WHITEOUT_META_PREFIX)) return { kind: 'meta' };
  const target = base.slice(WHITEOUT_PREFIX.length);
  if (target === '' || target === '.' || target === '..') {
    throw invalidArgument(`whiteout ${JSON.stringify(base)} names no file in its directory`);
  }
  return { kind: 'whiteout', target };
}
