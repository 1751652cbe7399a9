// Go RE2 regular expressions for the filter `~=` operator, through re2js (a port of the RE2 family that
// Go's regexp belongs to). containerd compiles the value with Go's regexp (Perl flags: `$` is the end of
// text, `(?i)` folds case as Unicode does, so `(?i)k` matches U+212A) and does an unanchored search. JS
// RegExp differs in dialect and backtracks, so a client could stall the daemon with `(a+)+$`; re2js
// refuses what Go refuses (look-around, backreferences, repeat counts over 1000) and matches in time
// linear in text × program.
import { RE2JS, RE2JSException } from 're2js';

/** Longer patterns are refused (and so match nothing): a filter is a short expression. */
export const MAX_PATTERN_LENGTH = 4096;

export class Re2SyntaxError extends Error {}

export interface Re2 {
  test(text: string): boolean;
}

/** Compiles a Go RE2 pattern; throws Re2SyntaxError for what Go's regexp.Compile would reject. */
export function compileRe2(pattern: string): Re2 {
  if (pattern.length > MAX_PATTERN_LENGTH) throw new Re2SyntaxError('expression too large');
  try {
    return RE2JS.compile(pattern);
  } catch (err) {
    if (err instanceof RE2JSException) throw new Re2SyntaxError(err.message, { cause: err });
    throw err;
  }
}
