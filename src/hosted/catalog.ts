// The catalog of hosted repositories (`GET /v2/_catalog`), read from the image records' names
// (`<repo>:<tag>`, `<repo>@<digest>`) along their key, a step a repository whatever the number of its tags
// and manifests, instead of a read of every record. A step is a few seeks for most names; it asks about
// the shorter prefixes of the name it comes to that end before `-`, `.` or a digit from both ends
// (shortestNamedPrefix), but names can still be made that cost it many, so a request's walk is paced and
// capped (catalogPage).
//
// Repositories are listed as docker-registry 2.8 compares them (`last` included): component by component,
// so `/` sorts below every other character (`a`, `a/x`, `a/x/y`, `a/x-y`, `a-b`). The key is in byte
// order of whole names, where `a-b:1` and `a.b:1` come before `a/x:1`, and `a/x:1` before `a:1`; so a step
// walks one level of components at a time and asks for the names of the shorter components the byte order
// put after the one it came to.
import { MAX_NAME_LENGTH } from '../oci/reference.ts';
import { isRepository } from './names.ts';

/** The first image name not below `from` (`inclusive`) or above it, in byte order; undefined at the end. */
export type FirstName = (from: string, inclusive: boolean) => string | undefined;

/** The repository of a hosted record name, or undefined for a name that is none (made by other means). */
export function repositoryOf(name: string): string | undefined {
  const end = name.search(/[:@]/);
  if (end <= 0) return undefined;
  const repo = name.slice(0, end);
  return isRepository(repo) ? repo : undefined;
}

/** Above every character of a tag or digest: with the character that ends a component, bounds its names. */
const PAST_NAMES = '\u007f';

/**
 * Whether a name is `path` followed by one of `ends` (ascending among `/`, `:`, `@`): one seek unless a name
 * that is none of them sits in between.
 */
function named(first: FirstName, path: string, ends: string): boolean {
  let from = `${path}${ends[0]}`;
  for (;;) {
    const name = first(from, true);
    if (name === undefined || !name.startsWith(path)) return false;
    const c = name[path.length] ?? '';
    if (ends.includes(c)) return true;
    const next = [...ends].find((e) => e > c);
    if (next === undefined) return false;
    from = `${path}${next}`;
  }
}

/** Whether `repo` has a record of its own (a tag or a manifest). */
const hasRecords = (first: FirstName, repo: string) => named(first, repo, ':@');

interface Child {
  component: string;
  /** Known to have records of its own (the name that found it is one). */
  recorded: boolean;
}

/** The component at `at` of `name`, and the character that ends it (`/`, `:`, `@`; '' at the name's end). */
function componentAt(name: string, at: number): { component: string; end: string } {
  let i = at;
  while (i < name.length && !'/:@'.includes(name[i]!)) i++;
  return { component: name.slice(at, i), end: name[i] ?? '' };
}

/**
 * The smallest component, in byte order, above `after` ('' for the first) that some name has right after
 * `dir` (a repository path and `/`, or '' for the top), or undefined when there is none.
 */
function childAfter(first: FirstName, dir: string, after: string): Child | undefined {
  let cursor = `${dir}${after}`;
  for (;;) {
    const name = first(cursor, false);
    if (name === undefined || !name.startsWith(dir)) return undefined;
    const { component, end } = componentAt(name, dir.length);
    if (end === '' || component <= after) {
      // Past the names of that component that end as this one does (and always past this name).
      cursor = name;
      const past = `${dir}${component}${end}${PAST_NAMES}`;
      if (end !== '' && past > name) cursor = past;
      continue;
    }
    // Nothing between `after` and this component came first, but a shorter component it extends by a
    // character below `/` (or below `:`, for the records alone) has its names after this one's.
    const prefix = shortestNamedPrefix(first, dir, component, after);
    if (prefix !== undefined) return { component: prefix, recorded: false };
    return { component, recorded: end !== '/' };
  }
}

/**
 * The shortest prefix of `component` above `after` that ends before a character below `:` and that some
 * name has right after `dir`, followed by an end it may have there (`/`, `:`, `@`; `:`, `@` before a
 * digit, whose `/` names come before the component). Two walks meet: one asks of each prefix from the
 * shortest up (cheap when a short one has names); the other seeks from the longest down, where the names
 * come first in byte order, and a name it finds rules out every prefix longer than the part that name
 * shares with the component (cheap when few of them have names). Each takes a turn.
 */
function shortestNamedPrefix(
  first: FirstName,
  dir: string,
  component: string,
  after: string,
): string | undefined {
  const ends: string[] = [];
  for (let i = 0; i < component.length; i++) {
    const c = component[i]!;
    ends.push(i > 0 && c < ':' && component.slice(0, i) > after ? (c < '/' ? '/:@' : ':@') : '');
  }
  const longestBelow = (i: number) => {
    let j = i;
    while (j > 0 && ends[j] === '') j--;
    return j;
  };
  const shortestAbove = (i: number) => {
    let j = i + 1;
    while (j < component.length && ends[j] === '') j++;
    return j;
  };
  const seekFrom = (i: number) => `${dir}${component.slice(0, i)}${ends[i]![0]}`;
  // Prefixes below `low` have no names; of those above `high`, `best` is the shortest that has.
  let low = shortestAbove(0);
  let high = longestBelow(component.length - 1);
  let best: string | undefined;
  let from = seekFrom(high);
  while (high > 0 && low <= high) {
    if (named(first, `${dir}${component.slice(0, low)}`, ends[low]!)) return component.slice(0, low);
    low = shortestAbove(low);
    if (low > high) break;
    const name = first(from, true);
    if (name === undefined || !name.startsWith(dir)) break;
    let shared = 0;
    while (shared < component.length && component[shared] === name[dir.length + shared]) shared++;
    // A prefix longer than `shared` would have its names between `from` and this one.
    high = longestBelow(Math.min(high, shared));
    if (high === shared && high > 0) {
      const c = name[dir.length + high]!;
      const later = [...ends[high]!].find((e) => e > c);
      if (ends[high]!.includes(c)) {
        best = component.slice(0, high);
        high = longestBelow(high - 1);
      } else if (later !== undefined) {
        from = `${dir}${component.slice(0, high)}${later}`;
        continue;
      } else high = longestBelow(high - 1);
    }
    if (high > 0) from = seekFrom(high);
  }
  return best;
}

/** The first repository under `dir` whose component there is above `after`, in the catalog's order. */
function firstUnder(first: FirstName, dir: string, after: string): string | undefined {
  for (let child = childAfter(first, dir, after); child; child = childAfter(first, dir, child.component)) {
    const repo = `${dir}${child.component}`;
    // A name that is no repository has none below it either.
    if (!isRepository(repo)) continue;
    if (child.recorded || hasRecords(first, repo)) return repo;
    const below = firstUnder(first, `${repo}/`, '');
    if (below !== undefined) return below;
  }
  return undefined;
}

/** The repository that follows `last` in the catalog's order, or undefined when none does. */
export function nextRepository(first: FirstName, last: string): string | undefined {
  // A name is at most MAX_NAME_LENGTH characters, so its first one more settle where any name falls
  // against it; the rest of a long `last` (a request's) would only cost time, in its square below.
  const after = last.slice(0, MAX_NAME_LENGTH + 1);
  // Those below `after` come first, then those after each of its components, the last one first.
  if (isRepository(after)) {
    const below = firstUnder(first, `${after}/`, '');
    if (below !== undefined) return below;
  }
  const parts = after.split('/');
  for (let i = parts.length - 1; i >= 0; i--) {
    const parent = parts.slice(0, i).join('/');
    if (i > 0 && !isRepository(parent)) continue;
    const found = firstUnder(first, i > 0 ? `${parent}/` : '', parts[i]!);
    if (found !== undefined) return found;
  }
  return undefined;
}

export interface CatalogPage {
  repositories: string[];
  /** Whether more repositories may follow the last one listed (a page cut short says so unasked). */
  more: boolean;
}

/** How one catalog request spends its lookups; tests give their own. */
export interface CatalogPacing {
  /**
   * Lookups after which the page ends with what it has (at least one repository), its Link going on from
   * there: a name set made to cost many lookups a step costs its pusher more requests, not everyone time.
   */
  budget: number;
  /** Lookups between two turns of the event loop, which the step under way may overrun. */
  slice: number;
  /** Gives the event loop a turn between slices; throws to stop the walk (its request is gone). */
  pause: () => Promise<void>;
}

/**
 * A page of 1000 repositories costs 3 to 7 lookups each where names have `-`, `.` or digits (even 255
 * characters of them), so it fits; names made to cost more get fewer repositories a page. At some 10 µs a
 * lookup: about 0.1 s of work a request at most.
 */
export const CATALOG_LOOKUPS = 10_000;
/** About 4 ms a slice, the builder's; one step, bounded by a name's length, may add as much again. */
export const CATALOG_SLICE_LOOKUPS = 500;

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Up to `n` repositories after `last` (from the first when undefined), fewer once the budget of lookups is
 * spent. Each step is a synchronous walk; between them, every slice of lookups, others get the event loop.
 */
export async function catalogPage(
  first: FirstName,
  n: number,
  last?: string,
  pacing: Partial<CatalogPacing> = {},
): Promise<CatalogPage> {
  const { budget = CATALOG_LOOKUPS, slice = CATALOG_SLICE_LOOKUPS, pause = turn } = pacing;
  let lookups = 0;
  const counted: FirstName = (from, inclusive) => {
    lookups++;
    return first(from, inclusive);
  };
  const repositories: string[] = [];
  if (n <= 0) return { repositories, more: false };
  let after = last ?? '';
  let sliceStart = 0;
  for (;;) {
    if (lookups - sliceStart >= slice) {
      await pause();
      sliceStart = lookups;
    }
    // The first step always runs, so that every page moves its Link on.
    if (repositories.length > 0 && lookups >= budget) return { repositories, more: true };
    const next = nextRepository(counted, after);
    if (next === undefined) return { repositories, more: false };
    if (repositories.length === n) return { repositories, more: true };
    repositories.push(next);
    after = next;
  }
}
