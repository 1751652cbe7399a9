// A byte range read over HTTP that survives dropped connections: when the body breaks off, the rest is
// asked for again from the first byte not yet received (Range), up to a bounded number of times. A
// server that ignores Range and answers 200 has the bytes already received skipped, so the consumer
// (and the digest computed over it) sees one contiguous stream. openBlobRange is a blob's ranged GET on
// top: registry blobs and content-layer URLs are both read through it.
import { pipeline, Readable } from 'node:stream';
import { dataLoss, errorKind, invalidArgument, messageOf, outOfRange } from '../errors.ts';
import type { OpenOptions } from '../oci/blob.ts';
import type { Descriptor } from '../oci/descriptor.ts';
import { VerifyingStream } from '../oci/digest.ts';
import { bodyError, contentRangeStart, type HttpResponse, header } from './http.ts';
import { isRetryableNetworkError } from './retry.ts';

/** An opened response body and how many of its leading bytes precede the position asked for. */
export interface OpenedBody {
  body: Readable;
  skip: number;
}

export interface ResumableReadOptions {
  /** First byte to deliver. */
  start: number;
  /** One past the last byte to deliver. */
  end: number;
  /**
   * The blob's declared size: a body that goes on past it is refused (DataLoss, never resumed) at the
   * first byte too many. A read that ends there waits for the body's end to see that it does end.
   */
  size: number;
  /** The first body, already opened at `start`. */
  first: OpenedBody;
  /** Opens the body again at `position` (throws the taxonomy's errors for bad answers). */
  reopen: (position: number) => Promise<OpenedBody>;
  /** How many times a broken body is resumed (default 5). */
  maxResumes?: number;
  signal?: AbortSignal;
  what: string;
  url: URL;
}

/** Why a body may have broken off in a way that asking again can fix. */
function resumable(err: unknown): boolean {
  if (errorKind(err) !== undefined) return false;
  return isRetryableNetworkError(err, true) || /premature close|aborted|terminated/i.test(messageOf(err));
}

export function resumableRead(o: ResumableReadOptions): Readable {
  const maxResumes = o.maxResumes ?? 5;
  async function* bytes(): AsyncGenerator<Buffer> {
    let pos = o.start;
    let current = o.first;
    let resumes = 0;
    try {
      for (;;) {
        try {
          let skip = current.skip;
          for await (const raw of current.body) {
            let chunk = raw as Buffer;
            if (skip > 0) {
              const n = Math.min(skip, chunk.length);
              skip -= n;
              chunk = chunk.subarray(n);
            }
            if (chunk.length > o.end - pos) {
              // Past the blob's end the body is lying; past a range that stops short of it, the rest
              // of a whole-blob answer is just not wanted.
              if (o.end >= o.size) {
                throw dataLoss(
                  `${o.what}: the server sent more than the ${o.size} bytes the descriptor declares`,
                );
              }
              chunk = chunk.subarray(0, o.end - pos);
            }
            if (chunk.length > 0) {
              pos += chunk.length;
              yield chunk;
            }
            if (pos >= o.end && o.end < o.size) break;
          }
          if (pos >= o.end) return;
          throw Object.assign(new Error(`body ended after ${pos - o.start} of ${o.end - o.start} bytes`), {
            code: 'ECONNRESET',
          });
        } catch (err) {
          current.body.destroy();
          if (o.signal?.aborted || resumes >= maxResumes || !resumable(err)) {
            const what =
              resumes > 0 ? `${o.what} (resumed ${resumes} times, stopped at byte ${pos})` : o.what;
            throw bodyError(err, { ...o, what });
          }
          resumes++;
          current = await o.reopen(pos);
        }
      }
    } finally {
      current.body.destroy();
    }
  }
  return Readable.from(bytes(), { objectMode: false });
}

export interface BlobRangeRequest {
  url: URL;
  desc: Descriptor;
  options: OpenOptions;
  what: string;
  maxResumes: number;
  /** Sends the GET with these headers (Range, when one is asked for). */
  get: (headers: Record<string, string>) => Promise<HttpResponse>;
  /** The error for an answer that is neither 200 nor the 206 asked for. */
  fail: (res: HttpResponse) => Promise<Error>;
}

/**
 * Streams a blob at a URL, or a range of it, resuming a dropped body with Range. Full reads are verified
 * against the descriptor's digest and size (the stream fails with DataLoss at the end otherwise) unless
 * `verify` is false.
 */
export async function openBlobRange(o: BlobRangeRequest): Promise<Readable> {
  const { desc, options, what } = o;
  const start = options.range?.offset ?? 0;
  const length = options.range?.length;
  if (
    !Number.isSafeInteger(start) ||
    start < 0 ||
    (length !== undefined && (!Number.isSafeInteger(length) || length < 0))
  ) {
    throw invalidArgument(`${what}: invalid range`);
  }
  if (start > desc.size) throw outOfRange(`${what}: offset ${start} is past the size ${desc.size}`);
  const end = length === undefined ? desc.size : Math.min(desc.size, start + length);
  const full = start === 0 && end === desc.size;
  const open = async (pos: number): Promise<OpenedBody> => {
    const ranged = pos > 0 || !full;
    const res = await o.get(ranged && end > pos ? { range: `bytes=${pos}-${end - 1}` } : {});
    if (res.status === 200) {
      if (pos > 0) options.onRangeIgnored?.();
      return { body: res.body, skip: pos };
    }
    if (res.status === 206 && ranged) {
      if (contentRangeStart(res) === pos) return { body: res.body, skip: 0 };
      res.body.destroy();
      throw dataLoss(
        `${what}: asked for bytes from ${pos}, got Content-Range ${header(res, 'content-range')}`,
      );
    }
    if (res.status === 416) {
      res.body.destroy();
      throw outOfRange(`${what}: the server refused the range from ${pos}`);
    }
    throw await o.fail(res);
  };
  if (end === start && !full) return Readable.from([]);
  const first = await open(start);
  const source = resumableRead({
    start,
    end,
    first,
    reopen: open,
    size: desc.size,
    maxResumes: o.maxResumes,
    signal: options.signal,
    what,
    url: o.url,
  });
  if (!full || options.verify === false) return source;
  return pipeline(source, new VerifyingStream(desc.digest, desc.size), () => {});
}
