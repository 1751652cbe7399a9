// Which files of a build context a build reads: those buildah sends (the ignore file applied as buildah
// 1.28 applies it), narrowed to what COPY/ADD sources name when the Dockerfile says so plainly. A file is
// identified by its path, mode and content id.
//
// A context can be hostile (100k files, thousands of patterns, patterns that make a backtracking regular
// expression run for minutes), and this runs on the event loop the whole builder shares, so its cost is
// bounded. Patterns without wildcards (most in real files) are looked up by the path's prefixes, whatever
// their number. The others run on RE2 (re2js: time linear in text and pattern; buildah matches with Go's
// RE2 too), are tried from the last one back, stopping at the first that decides, and are skipped when
// the path lacks a piece of text they require. An ignore file with more than MAX_WILDCARD_PATTERNS of
// them is refused; COPY/ADD sources with more count as reading the whole context (counting too much
// costs a rebuild at most). The files are gone through in slices with turns of the event loop between.
import { posix } from 'node:path';
import { invalidArgument, messageOf } from '../errors.ts';
import { inSlices } from './slices.ts';

/** One file of a context: a regular file, executable or symlink (directories are implied by paths). */
export interface ContextEntry {
  /** Relative to the context root, `/`-separated. */
  path: string;
  /** Git-style mode: 100644, 100755, 120000 (symlink), 160000 (submodule, sent as an empty dir). */
  mode: string;
  /** A content hash of the bytes (or the link target). */
  id: string;
}

/**
 * Wildcard patterns an ignore file may have, and wildcard COPY/ADD sources matched one by one: each may
 * cost a match per file of the context.
 */
export const MAX_WILDCARD_PATTERNS = 256;

/**
 * The lines of an ignore file that are patterns, as buildah 1.28 reads them (its ParseIgnore): lines
 * that are empty or start with `#` are dropped, and slashes at either end are taken off.
 */
export function dockerignorePatterns(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const p = line.replace(/^\/+|\/+$/g, '');
    if (p !== '') out.push(p);
  }
  return out;
}

interface Matcher {
  test(text: string): boolean;
}
type Compile = (source: string) => Matcher;

/** Go's regexp, loaded when a pattern needs it (contexts without wildcards never do). */
async function goRegexp(): Promise<Compile> {
  return (await import('../metadata/filters/re2.ts')).compileRe2;
}

// Go's unicode.IsSpace, which strings.TrimSpace trims (JavaScript's trim() leaves U+0085 and takes a
// byte-order mark, which buildah drops later and only at a pattern's start).
const GO_SPACE = '[\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]';
const GO_TRIM = new RegExp(`^${GO_SPACE}+|${GO_SPACE}+$`, 'g');

/** Go's filepath.Clean for `/`-separated paths. */
function clean(p: string): string {
  const n = posix.normalize(p);
  return n.length > 1 && n.endsWith('/') ? n.slice(0, -1) : n;
}

// A pattern with none of these is a plain path. Besides glob syntax, buildah leaves regular-expression
// characters as they are (`c+d` matches `ccd`, not `c+d`); `.` and `$` it escapes.
const WILDCARD = /[*?[\]\\^|+(){}]/;
const REGEXP_SYNTAX = /[\^|+(){}]/;

/**
 * A wildcard pattern as buildah 1.28 (containers/storage's fileutils) makes it a Go regular expression:
 * `**` any run of directories, `*` and `?` within one name, `\` escaping the next character, `.` and `$`
 * escaped, anything else as it is; anchored, and matching what is under what it names too. With it, the
 * longest run of text every match contains ('' when there is none to tell).
 */
function patternRegExp(pattern: string): { source: string; required: string } {
  let re = '^';
  // Alternation or repetition could make any text optional; after a class begins, RE2 says where it ends.
  let counting = !REGEXP_SYNTAX.test(pattern);
  let run = '';
  let required = '';
  const text = (t: string) => {
    if (!counting) return;
    run += t;
    if (run.length > required.length) required = run;
  };
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i] as string;
    if (c === '*' && pattern[i + 1] === '*') {
      i++;
      if (pattern[i + 1] === '/') i++;
      re += i + 1 === pattern.length ? '.*' : '(.*/)?';
      run = '';
    } else if (c === '*' || c === '?') {
      re += c === '*' ? '[^/]*' : '[^/]';
      run = '';
    } else if (c === '.' || c === '$') {
      re += `\\${c}`;
      text(c);
    } else if (c === '\\') {
      if (i + 1 === pattern.length) throw new Error('it ends in an escaping backslash');
      const next = pattern[++i] as string;
      re += `\\${next}`;
      // `\d`, `\pL` and the like are classes; an escaped punctuation character is itself.
      if (/[\p{L}\p{N}]/u.test(next)) run = '';
      else text(next);
    } else {
      re += c;
      if (c === '[' || c === ']') counting = false;
      else text(c);
    }
  }
  return { source: `${re}(/.*)?$`, required };
}

interface IgnoreRule {
  /** Position in the file: the last rule that matches a path decides. */
  index: number;
  /** A `!` rule: what it matches is sent after all. */
  keep: boolean;
}

interface WildcardRule extends IgnoreRule {
  re: Matcher;
  required: string;
}

/** An ignore file's patterns, compiled: which paths buildah leaves out of the context. */
export class IgnoreRules {
  /** Patterns that are plain paths: the last rule of each, by path. */
  private readonly literal = new Map<string, IgnoreRule>();
  /** The others, in file order. */
  private readonly wildcard: WildcardRule[] = [];

  private constructor() {}

  /**
   * Compiles `patterns` (see dockerignorePatterns) as buildah's NewPatternMatcher takes them; refuses what
   * it refuses (InvalidArgument: buildah would fail the build), and more than MAX_WILDCARD_PATTERNS.
   */
  static async compile(patterns: readonly string[]): Promise<IgnoreRules> {
    const rules = new IgnoreRules();
    const wildcards: Array<{ index: number; keep: boolean; pattern: string; line: string }> = [];
    patterns.forEach((line, index) => {
      let p = line.replace(GO_TRIM, '');
      if (p === '') return;
      p = clean(p);
      const keep = p.startsWith('!');
      if (keep) {
        if (p.length === 1)
          throw invalidArgument('the context’s ignore file has the pattern "!", which buildah refuses');
        p = clean(p.slice(1)).replace(/^\//, '');
      }
      // Go's text/scanner, which compiles the pattern, skips a byte-order mark at its start.
      if (p.startsWith('\uFEFF')) p = p.slice(1);
      if (WILDCARD.test(p)) wildcards.push({ index, keep, pattern: p, line });
      else rules.literal.set(p, { index, keep });
    });
    if (wildcards.length > MAX_WILDCARD_PATTERNS) {
      throw invalidArgument(
        `the context’s ignore file has ${wildcards.length} patterns with wildcards; this builder takes at most ${MAX_WILDCARD_PATTERNS}`,
      );
    }
    const compile = wildcards.length > 0 ? await goRegexp() : undefined;
    for (const w of wildcards) {
      try {
        const { source, required } = patternRegExp(w.pattern);
        rules.wildcard.push({ index: w.index, keep: w.keep, re: (compile as Compile)(source), required });
      } catch (err) {
        throw invalidArgument(
          `the context’s ignore file has a pattern buildah refuses, ${JSON.stringify(w.line)}: ${messageOf(err)}`,
        );
      }
    }
    return rules;
  }

  /** Whether buildah leaves `path` (a file of the context) out. */
  ignores(path: string): boolean {
    let last: IgnoreRule | undefined;
    // A rule names the path or a directory above it, as its regular expression would: what follows the
    // directory cannot hold a newline (Go's `.` stops there).
    const newline = path.lastIndexOf('\n');
    for (let end = path.length; end > newline; end = path.lastIndexOf('/', end - 1)) {
      const rule = this.literal.get(end === path.length ? path : path.slice(0, end));
      if (rule && (last === undefined || rule.index > last.index)) last = rule;
      if (end <= 0) break;
    }
    for (let i = this.wildcard.length - 1; i >= 0; i--) {
      const rule = this.wildcard[i] as WildcardRule;
      if (last !== undefined && rule.index < last.index) break;
      if (!path.includes(rule.required) || !rule.re.test(path)) continue;
      last = rule;
      break;
    }
    return last !== undefined && !last.keep;
  }
}

/** Go's filepath.Match for one path component, as an RE2 expression: `*`, `?`, `[...]` (`^`/`!` negate), `\` escapes. */
function segmentRegExp(pattern: string): string {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i] as string;
    if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '\\' && i + 1 < pattern.length) re += quote(pattern[++i] as string);
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
    } else re += quote(c);
  }
  return `^${re}$`;
}

/** A character as itself in a regular expression. */
function quote(c: string): string {
  return c.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

const GLOB = /[*?[\\]/;

/** The prefixes of `path` that end before a `/`, and `path` itself. */
function* prefixes(path: string): Generator<string> {
  yield path;
  for (let end = path.lastIndexOf('/'); end > 0; end = path.lastIndexOf('/', end - 1))
    yield path.slice(0, end);
}

/**
 * COPY/ADD sources, compiled: a file is read when a source matches the file itself or one of its parent
 * directories (a directory source copies everything under it).
 */
export class SourceRules {
  /** Sources without globs (matched by the path's prefixes). */
  private readonly literal = new Set<string>();
  /** Every prefix of those, themselves included (what a symlink on their way may be). */
  private readonly literalPrefixes = new Set<string>();
  /** The others, a matcher per component. */
  private readonly globs: Matcher[][] = [];

  private constructor() {}

  /** The rules, or undefined when the sources read the whole context (or are too many to try one by one). */
  static async compile(sources: readonly string[]): Promise<SourceRules | undefined> {
    if (sources.includes('')) return undefined;
    const globs = sources.filter((s) => GLOB.test(s));
    if (globs.length > MAX_WILDCARD_PATTERNS) return undefined;
    const rules = new SourceRules();
    for (const s of sources) {
      if (GLOB.test(s)) continue;
      rules.literal.add(s);
      for (const p of prefixes(s)) rules.literalPrefixes.add(p);
    }
    if (globs.length > 0) {
      const compile = await goRegexp();
      try {
        for (const s of globs) rules.globs.push(s.split('/').map((seg) => compile(segmentRegExp(seg))));
      } catch {
        // A source Go's filepath.Match refuses fails buildah's COPY; which files it reads, nobody knows.
        return undefined;
      }
    }
    return rules;
  }

  /** Whether a source names `path` or a directory above it. */
  reads(path: string): boolean {
    for (const p of prefixes(path)) if (this.literal.has(p)) return true;
    if (this.globs.length === 0) return false;
    const parts = path.split('/');
    return this.globs.some(
      (segs) => segs.length <= parts.length && segs.every((re, i) => re.test(parts[i] as string)),
    );
  }

  /**
   * Whether a source names the symlink `path` or goes through it (`COPY link /x`, `COPY link/f /x`):
   * buildah follows such links, so what the source reads is wherever they point in the context.
   */
  followsLink(path: string): boolean {
    if (this.literalPrefixes.has(path)) return true;
    if (this.globs.length === 0) return false;
    const parts = path.split('/');
    return this.globs.some(
      (segs) => segs.length >= parts.length && parts.every((p, i) => (segs[i] as Matcher).test(p)),
    );
  }
}

export interface ContextSelection {
  /** Ignore-file patterns of the context, if it has one (see dockerignorePatterns). */
  ignorePatterns?: readonly string[];
  /** COPY/ADD sources (see DockerfileAnalysis.contextSources). */
  sources: readonly string[] | 'all';
}

const SELECTING = 'selecting the context’s files';

const byPath = (a: ContextEntry, b: ContextEntry) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0);

/** The entries a build reads, sorted by path. `signal` ends the work between two slices. */
export async function selectContextFiles(
  entries: readonly ContextEntry[],
  selection: ContextSelection,
  signal?: AbortSignal,
): Promise<ContextEntry[]> {
  const ignored = selection.ignorePatterns?.length
    ? await IgnoreRules.compile(selection.ignorePatterns)
    : undefined;
  let sources = selection.sources === 'all' ? undefined : await SourceRules.compile(selection.sources);
  if (sources) {
    // A followed link may point anywhere in the context: then the whole context counts.
    const rules = sources;
    let follows = false;
    await inSlices(entries, signal, SELECTING, (e) => {
      follows = e.mode === '120000' && rules.followsLink(e.path);
      return !follows;
    });
    if (follows) sources = undefined;
  }
  const out: ContextEntry[] = [];
  let sorted = true;
  await inSlices(entries, signal, SELECTING, (e) => {
    if (ignored?.ignores(e.path) || (sources && !sources.reads(e.path))) return;
    const prev = out.at(-1);
    if (prev && byPath(prev, e) > 0) sorted = false;
    out.push(e);
  });
  // git lists a tree in this order already, mostly.
  return sorted ? out : out.sort(byPath);
}
