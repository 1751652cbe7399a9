// Which files of a build context a build reads: those the context sends (.dockerignore applied with
// Docker's own rules, through @balena/dockerignore), narrowed to what COPY/ADD sources name when the
// Dockerfile says so plainly. A file is identified by its path, mode and content id.
import { createRequire } from 'node:module';

// The package is CommonJS whose types declare an ES default export; require gives the function itself.
const ignore = createRequire(import.meta.url)(
  '@balena/dockerignore',
) as typeof import('@balena/dockerignore').default;

/** One file of a context: a regular file, executable or symlink (directories are implied by paths). */
export interface ContextEntry {
  /** Relative to the context root, `/`-separated. */
  path: string;
  /** Git-style mode: 100644, 100755, 120000 (symlink), 160000 (submodule, sent as an empty dir). */
  mode: string;
  /** A content hash of the bytes (or the link target). */
  id: string;
}

/** Parses .dockerignore text into its patterns (comments and blank lines dropped). */
export function dockerignorePatterns(text: string): string[] {
  return text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
}

/** Go's filepath.Match for one path component: `*`, `?`, `[...]` (with `^`/`!` negation), `\` escapes. */
function segmentRegExp(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i] as string;
    if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '\\' && i + 1 < pattern.length) re += `\\${pattern[++i]}`;
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 2);
      if (end < 0) {
        re += '\\[';
        continue;
      }
      let body = pattern.slice(i + 1, end);
      if (body.startsWith('^') || body.startsWith('!')) body = `^${body.slice(1)}`;
      re += `[${body.replace(/\\/g, '\\\\')}]`;
      i = end;
    } else re += c.replace(/[.+^${}()|\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/**
 * A matcher for COPY/ADD sources: a file is read when the source matches the file itself or one of its
 * parent directories (a directory source copies everything under it).
 */
export function sourceMatcher(sources: readonly string[]): (path: string) => boolean {
  if (sources.some((s) => s === '')) return () => true;
  const compiled = sources.map((s) => s.split('/').map(segmentRegExp));
  return (path) => {
    const parts = path.split('/');
    return compiled.some(
      (segs) => segs.length <= parts.length && segs.every((re, i) => re.test(parts[i] as string)),
    );
  };
}

/**
 * Whether a source names a symlink or goes through one (`COPY link /x`, `COPY link/f /x`): buildah follows
 * such links, so what the source reads is wherever they point in the context.
 */
function sourcesFollowLinks(sources: readonly string[], entries: readonly ContextEntry[]): boolean {
  const compiled = sources.map((s) => s.split('/').map(segmentRegExp));
  return entries.some((e) => {
    if (e.mode !== '120000') return false;
    const parts = e.path.split('/');
    return compiled.some(
      (segs) => segs.length >= parts.length && parts.every((p, i) => (segs[i] as RegExp).test(p)),
    );
  });
}

export interface ContextSelection {
  /** .dockerignore patterns of the context, if it has one. */
  ignorePatterns?: readonly string[];
  /** COPY/ADD sources (see DockerfileAnalysis.contextSources). */
  sources: readonly string[] | 'all';
}

/** The entries a build reads, sorted by path. */
export function selectContextFiles(
  entries: readonly ContextEntry[],
  selection: ContextSelection,
): ContextEntry[] {
  const ignored = selection.ignorePatterns?.length ? ignore().add([...selection.ignorePatterns]) : undefined;
  const sources = selection.sources;
  // A followed link may point anywhere in the context: then the whole context counts.
  const read =
    sources === 'all' || sourcesFollowLinks(sources, entries) ? () => true : sourceMatcher(sources);
  return entries
    .filter((e) => !ignored?.ignores(e.path) && read(e.path))
    .sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}
