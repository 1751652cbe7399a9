// The synchronous file-system calls the applier makes, taking paths whose names may carry escaped bytes
// (byte-names.ts): each path goes to the kernel as the exact bytes the layer named.
import {
  chmodSync,
  futimesSync,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  type MakeDirectoryOptions,
  mkdirSync,
  openSync,
  readdirSync,
  readlinkSync,
  renameSync,
  rmSync,
  type Stats,
  symlinkSync,
  unlinkSync,
} from 'node:fs';
import { decodeName, fsPath } from '../byte-names.ts';

export const chmod = (p: string, mode: number): void => chmodSync(fsPath(p), mode);
export const lchown = (p: string, uid: number, gid: number): void => lchownSync(fsPath(p), uid, gid);
export const link = (target: string, p: string): void => linkSync(fsPath(target), fsPath(p));
/**
 * A time for Node's utimes calls, which take a negative number of seconds for "now": a numeric string
 * is taken as the number it spells, so a time before 1970 keeps its value (to a double's precision).
 */
const fsTime = (t: number | Date): number | string | Date => (typeof t === 'number' && t < 0 ? String(t) : t);
export const lutimes = (p: string, atime: number | Date, mtime: number | Date): void =>
  lutimesSync(fsPath(p), fsTime(atime), fsTime(mtime));
export const futimes = (fd: number, atime: number | Date, mtime: number | Date): void =>
  futimesSync(fd, fsTime(atime), fsTime(mtime));
export const mkdir = (p: string, opts?: MakeDirectoryOptions & { recursive?: false }): void => {
  mkdirSync(fsPath(p), opts);
};
export const open = (p: string, flags: number, mode?: number): number => openSync(fsPath(p), flags, mode);
export const rename = (from: string, to: string): void => renameSync(fsPath(from), fsPath(to));
export const rm = (p: string, opts: { recursive: boolean; force: boolean }): void => rmSync(fsPath(p), opts);
export const symlink = (target: string, p: string): void => symlinkSync(fsPath(target), fsPath(p));
export const unlink = (p: string): void => unlinkSync(fsPath(p));

export function lstat(p: string): Stats;
export function lstat(p: string, opts: { throwIfNoEntry: false }): Stats | undefined;
export function lstat(p: string, opts?: { throwIfNoEntry: false }): Stats | undefined {
  return opts ? lstatSync(fsPath(p), opts) : lstatSync(fsPath(p));
}

/** A symlink's target, as byte-names decodes it. */
export const readlink = (p: string): string => decodeName(readlinkSync(fsPath(p), { encoding: 'buffer' }));

/** A directory's names, each as byte-names decodes it. */
export function readdir(p: string): string[] {
  return readdirSync(fsPath(p), { encoding: 'buffer' }).map(decodeName);
}
