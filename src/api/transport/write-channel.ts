// Content.Write calls sent over node:http2 directly, gRPC framing done here, so a pulled layer goes from
// the registry socket to the daemon socket with no copy: each message is a small head (gRPC prefix, the
// request's small fields, the data field's tag and length) followed by the registry's own chunks, written
// in one corked writev. Through grpc-js every MiB was copied twice (our encoder, then its framing), which
// made the pull client spend more on garbage collection than on anything else. Unary calls stay on
// grpc-js; this is only the bulk path, and on the wire it is ordinary gRPC.

import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  connect,
  constants,
  type IncomingHttpHeaders,
} from 'node:http2';
import { connect as netConnect } from 'node:net';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { type StatusObject, status } from '@grpc/grpc-js';
import {
  Content,
  type WriteAction,
  WriteContentRequestSchema,
  type WriteContentResponse,
  WriteContentResponseSchema,
} from '../gen/containerd/services/content/v1/content_pb.ts';
import { MessageDecoder, methodPath, PREFIX_BYTES } from './framing.ts';
import { varintLength, writeVarint } from './varint.ts';

/** What a writer sends: a WriteContentRequest whose data may come in parts. */
export interface WriteRequestParts {
  action: WriteAction;
  ref?: string;
  total?: bigint;
  expected?: string;
  offset?: bigint;
  labels?: Record<string, string>;
  data?: readonly Uint8Array[];
}

/** One Content.Write call: sends resolve once written to the socket; fail with the call's status. */
export interface WriteStream {
  send(msg: WriteRequestParts): Promise<void>;
  responses: AsyncIterator<WriteContentResponse>;
  end(): void;
  cancel(): void;
}

/** Responses are small; anything bigger is a broken peer. */
const MAX_RESPONSE_BYTES = 1 << 20;
/** Tag of WriteContentRequest.data: field 6, length-delimited. */
const DATA_TAG = (6 << 3) | 2;
const WRITE_PATH = methodPath(Content.method.write);

/**
 * The gRPC length prefix, the small fields (through protobuf-es) and the data field's tag and length: the
 * data parts follow it on the wire unchanged (protobuf leaves field order free). Returns the head and the
 * parts to send after it.
 */
export function frameWriteRequest(msg: WriteRequestParts): { head: Buffer; parts: readonly Uint8Array[] } {
  const { data, ...fields } = msg;
  const small = toBinary(WriteContentRequestSchema, create(WriteContentRequestSchema, fields));
  const size = data?.reduce((n, d) => n + d.byteLength, 0) ?? 0;
  const dataHead = size > 0 ? 1 + varintLength(size) : 0;
  const head = Buffer.allocUnsafe(PREFIX_BYTES + small.byteLength + dataHead);
  head[0] = 0; // not compressed
  head.writeUInt32BE(small.byteLength + dataHead + size, 1);
  head.set(small, PREFIX_BYTES);
  if (size > 0) {
    const at = PREFIX_BYTES + small.byteLength;
    head[at] = DATA_TAG;
    writeVarint(head, at + 1, size);
  }
  return { head, parts: size > 0 ? data!.filter((d) => d.byteLength > 0) : [] };
}

/** gRPC's status error shape, which errorFromStatus maps into our taxonomy. */
function statusError(s: StatusObject): Error {
  return Object.assign(new Error(s.code === status.OK ? 'call already finished' : s.details), {
    code: s.code,
    details: s.details,
  });
}

function statusFrom(headers: IncomingHttpHeaders): StatusObject | undefined {
  const raw = headers['grpc-status'];
  if (raw === undefined) return undefined;
  const code = Number(Array.isArray(raw) ? raw[0] : raw);
  let details = String(headers['grpc-message'] ?? '');
  try {
    details = decodeURIComponent(details);
  } catch {
    // Not percent-encoded after all: keep it as sent.
  }
  return { code: Number.isInteger(code) ? code : status.UNKNOWN, details, metadata: undefined as never };
}

/** One HTTP/2 connection to the daemon's socket for Content.Write calls, opened on first use. */
export class WriteChannel {
  private readonly socketPath: string;
  private session: ClientHttp2Session | undefined;
  private closed = false;

  constructor(socketPath: string) {
    this.socketPath = socketPath;
  }

  private connection(): ClientHttp2Session {
    if (this.closed) throw Object.assign(new Error('client closed'), { code: status.CANCELLED });
    if (this.session && !this.session.closed && !this.session.destroyed) return this.session;
    const session = connect('http://localhost', {
      createConnection: () => netConnect(this.socketPath),
      // Data waiting for the daemon's flow-control window counts here; our writers bound it themselves.
      maxSessionMemory: 1024,
      settings: { enablePush: false },
    });
    // Stream errors carry the failure to each call; a session error only means a new one next time.
    session.on('error', () => {});
    session.on('goaway', () => {
      if (this.session === session) this.session = undefined;
    });
    session.on('close', () => {
      if (this.session === session) this.session = undefined;
    });
    this.session = session;
    return session;
  }

  /** Starts a Content.Write call carrying `metadata` as headers (containerd-namespace, -lease). */
  open(metadata: Record<string, string>): WriteStream {
    const stream = this.connection().request({
      [constants.HTTP2_HEADER_METHOD]: 'POST',
      [constants.HTTP2_HEADER_PATH]: WRITE_PATH,
      [constants.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc',
      [constants.HTTP2_HEADER_TE]: 'trailers',
      ...metadata,
    });
    return new Http2WriteStream(stream);
  }

  close(): void {
    this.closed = true;
    this.session?.close();
    this.session = undefined;
  }
}

class Http2WriteStream implements WriteStream {
  private readonly stream: ClientHttp2Stream;
  private final: StatusObject | undefined;
  private readonly queue: WriteContentResponse[] = [];
  private readonly waiting: {
    resolve: (r: IteratorResult<WriteContentResponse>) => void;
    reject: (e: Error) => void;
  }[] = [];
  private readonly pending = new Set<(s: StatusObject) => void>();
  readonly responses: AsyncIterator<WriteContentResponse>;

  constructor(stream: ClientHttp2Stream) {
    this.stream = stream;
    // Responses are never compressed (no grpc-encoding), so a compressed one fails the call.
    const reader = new MessageDecoder(MAX_RESPONSE_BYTES, undefined);
    stream.on('response', (headers) => {
      // A trailers-only response: the status comes with the headers.
      const s = statusFrom(headers);
      if (s) this.finish(s);
    });
    stream.on('data', (chunk: Buffer) => {
      if (this.final) return;
      try {
        for (const m of reader.push(chunk)) this.deliver(fromBinary(WriteContentResponseSchema, m));
      } catch (err) {
        this.finish({ code: status.INTERNAL, details: (err as Error).message, metadata: undefined as never });
        stream.close(constants.NGHTTP2_CANCEL);
      }
    });
    stream.on('trailers', (trailers) => {
      this.finish(
        statusFrom(trailers) ?? {
          code: status.UNKNOWN,
          details: 'no grpc-status in trailers',
          metadata: undefined as never,
        },
      );
    });
    stream.on('error', (err: Error) => {
      this.finish({ code: status.UNAVAILABLE, details: err.message, metadata: undefined as never });
    });
    stream.on('close', () => {
      const cancelled = stream.rstCode === constants.NGHTTP2_CANCEL;
      this.finish({
        code: cancelled ? status.CANCELLED : status.UNAVAILABLE,
        details: cancelled ? 'call cancelled' : `stream closed (code ${stream.rstCode})`,
        metadata: undefined as never,
      });
    });
    stream.resume();
    this.responses = {
      next: () => {
        const r = this.queue.shift();
        if (r) return Promise.resolve({ done: false, value: r });
        if (this.final) {
          if (this.final.code === status.OK) return Promise.resolve({ done: true, value: undefined });
          return Promise.reject(statusError(this.final));
        }
        return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }));
      },
    };
  }

  private deliver(r: WriteContentResponse): void {
    const w = this.waiting.shift();
    if (w) w.resolve({ done: false, value: r });
    else this.queue.push(r);
  }

  /** The call's outcome: the first one reported counts. */
  private finish(s: StatusObject): void {
    if (this.final) return;
    this.final = s;
    for (const w of this.waiting.splice(0)) {
      if (s.code === status.OK) w.resolve({ done: true, value: undefined });
      else w.reject(statusError(s));
    }
    for (const fail of this.pending) fail(s);
    this.pending.clear();
  }

  send(msg: WriteRequestParts): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.final) return reject(statusError(this.final));
      const fail = (s: StatusObject) => reject(statusError(s));
      this.pending.add(fail);
      const { head, parts } = frameWriteRequest(msg);
      const done = (err?: Error | null) => {
        this.pending.delete(fail);
        if (err) reject(err);
        else resolve();
      };
      // One writev for the head and every part.
      this.stream.cork();
      if (parts.length === 0) this.stream.write(head, done);
      else {
        this.stream.write(head);
        for (let i = 0; i < parts.length - 1; i++) this.stream.write(parts[i]);
        this.stream.write(parts[parts.length - 1], done);
      }
      this.stream.uncork();
    });
  }

  end(): void {
    if (!this.stream.writableEnded) this.stream.end();
  }

  cancel(): void {
    if (!this.stream.closed && !this.stream.destroyed) this.stream.close(constants.NGHTTP2_CANCEL);
  }
}
