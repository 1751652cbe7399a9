// containerd's filter language: `<fieldpath>[<op><value>]` selectors joined by `,` (AND); several filter
// strings are ORed; the empty string and an empty list match everything. Parse errors carry containerd's
// exact text (`filters: parse error: [<before> >|<c>|< <after>]: <msg>: invalid argument`).
import { invalidArgument, isInvalidArgument } from '../../errors.ts';
import { unquote } from './quote.ts';
import { compileRe2, type Re2 } from './re2.ts';
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

export const ALWAYS: Filter = { match: () => true };

class SelectorFilter implements Filter {
  readonly selector: Selector;
  // undefined: not compiled yet; null: the pattern is invalid, so it never matches (containerd logs and
  // returns false rather than failing the request).
  private re: Re2 | null | undefined;

  constructor(selector: Selector) {
    this.selector = selector;
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

const all = (fs: Filter[]): Filter => ({ match: (a) => fs.every((f) => f.match(a)) });
const any = (fs: Filter[]): Filter => ({ match: (a) => fs.some((f) => f.match(a)) });

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

/** One filter string; throws FilterParseError. */
export function parseFilter(filter: string): Filter {
  const selectors = parseSelectors(filter);
  if (selectors.length === 0) return ALWAYS;
  return all(selectors.map((s) => new SelectorFilter(s)));
}

/**
 * Several filter strings, ORed; `[]` or `['']` match everything. A syntax error throws InvalidArgument with
 * containerd's ParseAll message (`<parse error>: invalid argument`).
 */
export function parseFilters(filters: readonly string[]): Filter {
  if (filters.length === 0) return ALWAYS;
  const parsed: Filter[] = [];
  for (const f of filters) {
    try {
      parsed.push(parseFilter(f));
    } catch (err) {
      if (err instanceof FilterParseError) throw invalidArgument(`${err.message}: invalid argument`);
      throw err;
    }
  }
  return parsed.length === 1 ? parsed[0]! : any(parsed);
}

/**
 * parseFilters as containerd's image and lease stores use it: they wrap the error once more, so the
 * message ends in `: invalid argument: invalid argument`. (Content and ingest listings do not.)
 */
export function parseStoreFilters(filters: readonly string[]): Filter {
  try {
    return parseFilters(filters);
  } catch (err) {
    if (isInvalidArgument(err)) throw invalidArgument(`${err.message}: invalid argument`);
    throw err;
  }
}
