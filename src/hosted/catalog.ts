// The catalog of hosted repositories (`GET /v2/_catalog`), read from the image records' names
// (`<repo>:<tag>`, `<repo>@<digest>`) along their key, a step a repository whatever the number of its tags
// and manifests, instead of a read of every record. A step is a few seeks for most names, but one to three
// for each `-`, `.` and digit of the name it comes to (see childAfter), so a request's walk is paced and
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
    for (let i = 1; i < component.length; i++) {
      const c = component[i]!;
      if (c >= ':') continue;
      const prefix = component.slice(0, i);
      if (prefix > after && named(first, `${dir}${prefix}`, c < '/' ? '/:@' : ':@'))
        return { component: prefix, recorded: false };
    }
    return { component, recorded: end !== '/' };
  }
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
 * A page of 1000 repositories costs 3 to 8 lookups each where names have a few `-`, `.` or digits, so it
 * fits; names with many of them cost up to a lookup per such character each (a 255-character one about
 * 250), and get fewer repositories a page. At some 10 µs a lookup: under 0.1 s of work a request.
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
