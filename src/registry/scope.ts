// Token scopes (`repository:<name>:pull,push`): built, merged and put in a canonical order so the
// same needs always make the same token cache key.

export type Action = 'pull' | 'push' | 'delete' | '*';

export function repositoryScope(name: string, actions: readonly Action[]): string {
  return `repository:${name}:${actions.join(',')}`;
}

/** Merges scopes on the same resource (actions united), drops malformed ones, sorts the result. */
export function mergeScopes(scopes: Iterable<string>): string[] {
  const byResource = new Map<string, Set<string>>();
  for (const scope of scopes) {
    const last = scope.lastIndexOf(':');
    const first = scope.indexOf(':');
    if (first <= 0 || last <= first) continue;
    const resource = scope.slice(0, last);
    const actions = byResource.get(resource) ?? new Set<string>();
    for (const a of scope.slice(last + 1).split(',')) if (a) actions.add(a);
    byResource.set(resource, actions);
  }
  return [...byResource].map(([resource, actions]) => `${resource}:${[...actions].sort().join(',')}`).sort();
}

/** Scopes from a challenge's `scope` parameter, which may hold several separated by spaces. */
export function splitScopeParam(value: string | undefined): string[] {
  return value ? value.split(' ').filter((s) => s.length > 0) : [];
}
