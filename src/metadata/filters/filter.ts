// containerd's filter language: `<fieldpath>[<op><value>]` selectors joined by `,` (AND); several filter
// strings are ORed; the empty string and an empty list match everything. Parse errors carry containerd's
// exact text (`filters: parse error: [<before> >|<c>|< <after>]: <msg>: invalid argument`).
import { invalidArgument, isInvalidArgument } from '../../errors.ts';
import { unquote } from './quote.ts';
import { compileRe2, type Re2 } from './re2.ts';
import type { RegexRunner } from './regex-runner.ts';
import { EOF, Scanner, type Token } from './scanner.ts';

/** Gives a field's value for a path, or undefined when the object has no such field. */
export interface Adaptor {
  field(path: string[]): string | undefined;
}

export interface Filter {
  match(a: Adaptor): boolean;
}

export type Operator = '?' | '==' | '!=' | '~=';

export interface Selector {
  fieldpath: string[];
  operator: Operator;
  value: string;
}

class SelectorFilter {
  readonly selector: Selector;
  // undefined: not compiled yet; null: the pattern is invalid, so it never matches (containerd logs and
  // returns false rather than failing the request).
  private re: Re2 | null | undefined;
  /** `~=` results computed off the event loop (selectMatching), by text. */
  answers: Map<string, boolean> | undefined;

  constructor(selector: Selector) {
    this.selector = selector;
  }

  get isRegex(): boolean {
    return this.selector.operator === '~=';
  }

  match(a: Adaptor): boolean {
    const { fieldpath, operator, value } = this.selector;
    const got = a.field(fieldpath);
    switch (operator) {
      case '?':
        return got !== undefined;
      case '==':
        return got !== undefined && got === value;
      case '!=':
        // No presence check, as in containerd: an absent field compares as "".
        return (got ?? '') !== value;
      case '~=': {
        const known = this.answers?.get(got ?? '');
        if (known !== undefined) return known;
        if (this.re === undefined) {
          try {
            this.re = compileRe2(value);
          } catch {
            this.re = null;
          }
        }
        return this.re?.test(got ?? '') === true;
      }
    }
  }
}

/** Filter strings ORed, each a list of selectors ANDed. */
class Disjunction implements Filter {
  readonly groups: readonly (readonly SelectorFilter[])[];

  constructor(groups: readonly (readonly SelectorFilter[])[]) {
    this.groups = groups;
  }

  match(a: Adaptor): boolean {
    return this.groups.some((g) => g.every((s) => s.match(a)));
  }
}

export const ALWAYS: Filter = new Disjunction([[]]);

/** A parse failure; `message` is containerd's `filters: parse error: …` text without the errdefs suffix. */
export class FilterParseError extends Error {}

class Parser {
  private readonly input: string;
  private readonly sc: Scanner;

  constructor(input: string) {
    this.input = input;
    this.sc = new Scanner(input);
  }

  parse(): Selector[] {
    const out = [this.selector()];
    for (;;) {
      const ch = this.sc.peek();
      if (ch === 0x2c) {
        this.sc.scan();
        out.push(this.selector());
      } else if (ch === EOF) {
        return out;
      } else {
        throw this.error(this.sc.ppos, `unexpected input: ${ch < 0 ? '\ufffd' : String.fromCodePoint(ch)}`);
      }
    }
  }

  private selector(): Selector {
    const fieldpath = this.fieldpath();
    const next = this.sc.peek();
    if (next === 0x2c || next === EOF) return { fieldpath, operator: '?', value: '' };
    const operator = this.operator();
    return { fieldpath, operator, value: this.value(operator === '~=') };
  }

  private fieldpath(): string[] {
    const path = [this.field()];
    while (this.sc.peek() === 0x2e) {
      this.sc.scan();
      path.push(this.field());
    }
    return path;
  }

  private field(): string {
    const tok = this.sc.scan();
    switch (tok.kind) {
      case 'field':
        return tok.text;
      case 'quoted':
        return this.unquote(tok, false);
      case 'illegal':
        throw this.error(tok.pos, this.sc.err);
      default:
        throw this.error(tok.pos, 'expected field or quoted');
    }
  }

  private operator(): Operator {
    const tok = this.sc.scan();
    if (tok.kind === 'operator') {
      if (tok.text === '==' || tok.text === '!=' || tok.text === '~=') return tok.text;
      throw this.error(tok.pos, `unsupported operator "${tok.text}"`);
    }
    if (tok.kind === 'illegal') throw this.error(tok.pos, this.sc.err);
    throw this.error(tok.pos, 'expected an operator ("=="|"!="|"~=")');
  }

  private value(allowAltQuotes: boolean): string {
    const tok = this.sc.scan();
    switch (tok.kind) {
      case 'value':
      case 'field':
        return tok.text;
      case 'quoted':
        return this.unquote(tok, allowAltQuotes);
      case 'illegal':
        throw this.error(tok.pos, this.sc.err);
      default:
        throw this.error(tok.pos, 'expected value or quoted');
    }
  }

  private unquote(tok: Token, allowAlts: boolean): string {
    if (!allowAlts && tok.text[0] !== '"') throw this.error(tok.pos, 'invalid quote encountered');
    const s = unquote(tok.text);
    if (s === undefined) throw this.error(tok.pos, 'unquoting failed: quote syntax error');
    return s;
  }

  private error(pos: number, msg: string): FilterParseError {
    const input = this.input;
    if (pos < input.length) {
      const cp = input.codePointAt(pos)!;
      const width = cp > 0xffff ? 2 : 1;
      return new FilterParseError(
        `filters: parse error: [${input.slice(0, pos)} >|${input.slice(pos, pos + width)}|< ${input.slice(pos + width)}]: ${msg}`,
      );
    }
    return new FilterParseError(`filters: parse error: [${input}]: ${msg}`);
  }
}

/** Parses one filter string into its selectors (ANDed). The empty string gives no selectors. */
export function parseSelectors(filter: string): Selector[] {
  if (filter === '') return [];
  return new Parser(filter).parse();
}

const selectorsOf = (filter: string): SelectorFilter[] =>
  parseSelectors(filter).map((s) => new SelectorFilter(s));

/** One filter string; throws FilterParseError. */
export function parseFilter(filter: string): Filter {
  return new Disjunction([selectorsOf(filter)]);
}

/**
 * Several filter strings, ORed; `[]` or `['']` match everything. A syntax error throws InvalidArgument with
 * containerd's ParseAll message (`<parse error>: invalid argument`).
 */
export function parseFilters(filters: readonly string[]): Filter {
  if (filters.length === 0) return ALWAYS;
  const groups: SelectorFilter[][] = [];
  for (const f of filters) {
    try {
      groups.push(selectorsOf(f));
    } catch (err) {
      if (err instanceof FilterParseError) throw invalidArgument(`${err.message}: invalid argument`);
      throw err;
    }
  }
  return new Disjunction(groups);
}

const groupsOf = (filter: Filter) => (filter instanceof Disjunction ? filter.groups : []);

/** Whether a group's selectors other than its `~=` tests hold for `a`. */
const othersHold = (g: readonly SelectorFilter[], a: Adaptor): boolean =>
  g.every((s) => s.isRegex || s.match(a));

/** Whether matching with `filter` runs a `~=` test (which selectMatching sends off the event loop). */
export function hasRegex(filter: Filter): boolean {
  return groupsOf(filter).some((g) => g.some((s) => s.isRegex));
}

/** Whether `a` may match, deciding no `~=` test: some group's other selectors all hold. */
export function mayMatch(filter: Filter, a: Adaptor): boolean {
  return groupsOf(filter).some((g) => othersHold(g, a));
}

/**
 * The items that match, with every `~=` test run on the regex worker: a costly pattern then stalls only
 * its own request. Only texts that could decide a match are tested (their group's other selectors hold).
 */
export async function selectMatching<T>(
  filter: Filter,
  items: readonly T[],
  adaptorOf: (item: T) => Adaptor,
  runner: RegexRunner,
): Promise<T[]> {
  const groups = groupsOf(filter);
  const wanted = new Map<SelectorFilter, Set<string>>();
  for (const g of groups) for (const s of g) if (s.isRegex) wanted.set(s, new Set());
  if (wanted.size > 0) {
    for (const item of items) {
      const a = adaptorOf(item);
      for (const g of groups) {
        if (!othersHold(g, a)) continue;
        for (const s of g) if (s.isRegex) wanted.get(s)!.add(a.field(s.selector.fieldpath) ?? '');
      }
    }
    await Promise.all(
      [...wanted].map(async ([s, texts]) => {
        const list = [...texts];
        const { matches } = await runner.test(s.selector.value, list);
        s.answers = new Map(list.map((t, i) => [t, matches[i] === 1]));
      }),
    );
  }
  return items.filter((item) => filter.match(adaptorOf(item)));
}

/**
 * parseFilters as containerd's image and lease stores and its introspection service use it: they wrap
 * the error once more, so the message ends in `: invalid argument: invalid argument`. (Content and ingest
 * listings do not.)
 */
export function parseStoreFilters(filters: readonly string[]): Filter {
  try {
    return parseFilters(filters);
  } catch (err) {
    if (isInvalidArgument(err)) throw invalidArgument(`${err.message}: invalid argument`);
    throw err;
  }
}
