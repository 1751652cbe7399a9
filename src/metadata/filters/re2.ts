// Go RE2 regular expressions for the filter `~=` operator. containerd compiles the value with Go's regexp
// (Perl flags) and does an unanchored search. JS RegExp differs in dialect (`$`, `\z`, `(?i)` mid-pattern,
// `\Q…\E`, POSIX classes, octal) and backtracks, so a client could stall the daemon with `(a+)+$`. This
// module parses the RE2 syntax itself, rejects what RE2 rejects (look-around, backreferences, `\Z`, …) and
// matches with a Thompson-NFA simulation: time is linear in text × program, never exponential.
// Capture groups are parsed but irrelevant: filters only ask "does it match anywhere".

export const MAX_PATTERN_LENGTH = 4096;
const MAX_REPEAT = 1000;
const MAX_PROGRAM = 5000;

export class Re2SyntaxError extends Error {}

export interface Re2 {
  test(text: string): boolean;
}

type Pred = (cp: number) => boolean;
type AssertKind = 'bot' | 'eot' | 'bol' | 'eol' | 'word' | 'nonword';
type Node =
  | { t: 'char'; pred: Pred }
  | { t: 'empty' }
  | { t: 'assert'; kind: AssertKind }
  | { t: 'cat'; items: Node[] }
  | { t: 'alt'; items: Node[] }
  | { t: 'rep'; node: Node; min: number; max: number };

interface Flags {
  i: boolean;
  m: boolean;
  s: boolean;
  U: boolean;
}

const NL = 0x0a;
const isAsciiWord = (c: number): boolean =>
  (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x5f;
const isAlnum = (c: number): boolean =>
  (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);

type Ranges = Array<[number, number]>;
const rangesPred =
  (r: Ranges): Pred =>
  (c) =>
    r.some(([lo, hi]) => c >= lo && c <= hi);

const PERL: Record<string, Ranges> = {
  d: [[0x30, 0x39]],
  s: [
    [0x09, 0x0a],
    [0x0c, 0x0d],
    [0x20, 0x20],
  ],
  w: [
    [0x30, 0x39],
    [0x41, 0x5a],
    [0x5f, 0x5f],
    [0x61, 0x7a],
  ],
};

const POSIX: Record<string, Ranges> = {
  alnum: [
    [0x30, 0x39],
    [0x41, 0x5a],
    [0x61, 0x7a],
  ],
  alpha: [
    [0x41, 0x5a],
    [0x61, 0x7a],
  ],
  ascii: [[0x00, 0x7f]],
  blank: [
    [0x09, 0x09],
    [0x20, 0x20],
  ],
  cntrl: [
    [0x00, 0x1f],
    [0x7f, 0x7f],
  ],
  digit: [[0x30, 0x39]],
  graph: [[0x21, 0x7e]],
  lower: [[0x61, 0x7a]],
  print: [[0x20, 0x7e]],
  punct: [
    [0x21, 0x2f],
    [0x3a, 0x40],
    [0x5b, 0x60],
    [0x7b, 0x7e],
  ],
  space: [
    [0x09, 0x0d],
    [0x20, 0x20],
  ],
  upper: [[0x41, 0x5a]],
  word: PERL.w!,
  xdigit: [
    [0x30, 0x39],
    [0x41, 0x46],
    [0x61, 0x66],
  ],
};

// Unicode general categories accepted by RE2 (`\pL`, `\p{Lu}`); any other name is taken as a script.
const CATEGORIES = new Set(
  'C Cc Cf Co Cs L Ll Lm Lo Lt Lu M Mc Me Mn N Nd Nl No P Pc Pd Pe Pf Pi Po Ps S Sc Sk Sm So Z Zl Zp Zs'.split(
    ' ',
  ),
);

function unicodeClass(name: string): Pred {
  if (name === 'Any') return () => true;
  if (!/^[A-Za-z_]+$/.test(name)) throw new Re2SyntaxError('invalid character class range');
  // A one-code-point test against a property escape cannot backtrack, so JS RegExp is safe here.
  let re: RegExp;
  try {
    re = new RegExp(CATEGORIES.has(name) ? `^\\p{gc=${name}}$` : `^\\p{Script=${name}}$`, 'u');
  } catch {
    throw new Re2SyntaxError('invalid character class range');
  }
  return (c) => re.test(String.fromCodePoint(c));
}

function single(s: string): number | undefined {
  const cp = s.codePointAt(0)!;
  return s.length === (cp > 0xffff ? 2 : 1) ? cp : undefined;
}

/** Simple case folding: the code points a case-insensitive match treats as equal to c. */
function foldSet(c: number): number[] {
  const s = String.fromCodePoint(c);
  const out = new Set<number>([c]);
  for (const v of [s.toLowerCase(), s.toUpperCase()]) {
    const cp = single(v);
    if (cp !== undefined) {
      out.add(cp);
      const back = single(String.fromCodePoint(cp).toLowerCase());
      if (back !== undefined) out.add(back);
    }
  }
  return [...out];
}

const foldPred =
  (p: Pred): Pred =>
  (c) =>
    foldSet(c).some(p);

class Parser {
  private readonly cps: number[];
  private i = 0;
  private flags: Flags = { i: false, m: false, s: false, U: false };

  constructor(pattern: string) {
    this.cps = Array.from(pattern, (ch) => ch.codePointAt(0)!);
  }

  parse(): Node {
    const node = this.alternation();
    if (this.i < this.cps.length) throw new Re2SyntaxError('unexpected )');
    return node;
  }

  private peek(k = 0): number {
    return this.i + k < this.cps.length ? this.cps[this.i + k]! : -1;
  }

  private alternation(): Node {
    const items = [this.concat()];
    while (this.peek() === 0x7c) {
      this.i++;
      items.push(this.concat());
    }
    return items.length === 1 ? items[0]! : { t: 'alt', items };
  }

  private concat(): Node {
    const items: Node[] = [];
    let last: 'none' | 'atom' | 'repeat' = 'none';
    for (;;) {
      const c = this.peek();
      if (c === -1 || c === 0x7c || c === 0x29) break;
      const rep = this.repeatOp();
      if (rep) {
        if (last === 'none') throw new Re2SyntaxError('missing argument to repetition operator');
        if (last === 'repeat') throw new Re2SyntaxError('invalid nested repetition operator');
        items.push({ t: 'rep', node: items.pop()!, min: rep.min, max: rep.max });
        if (this.peek() === 0x3f) this.i++; // lazy: same language
        last = 'repeat';
        continue;
      }
      const atom = this.atom();
      if (atom === undefined) {
        last = 'none'; // a flag group: nothing to repeat
        continue;
      }
      items.push(atom);
      last = 'atom';
    }
    if (items.length === 0) return { t: 'empty' };
    return items.length === 1 ? items[0]! : { t: 'cat', items };
  }

  /** Consumes `*`, `+`, `?` or a well-formed `{n}`, `{n,}`, `{n,m}`; a malformed `{` stays a literal. */
  private repeatOp(): { min: number; max: number } | undefined {
    const c = this.peek();
    const simple = c === 0x2a ? [0, -1] : c === 0x2b ? [1, -1] : c === 0x3f ? [0, 1] : undefined;
    if (simple) {
      this.i++;
      return { min: simple[0]!, max: simple[1]! };
    }
    if (c !== 0x7b) return undefined;
    let j = this.i + 1;
    const num = (): number | undefined => {
      const start = j;
      while (j < this.cps.length && this.cps[j]! >= 0x30 && this.cps[j]! <= 0x39) j++;
      if (j === start) return undefined;
      const s = String.fromCodePoint(...this.cps.slice(start, j));
      return s.length > 8 ? Number.POSITIVE_INFINITY : Number(s);
    };
    const min = num();
    if (min === undefined) return undefined;
    let max = min;
    if (this.cps[j] === 0x2c) {
      j++;
      max = this.cps[j] === 0x7d ? -1 : (num() ?? Number.NaN);
      if (Number.isNaN(max)) return undefined;
    }
    if (this.cps[j] !== 0x7d) return undefined;
    if (min > MAX_REPEAT || max > MAX_REPEAT || (max !== -1 && max < min)) {
      throw new Re2SyntaxError('invalid repeat count');
    }
    this.i = j + 1;
    return { min, max };
  }

  private atom(): Node | undefined {
    const c = this.cps[this.i]!;
    switch (c) {
      case 0x28:
        return this.group();
      case 0x5b:
        return { t: 'char', pred: this.withFold(this.charClass()) };
      case 0x2e: {
        this.i++;
        const s = this.flags.s;
        return { t: 'char', pred: s ? () => true : (x) => x !== NL };
      }
      case 0x5e:
        this.i++;
        return { t: 'assert', kind: this.flags.m ? 'bol' : 'bot' };
      case 0x24:
        this.i++;
        return { t: 'assert', kind: this.flags.m ? 'eol' : 'eot' };
      case 0x5c:
        return this.escapeAtom();
      default:
        this.i++;
        return this.literal(c);
    }
  }

  private literal(c: number): Node {
    if (!this.flags.i) return { t: 'char', pred: (x) => x === c };
    const set = foldSet(c);
    return { t: 'char', pred: (x) => set.includes(x) || foldSet(x).includes(c) };
  }

  private withFold(p: Pred): Pred {
    return this.flags.i ? foldPred(p) : p;
  }

  private group(): Node | undefined {
    this.i++; // (
    const saved = { ...this.flags };
    if (this.peek() === 0x3f) {
      this.i++;
      const c = this.peek();
      if (c === 0x50 || c === 0x3c) {
        // (?P<name>re) or (?<name>re)
        if (c === 0x50) this.i++;
        if (this.peek() !== 0x3c) throw new Re2SyntaxError('invalid named capture');
        this.i++;
        const start = this.i;
        while (this.peek() !== -1 && this.peek() !== 0x3e) this.i++;
        const name = this.cps.slice(start, this.i);
        if (this.peek() !== 0x3e || name.length === 0 || !name.every(isAsciiWord)) {
          throw new Re2SyntaxError('invalid named capture');
        }
        this.i++;
      } else {
        // Flags: (?flags) or (?flags:re)
        let negate = false;
        let sawFlag = false;
        const next = { ...this.flags };
        for (;;) {
          const f = this.peek();
          if (f === 0x69 || f === 0x6d || f === 0x73 || f === 0x55) {
            next[String.fromCodePoint(f) as keyof Flags] = !negate;
            sawFlag = true;
            this.i++;
          } else if (f === 0x2d && !negate) {
            negate = true;
            sawFlag = false;
            this.i++;
          } else if ((f === 0x29 || f === 0x3a) && (sawFlag || !negate)) {
            // `(?:re)` and `(?)` are fine; `(?-)` and `(?i-:re)` are not, as in Go.
            this.i++;
            if (f === 0x29) {
              // Applies to the rest of the enclosing group.
              this.flags = next;
              return undefined;
            }
            this.flags = next;
            break;
          } else {
            throw new Re2SyntaxError('invalid or unsupported Perl syntax');
          }
        }
      }
    }
    const inner = this.alternation();
    if (this.peek() !== 0x29) throw new Re2SyntaxError('missing closing )');
    this.i++;
    this.flags = saved;
    return inner;
  }

  private escapeAtom(): Node {
    this.i++; // backslash
    const c = this.peek();
    if (c === -1) throw new Re2SyntaxError('trailing backslash at end of expression');
    switch (c) {
      case 0x41: // \A
        this.i++;
        return { t: 'assert', kind: 'bot' };
      case 0x7a: // \z
        this.i++;
        return { t: 'assert', kind: 'eot' };
      case 0x62: // \b
        this.i++;
        return { t: 'assert', kind: 'word' };
      case 0x42: // \B
        this.i++;
        return { t: 'assert', kind: 'nonword' };
      case 0x51: {
        // \Q…\E: literal text
        this.i++;
        const items: Node[] = [];
        while (this.i < this.cps.length) {
          if (this.cps[this.i] === 0x5c && this.cps[this.i + 1] === 0x45) {
            this.i += 2;
            break;
          }
          items.push(this.literal(this.cps[this.i++]!));
        }
        return items.length === 1 ? items[0]! : { t: 'cat', items };
      }
    }
    const cls = this.classEscape();
    if (cls) return { t: 'char', pred: this.withFold(cls) };
    return this.literal(this.escapeChar());
  }

  /** `\d \D \s \S \w \W \pX \p{Name} \PX \P{^Name}` at this.i (just after the backslash). */
  private classEscape(): Pred | undefined {
    const c = this.peek();
    const lower = String.fromCodePoint(Math.max(c, 0)).toLowerCase();
    if (c === 0x64 || c === 0x44 || c === 0x73 || c === 0x53 || c === 0x77 || c === 0x57) {
      this.i++;
      const p = rangesPred(PERL[lower]!);
      return c === 0x44 || c === 0x53 || c === 0x57 ? (x) => !p(x) : p;
    }
    if (c === 0x70 || c === 0x50) {
      this.i++;
      let negate = c === 0x50;
      let name: string;
      if (this.peek() === 0x7b) {
        const start = this.i + 1;
        while (this.peek() !== -1 && this.peek() !== 0x7d) this.i++;
        if (this.peek() !== 0x7d) throw new Re2SyntaxError('invalid character class range');
        name = String.fromCodePoint(...this.cps.slice(start, this.i));
        this.i++;
        if (name.startsWith('^')) {
          negate = !negate;
          name = name.slice(1);
        }
      } else {
        const n = this.peek();
        if (n === -1) throw new Re2SyntaxError('invalid character class range');
        name = String.fromCodePoint(n);
        this.i++;
      }
      const p = unicodeClass(name);
      return negate ? (x) => !p(x) : p;
    }
    return undefined;
  }

  /** A single-character escape at this.i (just after the backslash). */
  private escapeChar(): number {
    const c = this.peek();
    if (c === -1) throw new Re2SyntaxError('trailing backslash at end of expression');
    this.i++;
    const isOct = (x: number): boolean => x >= 0x30 && x <= 0x37;
    if (c >= 0x31 && c <= 0x37 && !isOct(this.peek())) {
      throw new Re2SyntaxError('invalid escape sequence'); // a backreference
    }
    if (isOct(c)) {
      let v = c - 0x30;
      for (let k = 1; k < 3 && isOct(this.peek()); k++) v = v * 8 + (this.cps[this.i++]! - 0x30);
      return v;
    }
    switch (c) {
      case 0x61:
        return 7;
      case 0x66:
        return 12;
      case 0x6e:
        return 10;
      case 0x72:
        return 13;
      case 0x74:
        return 9;
      case 0x76:
        return 11;
      case 0x78: {
        const isHex = (x: number): boolean =>
          (x >= 0x30 && x <= 0x39) || (x >= 0x41 && x <= 0x46) || (x >= 0x61 && x <= 0x66);
        if (this.peek() === 0x7b) {
          this.i++;
          const start = this.i;
          while (isHex(this.peek())) this.i++;
          const hex = String.fromCodePoint(...this.cps.slice(start, this.i));
          if (this.peek() !== 0x7d || hex.length === 0) throw new Re2SyntaxError('invalid escape sequence');
          this.i++;
          const v = hex.length > 8 ? Number.POSITIVE_INFINITY : Number.parseInt(hex, 16);
          if (v > 0x10ffff) throw new Re2SyntaxError('invalid escape sequence');
          return v;
        }
        const a = this.peek();
        const b = this.peek(1);
        if (!isHex(a) || !isHex(b)) throw new Re2SyntaxError('invalid escape sequence');
        this.i += 2;
        return Number.parseInt(String.fromCodePoint(a, b), 16);
      }
    }
    if (c < 0x80 && !isAlnum(c)) return c; // escaped punctuation is itself
    throw new Re2SyntaxError('invalid escape sequence');
  }

  private charClass(): Pred {
    this.i++; // [
    let negate = false;
    if (this.peek() === 0x5e) {
      negate = true;
      this.i++;
    }
    const preds: Pred[] = [];
    const ranges: Ranges = [];
    let first = true;
    for (;;) {
      const c = this.peek();
      if (c === -1) throw new Re2SyntaxError('missing closing ]');
      if (c === 0x5d && !first) {
        this.i++;
        break;
      }
      first = false;
      if (c === 0x5b && this.peek(1) === 0x3a) {
        const posix = this.posixClass();
        if (posix) {
          preds.push(posix);
          continue;
        }
      }
      if (c === 0x5c) {
        this.i++;
        const cls = this.classEscape();
        if (cls) {
          preds.push(cls);
          continue;
        }
        this.i--;
      }
      const lo = this.classChar();
      let hi = lo;
      if (this.peek() === 0x2d && this.peek(1) !== 0x5d && this.peek(1) !== -1) {
        this.i++;
        hi = this.classChar();
        if (hi < lo) throw new Re2SyntaxError('invalid character class range');
      }
      ranges.push([lo, hi]);
    }
    const rp = rangesPred(ranges);
    const p: Pred = preds.length === 0 ? rp : (x) => rp(x) || preds.some((q) => q(x));
    return negate ? (x) => !p(x) : p;
  }

  private classChar(): number {
    const c = this.cps[this.i]!;
    if (c === 0x5c) {
      this.i++;
      return this.escapeChar();
    }
    this.i++;
    return c;
  }

  private posixClass(): Pred | undefined {
    // [:name:] or [:^name:]; a `[:` without a closing `:]` is literal text.
    let j = this.i + 2;
    while (j + 1 < this.cps.length && !(this.cps[j] === 0x3a && this.cps[j + 1] === 0x5d)) j++;
    if (j + 1 >= this.cps.length) return undefined;
    let name = String.fromCodePoint(...this.cps.slice(this.i + 2, j));
    const negate = name.startsWith('^');
    if (negate) name = name.slice(1);
    const r = Object.hasOwn(POSIX, name) ? POSIX[name] : undefined;
    if (!r) throw new Re2SyntaxError('invalid character class range');
    this.i = j + 2;
    const p = rangesPred(r);
    return negate ? (x) => !p(x) : p;
  }
}

type Inst =
  | { op: 'char'; pred: Pred }
  | { op: 'split'; x: number; y: number }
  | { op: 'jmp'; x: number }
  | { op: 'assert'; kind: AssertKind }
  | { op: 'match' };

function compile(node: Node): Inst[] {
  const prog: Inst[] = [];
  const push = (inst: Inst): number => {
    if (prog.length >= MAX_PROGRAM) throw new Re2SyntaxError('expression too large');
    prog.push(inst);
    return prog.length - 1;
  };
  const emit = (n: Node): void => {
    switch (n.t) {
      case 'char':
        push({ op: 'char', pred: n.pred });
        return;
      case 'empty':
        return;
      case 'assert':
        push({ op: 'assert', kind: n.kind });
        return;
      case 'cat':
        for (const item of n.items) emit(item);
        return;
      case 'alt': {
        const jumps: number[] = [];
        for (let k = 0; k < n.items.length - 1; k++) {
          const split = push({ op: 'split', x: 0, y: 0 });
          (prog[split] as { x: number }).x = prog.length;
          emit(n.items[k]!);
          jumps.push(push({ op: 'jmp', x: 0 }));
          (prog[split] as { y: number }).y = prog.length;
        }
        emit(n.items[n.items.length - 1]!);
        for (const j of jumps) (prog[j] as { x: number }).x = prog.length;
        return;
      }
      case 'rep': {
        for (let k = 0; k < n.min; k++) emit(n.node);
        if (n.max === -1) {
          const split = push({ op: 'split', x: 0, y: 0 });
          (prog[split] as { x: number }).x = prog.length;
          emit(n.node);
          push({ op: 'jmp', x: split });
          (prog[split] as { y: number }).y = prog.length;
          return;
        }
        const splits: number[] = [];
        for (let k = n.min; k < n.max; k++) {
          const split = push({ op: 'split', x: 0, y: 0 });
          (prog[split] as { x: number }).x = prog.length;
          splits.push(split);
          emit(n.node);
        }
        for (const s of splits) (prog[s] as { y: number }).y = prog.length;
        return;
      }
    }
  };
  emit(node);
  push({ op: 'match' });
  return prog;
}

function assertHolds(kind: AssertKind, prev: number, cur: number): boolean {
  switch (kind) {
    case 'bot':
      return prev === -1;
    case 'eot':
      return cur === -1;
    case 'bol':
      return prev === -1 || prev === NL;
    case 'eol':
      return cur === -1 || cur === NL;
    case 'word':
      return isAsciiWord(prev) !== isAsciiWord(cur);
    case 'nonword':
      return isAsciiWord(prev) === isAsciiWord(cur);
  }
}

/** Unanchored search: does the program match anywhere in text? */
function run(prog: Inst[], text: string): boolean {
  const cps = Array.from(text, (ch) => {
    const cp = ch.codePointAt(0)!;
    return cp >= 0xd800 && cp <= 0xdfff ? 0xfffd : cp;
  });
  const seen = new Int32Array(prog.length).fill(-1);
  let current: number[] = [];
  const stack: number[] = [];
  for (let pos = 0; pos <= cps.length; pos++) {
    const prev = pos > 0 ? cps[pos - 1]! : -1;
    const cur = pos < cps.length ? cps[pos]! : -1;
    const runnable: number[] = [];
    // Seeds: threads carried over, then a new thread starting here (unanchored search).
    stack.length = 0;
    stack.push(0);
    for (let k = current.length - 1; k >= 0; k--) stack.push(current[k]!);
    while (stack.length > 0) {
      const pc = stack.pop()!;
      if (seen[pc] === pos) continue;
      seen[pc] = pos;
      const inst = prog[pc]!;
      switch (inst.op) {
        case 'match':
          return true;
        case 'char':
          runnable.push(pc);
          break;
        case 'jmp':
          stack.push(inst.x);
          break;
        case 'split':
          stack.push(inst.y, inst.x);
          break;
        case 'assert':
          if (assertHolds(inst.kind, prev, cur)) stack.push(pc + 1);
          break;
      }
    }
    if (cur === -1) break;
    const next: number[] = [];
    for (const pc of runnable) {
      if ((prog[pc] as { pred: Pred }).pred(cur)) next.push(pc + 1);
    }
    current = next;
  }
  return false;
}

/** Compiles a Go RE2 pattern; throws Re2SyntaxError for what Go's regexp.Compile would reject. */
export function compileRe2(pattern: string): Re2 {
  if (pattern.length > MAX_PATTERN_LENGTH) throw new Re2SyntaxError('expression too large');
  const prog = compile(new Parser(pattern).parse());
  return { test: (text) => run(prog, text) };
}
