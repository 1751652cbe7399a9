// A byte range read over HTTP that survives dropped connections: when the body breaks off, the rest is
// asked for again from the first byte not yet received (Range), up to a bounded number of times. A
// server that ignores Range and answers 200 has the bytes already received skipped, so the consumer
// (and the digest computed over it) sees one contiguous stream.
import { Readable } from 'node:stream';
import { errorKind, messageOf } from '../errors.ts';
import { bodyError } from './http.ts';
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
  /** The first body, already opened at `start`. */
  first: OpenedBody;
  /** Opens the body again at `position` (throws the taxonomy's errors for bad answers). */
  reopen: (position: number) => Promise<OpenedBody>;
  /** How many times a broken body is resumed (default 5). */
  maxResumes?: number;
  /** Deliver bytes past `end` instead of cutting them (a full read lets the digest check catch them). */
  passExcess?: boolean;
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
            if (!o.passExcess && chunk.length > o.end - pos) chunk = chunk.subarray(0, o.end - pos);
            if (chunk.length === 0) continue;
            pos += chunk.length;
            yield chunk;
            if (!o.passExcess && pos >= o.end) break;
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
