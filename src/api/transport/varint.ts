// Protobuf's base-128 varint, the one codec the hand-written encoders (image-wire, write-channel) use.

/** Bytes `n` (a non-negative integer up to 2^53) takes as a varint. */
export function varintLength(n: number): number {
  let bytes = 1;
  for (let v = n; v > 0x7f; v = Math.floor(v / 0x80)) bytes++;
  return bytes;
}

/** Writes `n` (a non-negative integer up to 2^53) at `pos`; returns the position after it. */
export function writeVarint(buf: Uint8Array, pos: number, n: number): number {
  let at = pos;
  let v = n;
  while (v > 0x7f) {
    buf[at++] = (v % 0x80) | 0x80;
    v = Math.floor(v / 0x80);
  }
  buf[at++] = v;
  return at;
}

const U64 = 1n << 64n;

/** Writes an int64 (a negative one as 10-byte two's complement, as protobuf does); returns the end. */
export function writeInt64Varint(buf: Uint8Array, pos: number, v: bigint): number {
  let at = pos;
  let u = v < 0n ? v + U64 : v;
  while (u > 0x7fn) {
    buf[at++] = Number(u & 0x7fn) | 0x80;
    u >>= 7n;
  }
  buf[at++] = Number(u);
  return at;
}
