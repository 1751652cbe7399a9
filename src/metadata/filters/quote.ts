// Unquoting of filter literals: Go string-literal escapes, with `/…/` and `|…|` accepted as alternative
// double quotes (containerd allows those for regexp values). Returns undefined on a syntax error, which the
// parser reports as `unquoting failed: quote syntax error`.

const SIMPLE_ESCAPES: Record<string, number> = { a: 7, b: 8, f: 12, n: 10, r: 13, t: 9, v: 11, '\\': 0x5c };
const DECODER = new TextDecoder('utf-8');

export function unquote(s: string): string | undefined {
  if (s.length < 2) return undefined;
  const quote = s[0]!;
  if (s[s.length - 1] !== quote) return undefined;
  if (quote !== '"' && quote !== '/' && quote !== '|') return undefined;
  const body = s.slice(1, -1);
  if (body.includes('\n')) return undefined;
  if (!body.includes('\\') && !body.includes(quote)) return body;

  // Escapes can produce single bytes (\xHH, octal), so build UTF-8 bytes and decode once at the end.
  // Invalid UTF-8 decodes to U+FFFD (a Go byte string could hold it as is; ours cannot).
  const bytes: number[] = [];
  const enc = new TextEncoder();
  let i = 0;
  while (i < body.length) {
    const c = body[i]!;
    if (c === quote) return undefined;
    if (c !== '\\') {
      const cp = body.codePointAt(i)!;
      const ch = String.fromCodePoint(cp);
      for (const b of enc.encode(ch)) bytes.push(b);
      i += ch.length;
      continue;
    }
    if (i + 1 >= body.length) return undefined;
    const e = body[i + 1]!;
    i += 2;
    const simple = SIMPLE_ESCAPES[e];
    if (simple !== undefined) {
      bytes.push(simple);
      continue;
    }
    if (e === 'x' || e === 'u' || e === 'U') {
      const n = e === 'x' ? 2 : e === 'u' ? 4 : 8;
      const hex = body.slice(i, i + n);
      if (hex.length < n || !/^[0-9a-fA-F]+$/.test(hex)) return undefined;
      i += n;
      const v = Number.parseInt(hex, 16);
      if (e === 'x') {
        bytes.push(v);
        continue;
      }
      if (v > 0x10ffff) return undefined;
      // Go encodes a surrogate code point as U+FFFD.
      const ch = v >= 0xd800 && v <= 0xdfff ? '\ufffd' : String.fromCodePoint(v);
      for (const b of enc.encode(ch)) bytes.push(b);
      continue;
    }
    if (e >= '0' && e <= '7') {
      const oct = body.slice(i - 1, i + 2);
      if (oct.length < 3 || !/^[0-7]{3}$/.test(oct)) return undefined;
      i += 2;
      const v = Number.parseInt(oct, 8);
      if (v > 255) return undefined;
      bytes.push(v);
      continue;
    }
    if (e === '"' || e === '/' || e === '|' || e === "'") {
      if (e !== quote) return undefined;
      bytes.push(e.charCodeAt(0));
      continue;
    }
    return undefined;
  }
  return DECODER.decode(new Uint8Array(bytes));
}

/** Quotes a string so that the filter scanner and `unquote` give it back unchanged. */
export function quote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    if (ch === '"' || ch === '\\') out += `\\${ch}`;
    else if (cp < 0x20 || cp === 0x7f || cp === 0xfffd || (cp >= 0xd800 && cp <= 0xdfff)) {
      // Control characters (NUL and newline included) and what the scanner calls a rune error are escaped.
      const safe = cp >= 0xd800 && cp <= 0xdfff ? 0xfffd : cp;
      out += `\\u${safe.toString(16).padStart(4, '0')}`;
    } else out += ch;
  }
  return `${out}"`;
}
