// WWW-Authenticate challenges (RFC 7235 §4.1): one header may carry several challenges, each a scheme
// followed by either a token68 or a comma-separated list of `name=value` parameters. Commas therefore
// separate both parameters and challenges; a comma starts a new challenge when what follows it is a
// token not followed by `=`. The parser never throws: registries send odd headers, and a malformed
// challenge must not hide a well-formed one next to it.

export interface Challenge {
  /** Lowercased: `bearer`, `basic`, … */
  scheme: string;
  /** Parameter names lowercased; values unquoted. The first occurrence of a name wins. */
  params: Record<string, string>;
  token68?: string;
}

const TCHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;
const TOKEN68_CHAR = /[A-Za-z0-9\-._~+/]/;

class Scanner {
  readonly s: string;
  i = 0;
  constructor(s: string) {
    this.s = s;
  }
  get done(): boolean {
    return this.i >= this.s.length;
  }
  peek(): string {
    return this.s[this.i] ?? '';
  }
  skipSpace(): void {
    while (this.peek() === ' ' || this.peek() === '\t') this.i++;
  }
  skipSpaceAndCommas(): void {
    while (this.peek() === ' ' || this.peek() === '\t' || this.peek() === ',') this.i++;
  }
  token(): string {
    const start = this.i;
    while (!this.done && TCHAR.test(this.peek())) this.i++;
    return this.s.slice(start, this.i);
  }
  /** After the opening quote: reads to the closing quote, undoing backslash escapes. Lenient on EOF. */
  quoted(): string {
    let out = '';
    while (!this.done) {
      const c = this.s[this.i++]!;
      if (c === '"') return out;
      if (c === '\\' && !this.done) {
        out += this.s[this.i++]!;
      } else {
        out += c;
      }
    }
    return out;
  }
  /** Skips to the next comma outside quotes (error recovery). */
  skipToComma(): void {
    while (!this.done && this.peek() !== ',') {
      if (this.peek() === '"') {
        this.i++;
        this.quoted();
      } else {
        this.i++;
      }
    }
  }
}

/** Parses one or more WWW-Authenticate header values into the challenges they hold, in order. */
export function parseChallenges(header: string | readonly string[] | undefined): Challenge[] {
  if (header === undefined) return [];
  if (typeof header !== 'string') return header.flatMap((h) => parseChallenges(h));
  const sc = new Scanner(header);
  const out: Challenge[] = [];
  for (;;) {
    sc.skipSpaceAndCommas();
    if (sc.done) break;
    const scheme = sc.token();
    if (scheme === '') {
      sc.i++;
      sc.skipToComma();
      continue;
    }
    const challenge: Challenge = { scheme: scheme.toLowerCase(), params: {} };
    out.push(challenge);
    const beforeSpace = sc.i;
    sc.skipSpace();
    if (sc.done || sc.peek() === ',') continue;
    if (sc.i === beforeSpace) {
      // A scheme must be followed by a space; this is garbage glued to it.
      sc.skipToComma();
      continue;
    }
    const t68 = tryToken68(sc);
    if (t68 !== undefined) {
      challenge.token68 = t68;
      continue;
    }
    parseParams(sc, challenge);
  }
  return out;
}

function tryToken68(sc: Scanner): string | undefined {
  const start = sc.i;
  let j = start;
  while (j < sc.s.length && TOKEN68_CHAR.test(sc.s[j]!)) j++;
  if (j === start) return undefined;
  while (sc.s[j] === '=') j++;
  let k = j;
  while (sc.s[k] === ' ' || sc.s[k] === '\t') k++;
  // A token68 ends the challenge; `name=value` does not (the value follows the `=`).
  if (k < sc.s.length && sc.s[k] !== ',') return undefined;
  sc.i = k;
  return sc.s.slice(start, j);
}

function parseParams(sc: Scanner, challenge: Challenge): void {
  for (;;) {
    const name = sc.token();
    sc.skipSpace();
    if (name === '' || sc.peek() !== '=') {
      sc.skipToComma();
    } else {
      sc.i++;
      sc.skipSpace();
      let value: string;
      if (sc.peek() === '"') {
        sc.i++;
        value = sc.quoted();
      } else {
        value = sc.token();
      }
      const key = name.toLowerCase();
      if (!Object.hasOwn(challenge.params, key)) challenge.params[key] = value;
      sc.skipSpace();
      if (!sc.done && sc.peek() !== ',') sc.skipToComma();
    }
    if (sc.done) return;
    // At a comma: another parameter of this challenge, or the next challenge?
    const save = sc.i;
    sc.skipSpaceAndCommas();
    if (sc.done) return;
    const probe = sc.i;
    const next = sc.token();
    sc.skipSpace();
    const isParam = next !== '' && sc.peek() === '=';
    sc.i = isParam ? probe : save;
    if (!isParam) return;
  }
}

/** The first challenge with this scheme (case-insensitive), if any. */
export function findChallenge(challenges: readonly Challenge[], scheme: string): Challenge | undefined {
  const want = scheme.toLowerCase();
  return challenges.find((c) => c.scheme === want);
}

/** Renders a challenge as a header value; parameter values are always quoted. */
export function formatChallenge(c: Challenge): string {
  if (c.token68 !== undefined) return `${c.scheme} ${c.token68}`;
  const params = Object.entries(c.params).map(([k, v]) => `${k}="${v.replace(/["\\]/g, '\\$&')}"`);
  return params.length === 0 ? c.scheme : `${c.scheme} ${params.join(', ')}`;
}
