// File names as bytes. Linux names are byte strings and a layer may hold names that are not valid UTF-8;
// containerd (Go strings are bytes) writes them as they are. Strata keeps names as JS strings and
// carries each byte that is not part of valid UTF-8 as a lone low surrogate U+DC80..U+DCFF (Python's
// "surrogateescape"): valid UTF-8 never decodes to a lone surrogate, so the mapping is reversible, and
// the common all-UTF-8 name stays an ordinary string. Paths go to the file system through fsPath, which
// turns an escaped string back into the exact bytes.
import { isUtf8 } from 'node:buffer';

const ESCAPE_BASE = 0xdc00;
/** A lone low surrogate in the escape range (a surrogate pair's low half is not one). */
const ESCAPED = /(?<![\uD800-\uDBFF])[\uDC80-\uDCFF]/;

/** Length of the valid UTF-8 sequence at `at`, or 0 when the byte there starts none. */
function sequenceLength(b: Uint8Array, at: number): number {
  const c = b[at]!;
  if (c < 0x80) return 1;
  const cont = (i: number) => at + i < b.length && (b[at + i]! & 0xc0) === 0x80;
  if (c >= 0xc2 && c <= 0xdf) return cont(1) ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) {
    const c1 = b[at + 1] ?? 0;
    // No overlong forms, no surrogates.
    if ((c === 0xe0 && c1 < 0xa0) || (c === 0xed && c1 > 0x9f)) return 0;
    return cont(1) && cont(2) ? 3 : 0;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    const c1 = b[at + 1] ?? 0;
    if ((c === 0xf0 && c1 < 0x90) || (c === 0xf4 && c1 > 0x8f)) return 0;
    return cont(1) && cont(2) && cont(3) ? 4 : 0;
  }
  return 0;
}

/** The name held in `bytes`, invalid UTF-8 bytes escaped. */
export function decodeName(bytes: Uint8Array): string {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (isUtf8(b)) return b.toString('utf8');
  let out = '';
  let at = 0;
  while (at < b.length) {
    const n = sequenceLength(b, at);
    if (n === 0) {
      out += String.fromCharCode(ESCAPE_BASE + b[at]!);
      at++;
    } else {
      out += b.toString('utf8', at, at + n);
      at += n;
    }
  }
  return out;
}

/** True when `name` carries escaped bytes (it is no valid UTF-8 on disk). */
export function hasEscapes(name: string): boolean {
  return ESCAPED.test(name);
}

/** The bytes of a name decodeName made. */
export function encodeName(name: string): Buffer {
  if (!hasEscapes(name)) return Buffer.from(name, 'utf8');
  const parts: Buffer[] = [];
  let run = '';
  for (const ch of name) {
    const c = ch.charCodeAt(0);
    if (ch.length === 1 && c >= 0xdc80 && c <= 0xdcff) {
      parts.push(Buffer.from(run, 'utf8'), Buffer.of(c - ESCAPE_BASE));
      run = '';
    } else run += ch;
  }
  parts.push(Buffer.from(run, 'utf8'));
  return Buffer.concat(parts);
}

/** How many bytes `name` is on disk. */
export function nameBytes(name: string): number {
  return hasEscapes(name) ? encodeName(name).length : Buffer.byteLength(name);
}

/** What to hand the file system for `path`: the string itself, or its exact bytes when it has escapes. */
export function fsPath(path: string): string | Buffer {
  return hasEscapes(path) ? encodeName(path) : path;
}
