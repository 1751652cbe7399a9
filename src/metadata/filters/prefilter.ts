// An SQL condition implied by a filter, so a listing reads only the rows that can match instead of every
// row of the namespace. It is a necessary condition, never the whole test: the rows it keeps still go
// through the filter itself, so results stay exactly the filter's (containerd's) semantics.
import type { Selector } from './filter.ts';

/** How an object's filter fields are stored. */
export interface PrefilterColumns {
  /** Fields stored verbatim in a column: field path (e.g. `['target', 'digest']`) and column. */
  readonly exact: ReadonlyArray<readonly [path: readonly string[], column: string]>;
  /**
   * Map fields (`labels.<key>`) by their first path element, stored as the JSON text `encodeMap` writes
   * (JSON.stringify of a string map): an entry then appears as `"<key>":"<value>"`, both JSON-quoted.
   */
  readonly jsonMaps: Readonly<Record<string, string>>;
}

export interface Prefilter {
  /** A boolean SQL expression over the columns, with `?` placeholders. */
  readonly sql: string;
  readonly params: readonly string[];
}

/** More ORed branches than this are not worth a statement of their own; the caller scans. */
const MAX_BRANCHES = 16;

/**
 * The condition for filters ORed together, each an AND of selectors (as parseSelectors gives them), or
 * undefined when some branch has no selector SQL can check (the caller then reads every row). `==`
 * on an exact column is an equality; `==` and presence on a map entry are substring tests on the
 * stored JSON, which every matching row passes (a few others may too; the filter drops them).
 */
export function prefilterOf(
  branches: readonly Selector[][],
  columns: PrefilterColumns,
): Prefilter | undefined {
  if (branches.length === 0 || branches.length > MAX_BRANCHES) return undefined;
  const ors: string[] = [];
  const params: string[] = [];
  for (const selectors of branches) {
    const ands: string[] = [];
    for (const s of selectors) {
      const cond = conditionOf(s, columns);
      if (!cond) continue;
      ands.push(cond.sql);
      params.push(cond.param);
    }
    // An empty branch (`''`) or one with nothing SQL can check matches rows the condition cannot name.
    if (ands.length === 0) return undefined;
    ors.push(ands.length === 1 ? ands[0]! : `(${ands.join(' AND ')})`);
  }
  return { sql: ors.length === 1 ? ors[0]! : `(${ors.join(' OR ')})`, params };
}

function conditionOf(s: Selector, columns: PrefilterColumns): { sql: string; param: string } | undefined {
  const [head, ...rest] = s.fieldpath;
  if (head === undefined) return undefined;
  const map = Object.hasOwn(columns.jsonMaps, head) ? columns.jsonMaps[head] : undefined;
  if (map !== undefined) {
    // `labels` alone names no entry and never matches `==` or presence; leave it to the filter.
    if (rest.length === 0) return undefined;
    const key = JSON.stringify(rest.join('.'));
    if (s.operator === '==')
      return { sql: `instr(${map}, ?) > 0`, param: `${key}:${JSON.stringify(s.value)}` };
    if (s.operator === '?') return { sql: `instr(${map}, ?) > 0`, param: `${key}:` };
    return undefined;
  }
  if (s.operator !== '==') return undefined;
  const fp = s.fieldpath;
  const found = columns.exact.find(
    ([path]) => path.length === fp.length && path.every((p, i) => p === fp[i]),
  );
  return found && { sql: `${found[1]} = ?`, param: s.value };
}
