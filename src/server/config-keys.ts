// The keys a configuration file accepts, as a tree (null: a leaf). The parsers check unknown keys against
// it, and the configuration reference is tested against it, so neither can drift from the other. A key
// whose value is a list of maps (`specProviders.remote`) holds the keys of each entry.

export type KeyTree = { readonly [key: string]: KeyTree | null };

/** Every key as a dotted path (`tls.cert`), each parent before its children. */
export function keyPaths(tree: KeyTree, prefix = ''): string[] {
  return Object.entries(tree).flatMap(([k, sub]) => {
    const path = `${prefix}${k}`;
    return sub === null ? [path] : [path, ...keyPaths(sub, `${path}.`)];
  });
}

/** The keys of `o` that `tree` does not name. */
export function unknownKeys(o: object, tree: KeyTree): string[] {
  return Object.keys(o).filter((k) => !Object.hasOwn(tree, k));
}
