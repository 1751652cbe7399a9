// One gRPC call on one HTTP/2 stream, server side: the request messages in, the response messages and
// the status out, the deadline, and cancellation when the client goes away. Knows bytes, not schemas.
import { constants, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import { status } from '@grpc/grpc-js';
import {
  deadlineExceeded,
  internal,
  resourceExhausted,
  type StrataError,
  unavailable,
} from '../../errors.ts';
import { joinHostPort } from '../../host-port.ts';
import { encodeStatusMessage, framedMessage, MessageDecoder, messagePrefix } from './framing.ts';

/** Request metadata as handlers read it: every value of a key (binary `-bin` keys decoded). */
export interface RequestMetadata {
  get(key: string): Array<string | Buffer>;
}

/**
 * Read from the raw header list (name, value, name, value, …): Node's header object joins a repeated
 * key's values with ", ", which a value may itself contain, so the values could not be told apart.
 */
class HeaderMetadata implements RequestMetadata {
  readonly #raw: readonly string[];

  constructor(raw: readonly string[]) {
    this.#raw = raw;
  }

  get(key: string): Array<string | Buffer> {
    const k = key.toLowerCase();
    if (k.startsWith(':')) return [];
    const raw = this.#raw;
    const values: string[] = [];
    // HTTP/2 header names are lowercase on the wire (nghttp2 refuses others).
    for (let i = 0; i + 1 < raw.length; i += 2) if (raw[i] === k) values.push(raw[i + 1]!);
    if (!k.endsWith('-bin')) return values;
    // A binary value may itself be several base64 values joined by commas.
    return values.flatMap((v) => v.split(',').map((part) => Buffer.from(part.trim(), 'base64')));
  }
}

/** Messages buffered from a request stream before the client is made to wait (HTTP/2 flow control). */
const REQUEST_QUEUE_BYTES = 4 << 20;

/**
 * Response headers as grpc-go sends them: no `date` (Node adds one unless told not to; `sendDate` is
 * missing from Node's types, hence untyped constants) and no `grpc-accept-encoding` (compressed requests
 * are still read, but a local client gains nothing by compressing). Each header is per-call work for
 * the client.
 */
const WITH_TRAILERS = { waitForTrailers: true, sendDate: false };
const TRAILERS_ONLY = { endStream: true, sendDate: false };

/**
 * The HTTP/2 reset a status goes as when it cannot wait behind the responses before it: the code gRPC
 * clients (grpc-go, grpc-js) read back as that status. Others go as CANCEL (read as CANCELLED; grpc-go
 * reads it as DeadlineExceeded once its own deadline has passed, so an expired call goes as CANCEL too,
 * as grpc-go's server resets one; no HTTP/2 code means a deadline).
 */
const RESET_FOR_STATUS = new Map<number, number>([
  [status.RESOURCE_EXHAUSTED, constants.NGHTTP2_ENHANCE_YOUR_CALM],
]);

/** A message this short is copied behind its prefix; longer ones go out as prefix + message (writev). */
const COPY_BELOW = 64 << 10;

export class ServerCall {
  readonly path: string;
  readonly #stream: ServerHttp2Stream;
  readonly #rawHeaders: readonly string[];
  readonly #decoder: MessageDecoder;
  readonly #maxSend: number;
  #metadata: HeaderMetadata | undefined;
  /** Response headers are on the wire (so the status goes out as trailers). */
  #responded = false;
  /** The status was sent, or the stream is gone: nothing more goes out. */
  #finished = false;
  /** The status is on its way (trailers asked for, or a trailers-only answer), not waiting behind data. */
  #statusOut = false;
  #cancelled: StrataError | undefined;
  #trailers: Record<string, string> = { 'grpc-status': '0' };
  #deadline: NodeJS.Timeout | undefined;
  #onCancel: ((reason: StrataError) => void) | undefined;
  /**
   * Waits of the transport's own (the next request, room to write) that a deadline must end: the stream
   * stays open when the client keeps its side open, so its 'close' may never come.
   */
  readonly #onExpire = new Set<() => void>();

  constructor(
    stream: ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    rawHeaders: readonly string[],
    limits: { maxReceive: number; maxSend: number; timeoutMs: number | undefined },
  ) {
    this.path = headers[':path'] ?? '';
    this.#stream = stream;
    this.#rawHeaders = rawHeaders;
    this.#maxSend = limits.maxSend;
    const encoding = headers['grpc-encoding'];
    this.#decoder = new MessageDecoder(
      limits.maxReceive,
      typeof encoding === 'string' ? encoding : undefined,
    );
    // A client's RST_STREAM surfaces as 'error' on some codes; 'close' below is what matters.
    stream.on('error', () => {});
    stream.once('close', () => {
      // The deadline holds until the stream closes, not only until the status is queued: a status that
      // waits behind responses a client stopped reading is dropped with them when it passes.
      if (this.#deadline) clearTimeout(this.#deadline);
      this.#gone();
    });
    if (limits.timeoutMs !== undefined && limits.timeoutMs <= 0) {
      // Expired on arrival (`grpc-timeout: 0n`): answered now, and the server does not start the handler
      // (as grpc-go does).
      this.#expire();
    } else if (limits.timeoutMs !== undefined && limits.timeoutMs < 2 ** 31 - 1) {
      // setTimeout's range ends at ~24.8 days; a longer deadline is as good as none.
      this.#deadline = setTimeout(() => this.#expire(), limits.timeoutMs);
    }
  }

  get metadata(): RequestMetadata {
    this.#metadata ??= new HeaderMetadata(this.#rawHeaders);
    return this.#metadata;
  }

  get peer(): string {
    const socket = this.#stream.session?.socket;
    if (!socket?.remoteAddress) return 'unix:';
    return joinHostPort(socket.remoteAddress, `${socket.remotePort}`);
  }

  /** Why the call ended early (client gone, deadline), if it did. */
  get cancelled(): StrataError | undefined {
    return this.#cancelled;
  }

  /** Called once if the call is cancelled before its status was sent. */
  onCancel(listener: (reason: StrataError) => void): void {
    this.#onCancel = listener;
  }

  /**
   * The single request of a unary or server-streaming call: `onMessage` runs as soon as it is whole
   * (like grpc-go, without waiting for the half-close); later messages are ignored.
   */
  receiveOne(onMessage: (message: Buffer) => void, onError: (err: unknown) => void): void {
    let received = false;
    this.#stream.on('data', (chunk: Buffer) => {
      if (received || this.#finished) return;
      let messages: Buffer[];
      try {
        messages = this.#decoder.push(chunk);
      } catch (err) {
        onError(err);
        return;
      }
      if (messages.length === 0) return;
      received = true;
      onMessage(messages[0]!);
    });
    this.#stream.once('end', () => {
      if (!received && !this.#finished) onError(internal('the request stream ended without a message'));
    });
  }

  /** The request messages of a client- or bidi-streaming call, with backpressure towards the client. */
  requests(): AsyncIterable<Buffer> {
    const stream = this.#stream;
    const queue: Buffer[] = [];
    let queued = 0;
    let ended = false;
    let failure: unknown;
    let stopped = false;
    let wake: (() => void) | undefined;
    const notify = () => {
      const w = wake;
      wake = undefined;
      w?.();
    };
    stream.on('data', (chunk: Buffer) => {
      if (stopped || failure !== undefined) return;
      try {
        for (const m of this.#decoder.push(chunk)) {
          queue.push(m);
          queued += m.length;
        }
      } catch (err) {
        failure = err;
      }
      if (queued > REQUEST_QUEUE_BYTES) stream.pause();
      notify();
    });
    stream.once('end', () => {
      if (this.#decoder.partial && failure === undefined) {
        failure = internal('the request stream ended inside a message');
      }
      ended = true;
      notify();
    });
    stream.once('close', notify);
    this.#onExpire.add(notify);
    const next = async (): Promise<IteratorResult<Buffer>> => {
      for (;;) {
        if (failure !== undefined) throw failure;
        const m = queue.shift();
        if (m) {
          queued -= m.length;
          if (queued <= REQUEST_QUEUE_BYTES && stream.isPaused()) stream.resume();
          return { value: m, done: false };
        }
        if (this.#cancelled) throw this.#cancelled;
        if (ended || stopped) return { value: undefined, done: true };
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
      }
    };
    return {
      [Symbol.asyncIterator]: () => ({
        next,
        // The handler stopped reading: responses may still follow, so the stream stays open.
        return: async () => {
          stopped = true;
          queue.length = 0;
          if (stream.isPaused()) stream.resume();
          return { value: undefined, done: true };
        },
      }),
    };
  }

  /** Sends the one response and an OK status. Throws (sending nothing) when the message is too big. */
  sendUnary(message: Uint8Array): void {
    if (this.#finished) return;
    this.#checkSize(message);
    this.#finish();
    const stream = this.#stream;
    if (stream.destroyed) return;
    this.#respond();
    stream.end(framedMessage(message));
  }

  /**
   * Sends one message of a response stream. Returns false when the stream's buffer is full: wait for
   * `drained()` before the next. Throws when the call was cancelled.
   */
  write(message: Uint8Array): boolean {
    if (this.#cancelled) throw this.#cancelled;
    if (this.#finished) throw unavailable('the call has already finished');
    this.#checkSize(message);
    if (!this.#responded) this.#respond();
    const stream = this.#stream;
    if (message.byteLength < COPY_BELOW) return stream.write(framedMessage(message));
    stream.cork();
    stream.write(messagePrefix(message.byteLength));
    const ok = stream.write(message);
    stream.uncork();
    return ok;
  }

  /** Resolves when the response stream can take more; rejects when the call is cancelled meanwhile. */
  drained(): Promise<void> {
    if (this.#cancelled) return Promise.reject(this.#cancelled);
    return new Promise((resolve, reject) => {
      const stream = this.#stream;
      const onDrain = () => {
        stream.off('close', onClose);
        this.#onExpire.delete(onClose);
        resolve();
      };
      const onClose = () => {
        stream.off('drain', onDrain);
        stream.off('close', onClose);
        this.#onExpire.delete(onClose);
        reject(this.#cancelled ?? unavailable('the call has already finished'));
      };
      stream.once('drain', onDrain);
      stream.once('close', onClose);
      this.#onExpire.add(onClose);
    });
  }

  /**
   * Ends the call with `code` (0 = OK) and, for failures, a message the client shows; `headers` go with
   * a trailers-only answer (a call refused before any response).
   */
  end(code: number, details = '', headers: Record<string, string> = {}): void {
    if (this.#finished) return;
    this.#finish();
    const stream = this.#stream;
    if (stream.destroyed || stream.closed) return;
    const status: Record<string, string> = { 'grpc-status': String(code) };
    if (details !== '') status['grpc-message'] = encodeStatusMessage(details);
    if (this.#responded) {
      this.#trailers = status;
      stream.end();
      return;
    }
    // Trailers-only: the status rides on the response headers.
    this.#statusOut = true;
    stream.respond(
      { ':status': 200, 'content-type': 'application/grpc', ...headers, ...status },
      TRAILERS_ONLY,
    );
  }

  /**
   * Ends the call with `code` now, whatever it has left to send: when responses still wait for the client
   * to take them (one that stopped reading), the stream is reset instead of the status waiting behind
   * them, which drops them and frees the stream; the client then sees the reset's status (RESET_FOR_STATUS),
   * without `details`. With nothing waiting, as `end`.
   */
  abort(code: number, details = ''): void {
    if (this.#finished) return;
    const stream = this.#stream;
    if (!this.#responded || stream.writableLength === 0) {
      this.end(code, details);
      return;
    }
    this.#finish();
    if (!stream.destroyed && !stream.closed)
      stream.close(RESET_FOR_STATUS.get(code) ?? constants.NGHTTP2_CANCEL);
  }

  #respond(): void {
    this.#responded = true;
    const stream = this.#stream;
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, WITH_TRAILERS);
    stream.once('wantTrailers', () => {
      this.#statusOut = true;
      stream.sendTrailers(this.#trailers);
    });
  }

  #checkSize(message: Uint8Array): void {
    if (message.byteLength > this.#maxSend) {
      throw resourceExhausted(`Sent message larger than max (${message.byteLength} vs. ${this.#maxSend})`);
    }
  }

  #finish(): void {
    this.#finished = true;
  }

  /**
   * The deadline passed. A call still running is ended DEADLINE_EXCEEDED, by a reset when responses wait
   * (`abort`); one that has ended but whose status still waits behind responses the client has not taken
   * is reset: neither the status nor those responses can be of use to the client any more, and the stream
   * would otherwise hold them until the connection goes.
   */
  #expire(): void {
    if (this.#finished) {
      const stream = this.#stream;
      if (!this.#statusOut && !stream.destroyed && !stream.closed) stream.close(constants.NGHTTP2_CANCEL);
      return;
    }
    this.#cancelled = deadlineExceeded('Deadline Exceeded');
    this.abort(status.DEADLINE_EXCEEDED, this.#cancelled.message);
    this.#onCancel?.(this.#cancelled);
    for (const wake of this.#onExpire) wake();
    this.#onExpire.clear();
  }

  #gone(): void {
    if (this.#finished) return;
    this.#finish();
    this.#cancelled = unavailable('call cancelled by the client');
    this.#onCancel?.(this.#cancelled);
  }
}
