// Label rules shared by images, content and snapshots, and the small Go-compatible text helpers their
// error messages need (containerd's messages are part of the wire behaviour that ctr prints).
import { invalidArgument } from '../errors.ts';

export const MAX_LABEL_SIZE = 4096;
/** containerd 1.6 names at most this many bytes of the key (later releases name 64 and the total). */
const KEY_MAX_LEN_IN_MESSAGE = 10;

/**
 * containerd's rule: bytes(key) + bytes(value) ≤ 4096. `what` prefixes the message (`image.Labels`,
 * `info.Labels`). Keys are checked in sorted order so the reported key is deterministic.
 */
export function validateLabels(what: string, labels: Readonly<Record<string, string>>): void {
  for (const key of Object.keys(labels).sort()) {
    const value = labels[key]!;
    const total = Buffer.byteLength(key) + Buffer.byteLength(value);
    if (total > MAX_LABEL_SIZE) {
      const k = Buffer.from(key).subarray(0, KEY_MAX_LEN_IN_MESSAGE).toString();
      throw invalidArgument(
        `${what}: label key and value greater than maximum size (${MAX_LABEL_SIZE} bytes), key: ${k}: invalid argument`,
      );
    }
    // containerd fails inside its store here (an unclassified error); a clear InvalidArgument is kinder.
    if (key === '' && value !== '')
      throw invalidArgument(`${what}: label key must not be empty: invalid argument`);
  }
}

/** An empty value deletes a label (containerd never stores one). Builds own properties only. */
export function withoutEmpty(map: Readonly<Record<string, string>> | undefined): Record<string, string> {
  return Object.fromEntries(Object.entries(map ?? {}).filter(([, v]) => v !== ''));
}

/**
 * Sets key to value in map, in place (an own property, even for `__proto__`). In place because an update
 * may carry thousands of label paths (a pull of an index sets one per manifest): a copy per path is
 * quadratic. Callers copy the stored map once, before the first path.
 */
export function setEntry(map: Record<string, string>, key: string, value: string): void {
  Object.defineProperty(map, key, { value, enumerable: true, writable: true, configurable: true });
}

export function getEntry(map: Readonly<Record<string, string>> | undefined, key: string): string {
  return map && Object.hasOwn(map, key) ? map[key]! : '';
}

/** Go's %q for a string: double-quoted with Go escapes. */
export function goQuote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    switch (ch) {
      case '"':
        out += '\\"';
        continue;
      case '\\':
        out += '\\\\';
        continue;
      case '\x07':
        out += '\\a';
        continue;
      case '\b':
        out += '\\b';
        continue;
      case '\f':
        out += '\\f';
        continue;
      case '\n':
        out += '\\n';
        continue;
      case '\r':
        out += '\\r';
        continue;
      case '\t':
        out += '\\t';
        continue;
      case '\v':
        out += '\\v';
        continue;
    }
    if (cp < 0x20 || cp === 0x7f) out += `\\x${cp.toString(16).padStart(2, '0')}`;
    else if (cp >= 0xd800 && cp <= 0xdfff) out += '\\ufffd';
    else if (!PRINTABLE.test(ch)) {
      out +=
        cp > 0xffff ? `\\U${cp.toString(16).padStart(8, '0')}` : `\\u${cp.toString(16).padStart(4, '0')}`;
    } else out += ch;
  }
  return `${out}"`;
}

// Go's strconv.IsPrint: letters, marks, numbers, punctuation, symbols and the ASCII space.
const PRINTABLE = /^[\p{L}\p{M}\p{N}\p{P}\p{S} ]$/u;
