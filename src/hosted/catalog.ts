// The catalog of hosted repositories (`GET /v2/_catalog`), read from the image records' names
// (`<repo>:<tag>`, `<repo>@<digest>`) along their key, one seek per step: a page of n repositories costs
// about n seeks, whatever the number of tags and manifests, instead of a read of every record.
//
// Repositories are listed in byte order of their names. The records come in byte order of the names with
// `:` or `@` after the repository, which differs where one repository extends another by a character
// below `:` (`a-b:1` and `a/b:1` sort before `a:1`); such a shorter repository is found by asking for
// the prefixes of the repository the walk came to.
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

/** Above every character of a tag or digest: `<repo>@` and this bound the names of one repository. */
const PAST_RECORDS = '@\u007f';

/** Whether any record of `repo` exists. */
function exists(first: FirstName, repo: string): boolean {
  for (const sep of [':', '@']) {
    const n = first(`${repo}${sep}`, true);
    if (n?.startsWith(`${repo}${sep}`)) return true;
  }
  return false;
}

/** The repository that follows `after` in byte order, or undefined when none does. */
export function nextRepository(first: FirstName, after: string): string | undefined {
  let cursor = after;
  for (;;) {
    const name = first(cursor, false);
    if (name === undefined) return undefined;
    const repo = repositoryOf(name);
    if (repo === undefined || repo <= after) {
      // Not a record, or one of a repository listed already whose records sort after `after` (`a:1`
      // after `a-b`): past all of that repository's names, and always past this name.
      cursor = name;
      const past = `${repo}${PAST_RECORDS}`;
      if (repo !== undefined && past > name) cursor = past;
      continue;
    }
    // A repository between `after` and this one has no record before this one only when it is a prefix of
    // this one followed by a character below `:`: the shortest such that exists comes first.
    for (let i = 1; i < repo.length; i++) {
      const c = repo[i]!;
      if (c >= ':') continue;
      const prefix = repo.slice(0, i);
      if (prefix > after && isRepository(prefix) && exists(first, prefix)) return prefix;
    }
    return repo;
  }
}

export interface CatalogPage {
  repositories: string[];
  /** Whether more repositories follow the last one listed. */
  more: boolean;
}

/** Up to `n` repositories after `last` (from the first when undefined). */
export function catalogPage(first: FirstName, n: number, last?: string): CatalogPage {
  const repositories: string[] = [];
  let after = last ?? '';
  while (repositories.length < n) {
    const next = nextRepository(first, after);
    if (next === undefined) return { repositories, more: false };
    repositories.push(next);
    after = next;
  }
  return { repositories, more: n > 0 && nextRepository(first, after) !== undefined };
}
