// Tokenizer of containerd's filter language. It mirrors the token boundaries, positions and error texts
// of containerd's scanner, because parse errors quote the input around the failing position and clients
// (and our conformance tests) compare those strings.

export const EOF = -1;
export const ILLEGAL = -2;

export type TokenKind = 'eof' | 'quoted' | 'value' | 'field' | 'separator' | 'operator' | 'illegal' | 'char';

export interface Token {
  /** Index (UTF-16 code units) where the token starts; the input length for EOF. */
  pos: number;
  kind: TokenKind;
  text: string;
}

export class Scanner {
  readonly input: string;
  /** Start of the current code point. */
  pos = 0;
  /** End of the current code point (start of the next one). */
  ppos = 0;
  /** After an operator the next token is a value, which may hold punctuation. */
  private valueMode = false;
  /** The first error seen; sticky, as in containerd (a later illegal token reports it). */
  err = '';

  constructor(input: string) {
    this.input = input;
  }

  /** Next code point, EOF, or ILLEGAL (NUL, lone surrogate, U+FFFD). */
  next(): number {
    if (this.pos >= this.input.length) return EOF;
    this.pos = this.ppos;
    if (this.ppos >= this.input.length) return EOF;
    const cp = this.input.codePointAt(this.ppos)!;
    this.ppos += cp > 0xffff ? 2 : 1;
    // Invalid UTF-8 decodes to U+FFFD in Go, and so does a literal U+FFFD; lone surrogates are the JS
    // string's equivalent of invalid UTF-8.
    if (cp === 0xfffd || (cp >= 0xd800 && cp <= 0xdfff)) {
      this.error('rune error');
      return ILLEGAL;
    }
    if (cp === 0) {
      this.error('unexpected null');
      return ILLEGAL;
    }
    return cp;
  }

  peek(): number {
    const pos = this.pos;
    const ppos = this.ppos;
    const ch = this.next();
    this.pos = pos;
    this.ppos = ppos;
    return ch;
  }

  scan(): Token {
    let ch = this.next();
    let pos = this.pos;
    for (;;) {
      if (ch === EOF) return { pos: this.pos, kind: 'eof', text: '' };
      if (ch === ILLEGAL) return { pos: this.pos, kind: 'illegal', text: '' };
      if (isQuoteRune(ch)) {
        const ok = this.scanQuoted(ch);
        return { pos, kind: ok ? 'quoted' : 'illegal', text: this.input.slice(pos, this.ppos) };
      }
      if (isSeparatorRune(ch)) {
        this.valueMode = false;
        return { pos, kind: 'separator', text: this.input.slice(pos, this.ppos) };
      }
      if (isOperatorRune(ch)) {
        while (isOperatorRune(this.peek())) this.next();
        this.valueMode = true;
        return { pos, kind: 'operator', text: this.input.slice(pos, this.ppos) };
      }
      if (isSpace(ch)) {
        ch = this.next();
        pos = this.pos;
        continue;
      }
      if (this.valueMode) {
        while (isValueRune(this.peek())) this.next();
        this.valueMode = false;
        return { pos, kind: 'value', text: this.input.slice(pos, this.ppos) };
      }
      if (isFieldRune(ch)) {
        while (isFieldRune(this.peek())) this.next();
        return { pos, kind: 'field', text: this.input.slice(pos, this.ppos) };
      }
      return { pos: this.pos, kind: 'char', text: String.fromCodePoint(ch) };
    }
  }

  private scanQuoted(quote: number): boolean {
    let illegal = false;
    let ch = this.next();
    while (ch !== quote) {
      if (ch === 0x0a || ch < 0) {
        this.error('quoted literal not terminated');
        return false;
      }
      if (ch === 0x5c) {
        const r = this.scanEscape(quote);
        ch = r.ch;
        if (!r.legal) illegal = true;
      } else {
        ch = this.next();
      }
    }
    return !illegal;
  }

  private scanEscape(quote: number): { ch: number; legal: boolean } {
    const ch = this.next();
    switch (ch) {
      case 0x61: // a b f n r t v \ and the quote itself
      case 0x62:
      case 0x66:
      case 0x6e:
      case 0x72:
      case 0x74:
      case 0x76:
      case 0x5c:
      case quote:
        return { ch: this.next(), legal: true };
      case 0x78: // x
        return this.scanDigits(this.next(), 16, 2);
      case 0x75: // u
        return this.scanDigits(this.next(), 16, 4);
      case 0x55: // U
        return this.scanDigits(this.next(), 16, 8);
      default:
        if (ch >= 0x30 && ch <= 0x37) return this.scanDigits(ch, 8, 3);
        this.error('illegal escape sequence');
        return { ch, legal: false };
    }
  }

  private scanDigits(first: number, base: number, n: number): { ch: number; legal: boolean } {
    let ch = first;
    let left = n;
    while (left > 0 && digitVal(ch) < base) {
      ch = this.next();
      left--;
    }
    if (left > 0) {
      this.error('illegal numeric escape sequence');
      return { ch, legal: false };
    }
    return { ch, legal: true };
  }

  private error(msg: string): void {
    if (this.err === '') this.err = msg;
  }
}

function digitVal(ch: number): number {
  if (ch >= 0x30 && ch <= 0x39) return ch - 0x30;
  if (ch >= 0x61 && ch <= 0x66) return ch - 0x61 + 10;
  if (ch >= 0x41 && ch <= 0x46) return ch - 0x41 + 10;
  return 16;
}

export function isFieldRune(ch: number): boolean {
  return (
    ch === 0x5f || (ch >= 0x41 && ch <= 0x5a) || (ch >= 0x61 && ch <= 0x7a) || (ch >= 0x30 && ch <= 0x39)
  );
}

const isOperatorRune = (ch: number): boolean => ch === 0x3d || ch === 0x21 || ch === 0x7e; // = ! ~
const isQuoteRune = (ch: number): boolean => ch === 0x2f || ch === 0x7c || ch === 0x22; // / | "
const isSeparatorRune = (ch: number): boolean => ch === 0x2c || ch === 0x2e; // , .

// Go's unicode.IsSpace: the Latin-1 spaces plus the White_Space property (JS \s adds U+FEFF, Go does not).
const SPACE_RE = /^[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]$/u;
export function isSpace(ch: number): boolean {
  return ch >= 0 && SPACE_RE.test(String.fromCodePoint(ch));
}

// Go's unicode.IsGraphic (letters, marks, numbers, punctuation, symbols, Zs), minus spaces and ','.
const GRAPHIC_RE = /^[\p{L}\p{M}\p{N}\p{P}\p{S}\p{Zs}]$/u;
function isValueRune(ch: number): boolean {
  if (ch < 0 || ch === 0x2c || isSpace(ch)) return false;
  return GRAPHIC_RE.test(String.fromCodePoint(ch));
}
