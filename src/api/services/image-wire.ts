// Images answers encoded straight from store records. Building protobuf-es messages for an image and
// running the reflective encoder (which allocates a fresh off-heap buffer, grows it and slices it per
// message) cost more than the database read of a Get. The output is byte for byte what
// toBinary(schema, create(schema, imageToProto(record))) writes; image-wire.test.ts holds it to that.

import type { Nanos } from '../../metadata/db.ts';
import type { ImageRecord } from '../../metadata/images.ts';
import { varintLength, writeInt64Varint, writeVarint } from '../transport/varint.ts';

// Field numbers and wire types, from proto/containerd/services/images/v1/images.proto,
// proto/containerd/types/descriptor.proto and google/protobuf/timestamp.proto.
const VARINT = 0;
const LEN = 2;
const tag = (field: number, wireType: number) => (field << 3) | wireType;
const IMAGE_NAME = tag(1, LEN);
const IMAGE_LABELS = tag(2, LEN);
const IMAGE_TARGET = tag(3, LEN);
const IMAGE_CREATED_AT = tag(7, LEN);
const IMAGE_UPDATED_AT = tag(8, LEN);
const DESCRIPTOR_MEDIA_TYPE = tag(1, LEN);
const DESCRIPTOR_DIGEST = tag(2, LEN);
const DESCRIPTOR_SIZE = tag(3, VARINT);
const DESCRIPTOR_ANNOTATIONS = tag(5, LEN);
const MAP_KEY = tag(1, LEN);
const MAP_VALUE = tag(2, LEN);
const TIMESTAMP_SECONDS = tag(1, VARINT);
const TIMESTAMP_NANOS = tag(2, VARINT);
/** GetImageResponse.image, CreateImageResponse.image, UpdateImageResponse.image, ListImagesResponse.images. */
const RESPONSE_IMAGE = tag(1, LEN);

const NS_PER_S = 1_000_000_000n;

/**
 * A growable buffer reused across calls (encoding is synchronous); results are copied out. Nested
 * messages reserve one length byte and move their bytes along when the length needs more.
 */
class Writer {
  buf = Buffer.allocUnsafe(4096);
  pos = 0;
  private readonly forks: number[] = [];

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  /** A non-negative integer up to 2^53 as a varint. */
  varint(n: number): void {
    this.ensure(10);
    this.pos = writeVarint(this.buf, this.pos, n);
  }

  /** An int64 (negative ones as 10-byte two's complement, as protobuf writes them). */
  int64(v: bigint): void {
    if (v >= 0n && v <= BigInt(Number.MAX_SAFE_INTEGER)) {
      this.varint(Number(v));
      return;
    }
    this.ensure(10);
    this.pos = writeInt64Varint(this.buf, this.pos, v);
  }

  /** A length-delimited UTF-8 string, written even when empty (map entries). */
  string(fieldTag: number, s: string): void {
    this.varint(fieldTag);
    const n = s.length;
    // Short ASCII (names, digests, most labels) is copied in JS: cheaper than two native calls.
    if (n < 0x80) {
      this.ensure(n + 1);
      const b = this.buf;
      const start = this.pos;
      let i = 0;
      for (; i < n; i++) {
        const c = s.charCodeAt(i);
        if (c > 0x7f) break;
        b[start + 1 + i] = c;
      }
      if (i === n) {
        b[start] = n;
        this.pos = start + 1 + n;
        return;
      }
    }
    const bytes = Buffer.byteLength(s, 'utf8');
    this.varint(bytes);
    this.ensure(bytes);
    this.pos += this.buf.write(s, this.pos, bytes, 'utf8');
  }

  /** A proto3 string field: left out when empty. */
  optionalString(fieldTag: number, s: string): void {
    if (s !== '') this.string(fieldTag, s);
  }

  map(fieldTag: number, map: Readonly<Record<string, string>>): void {
    for (const key of Object.keys(map)) {
      this.fork(fieldTag);
      this.string(MAP_KEY, key);
      this.string(MAP_VALUE, map[key]!);
      this.join();
    }
  }

  fork(fieldTag: number): void {
    this.varint(fieldTag);
    this.ensure(1);
    this.forks.push(this.pos);
    this.pos += 1;
  }

  join(): void {
    const start = this.forks.pop()!;
    const len = this.pos - start - 1;
    if (len < 0x80) {
      this.buf[start] = len;
      return;
    }
    const prefix = varintLength(len);
    this.ensure(prefix - 1);
    this.buf.copy(this.buf, start + prefix, start + 1, this.pos);
    const end = this.pos + prefix - 1;
    this.pos = start;
    this.varint(len);
    this.pos = end;
  }

  /** Starts a message; also clears what a failed encoding may have left. */
  reset(): void {
    this.pos = 0;
    this.forks.length = 0;
    // Keep a buffer a large List grew, but not without bound.
    if (this.buf.length > 1 << 20) this.buf = Buffer.allocUnsafe(4096);
  }

  /** The bytes written, copied out. */
  finish(): Buffer {
    const out = Buffer.allocUnsafe(this.pos);
    this.buf.copy(out, 0, 0, this.pos);
    return out;
  }
}

const writer = new Writer();

function timestamp(w: Writer, fieldTag: number, ns: Nanos): void {
  let seconds = ns / NS_PER_S;
  let nanos = ns % NS_PER_S;
  if (nanos < 0n) {
    seconds -= 1n;
    nanos += NS_PER_S;
  }
  w.fork(fieldTag);
  if (seconds !== 0n) {
    w.varint(TIMESTAMP_SECONDS);
    w.int64(seconds);
  }
  if (nanos !== 0n) {
    w.varint(TIMESTAMP_NANOS);
    w.varint(Number(nanos));
  }
  w.join();
}

function image(w: Writer, r: ImageRecord): void {
  w.optionalString(IMAGE_NAME, r.name);
  w.map(IMAGE_LABELS, r.labels);
  w.fork(IMAGE_TARGET);
  w.optionalString(DESCRIPTOR_MEDIA_TYPE, r.target.mediaType);
  w.optionalString(DESCRIPTOR_DIGEST, r.target.digest);
  if (r.target.size !== 0) {
    w.varint(DESCRIPTOR_SIZE);
    if (r.target.size > 0 && Number.isSafeInteger(r.target.size)) w.varint(r.target.size);
    else w.int64(BigInt(r.target.size));
  }
  w.map(DESCRIPTOR_ANNOTATIONS, r.target.annotations);
  w.join();
  timestamp(w, IMAGE_CREATED_AT, r.createdAtNs);
  timestamp(w, IMAGE_UPDATED_AT, r.updatedAtNs);
}

/** A Get/Create/UpdateImageResponse (all `Image image = 1`) for one record. */
export function encodeImageResponse(r: ImageRecord): Buffer {
  writer.reset();
  writer.fork(RESPONSE_IMAGE);
  image(writer, r);
  writer.join();
  return writer.finish();
}

/** A ListImagesResponse for the records, in order. */
export function encodeListImagesResponse(records: readonly ImageRecord[]): Buffer {
  writer.reset();
  for (const r of records) {
    writer.fork(RESPONSE_IMAGE);
    image(writer, r);
    writer.join();
  }
  return writer.finish();
}
