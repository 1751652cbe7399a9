// gRPC's length-prefixed messages on an HTTP/2 stream: one flag byte (1 = compressed), a 4-byte
// big-endian length, then the message. DATA frames split and join messages arbitrarily.
import { gunzipSync, inflateSync } from 'node:zlib';
import type { DescMethod } from '@bufbuild/protobuf';
import { internal, messageOf, resourceExhausted, unimplemented } from '../../errors.ts';

export const PREFIX_BYTES = 5;

/** The HTTP/2 `:path` of a method: `/<package>.<Service>/<Method>`. */
export function methodPath(method: DescMethod): string {
  return `/${method.parent.typeName}/${method.name}`;
}

/** The 5-byte prefix of an uncompressed message of `length` bytes. */
export function messagePrefix(length: number): Buffer {
  const prefix = Buffer.allocUnsafe(PREFIX_BYTES);
  prefix[0] = 0;
  prefix.writeUInt32BE(length, 1);
  return prefix;
}

/** A whole frame in one buffer, for small messages where one write beats two. */
export function framedMessage(message: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(PREFIX_BYTES + message.byteLength);
  frame[0] = 0;
  frame.writeUInt32BE(message.byteLength, 1);
  frame.set(message, PREFIX_BYTES);
  return frame;
}

/** The request encodings we read, as `grpc-accept-encoding` lists them. */
export const ACCEPTED_ENCODINGS = 'identity,gzip,deflate';

/**
 * Checks a request's `grpc-encoding` early, so an unreadable call fails before any handler runs. We read
 * identity, gzip and deflate requests; responses are never compressed.
 */
export function checkEncoding(encoding: string | undefined): void {
  if (encoding === undefined || encoding === 'identity' || encoding === 'gzip' || encoding === 'deflate')
    return;
  throw unimplemented(`compression algorithm "${encoding}" is not supported`);
}

/**
 * Cuts a byte stream into messages. Holds at most one partial message; refuses (before buffering it)
 * a message whose declared or inflated size is over `maxBytes`.
 */
export class MessageDecoder {
  readonly #maxBytes: number;
  readonly #encoding: string | undefined;
  #chunks: Buffer[] = [];
  #buffered = 0;
  /** Length of the message being collected, once its prefix is complete. */
  #need = -1;
  #compressed = false;

  constructor(maxBytes: number, encoding: string | undefined) {
    this.#maxBytes = maxBytes;
    this.#encoding = encoding;
  }

  /** True while part of a message is held: a stream that ends now was cut short. */
  get partial(): boolean {
    return this.#buffered > 0;
  }

  /** Feeds a chunk; returns the messages it completed (usually zero or one). */
  push(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    for (;;) {
      if (this.#need < 0) {
        if (this.#buffered < PREFIX_BYTES) return out;
        const head = this.#take(PREFIX_BYTES);
        if (head[0]! > 1) throw internal(`invalid gRPC message flag ${head[0]}`);
        this.#compressed = head[0] === 1;
        this.#need = head.readUInt32BE(1);
        if (this.#need > this.#maxBytes) {
          throw resourceExhausted(`Received message larger than max (${this.#need} vs. ${this.#maxBytes})`);
        }
      }
      if (this.#buffered < this.#need) return out;
      const body = this.#take(this.#need);
      this.#need = -1;
      out.push(this.#compressed ? this.#inflate(body) : body);
    }
  }

  /** The first `n` buffered bytes, without copying when one chunk holds them. */
  #take(n: number): Buffer {
    const first = this.#chunks[0];
    let taken: Buffer;
    if (n === 0) {
      taken = Buffer.alloc(0);
    } else if (first && first.length >= n) {
      taken = first.subarray(0, n);
      if (first.length === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
    } else {
      taken = Buffer.allocUnsafe(n);
      let filled = 0;
      while (filled < n) {
        const c = this.#chunks[0]!;
        const part = Math.min(c.length, n - filled);
        c.copy(taken, filled, 0, part);
        filled += part;
        if (part === c.length) this.#chunks.shift();
        else this.#chunks[0] = c.subarray(part);
      }
    }
    this.#buffered -= n;
    return taken;
  }

  #inflate(body: Buffer): Buffer {
    const encoding = this.#encoding;
    if (encoding !== 'gzip' && encoding !== 'deflate') {
      throw internal('a compressed message arrived without a grpc-encoding to read it with');
    }
    try {
      const options = { maxOutputLength: this.#maxBytes };
      return encoding === 'gzip' ? gunzipSync(body, options) : inflateSync(body, options);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
        throw resourceExhausted(`Received message larger than max (inflated beyond ${this.#maxBytes})`);
      }
      throw internal(`cannot decompress a ${encoding} message: ${messageOf(err)}`);
    }
  }
}

/** `grpc-timeout` (1–8 digits and a unit) in milliseconds; undefined when absent. */
export function parseTimeout(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const m = /^(\d{1,8})([HMSmun])$/.exec(value);
  if (!m) throw internal(`invalid grpc-timeout value ${JSON.stringify(value)}`);
  const amount = Number(m[1]);
  const perUnit = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 }[m[2] as 'H'];
  return amount * perUnit;
}

/** grpc-message is percent-encoded: anything outside printable ASCII, and '%' itself. */
export function encodeStatusMessage(message: string): string {
  if (/^[\x20-\x24\x26-\x7e]*$/.test(message)) return message;
  let out = '';
  for (const byte of Buffer.from(message, 'utf8')) {
    out +=
      byte >= 0x20 && byte <= 0x7e && byte !== 0x25
        ? String.fromCharCode(byte)
        : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}
