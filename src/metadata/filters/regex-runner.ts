// Runs `~=` tests on a worker thread. A regular expression is linear in text × program, but a program
// of a thousand instructions over kilobytes of labels still costs seconds; on the daemon's event loop
// that would stall every client. Texts go in chunks, taken in turn from each waiting request, so one
// costly filter delays other filters by at most a chunk.
import { Worker } from 'node:worker_threads';
import type { RegexAnswer, RegexJob } from './regex-worker.ts';

/**
 * A message carries texts up to this many UTF-16 units (or one longer text): the cost of a costly
 * pattern grows with the text, so a chunk ends soon, yet short names still go by the hundred.
 */
const CHUNK_UNITS = 8192;
const CHUNK_TEXTS = 256;

interface Pending {
  pattern: string;
  texts: string[];
  next: number;
  matches: Uint8Array;
  invalid: boolean;
  resolve(r: { matches: Uint8Array; invalid: boolean }): void;
  reject(err: unknown): void;
}

export class RegexRunner {
  #worker: Worker | undefined;
  /** Requests with texts still to send, served in turn. */
  readonly #queue: Pending[] = [];
  #inFlight: { req: Pending; at: number; id: number } | undefined;
  #ids = 0;

  /** Which of `texts` match `pattern` (1 = match); a pattern that does not compile matches none. */
  test(pattern: string, texts: readonly string[]): Promise<{ matches: Uint8Array; invalid: boolean }> {
    if (texts.length === 0) return Promise.resolve({ matches: new Uint8Array(), invalid: false });
    return new Promise((resolve, reject) => {
      this.#queue.push({
        pattern,
        texts: [...texts],
        next: 0,
        matches: new Uint8Array(texts.length),
        invalid: false,
        resolve,
        reject,
      });
      this.#pump();
    });
  }

  /** Stops the worker; waiting requests fail. The next test starts a new one. */
  async close(): Promise<void> {
    const w = this.#worker;
    this.#worker = undefined;
    this.#failAll(new Error('regex worker stopped'));
    await w?.terminate();
  }

  #pump(): void {
    if (this.#inFlight) return;
    const req = this.#queue.shift();
    if (!req) {
      // Idle: the worker stays for the next filter but must not keep the process alive.
      this.#worker?.unref();
      return;
    }
    const at = req.next;
    let end = at + 1;
    let units = req.texts[at]!.length;
    while (end < req.texts.length && end - at < CHUNK_TEXTS) {
      units += req.texts[end]!.length;
      if (units > CHUNK_UNITS) break;
      end++;
    }
    const texts = req.texts.slice(at, end);
    req.next = end;
    const id = ++this.#ids;
    this.#inFlight = { req, at, id };
    const job: RegexJob = { id, pattern: req.pattern, texts };
    const w = this.#ensureWorker();
    w.ref();
    w.postMessage(job);
  }

  #ensureWorker(): Worker {
    if (this.#worker) return this.#worker;
    const w = new Worker(new URL('./regex-worker.ts', import.meta.url));
    w.on('message', (answer: RegexAnswer) => {
      const f = this.#inFlight;
      if (!f || f.id !== answer.id) return;
      this.#inFlight = undefined;
      f.req.matches.set(answer.matches, f.at);
      f.req.invalid ||= answer.invalid;
      const req = f.req;
      if (req.next >= req.texts.length) req.resolve({ matches: req.matches, invalid: req.invalid });
      // Back of the line: other requests get their turn before this one's next chunk.
      else this.#queue.push(req);
      this.#pump();
    });
    const fail = (err: unknown) => {
      if (this.#worker !== w) return;
      this.#worker = undefined;
      this.#failAll(err);
    };
    w.on('error', fail);
    w.on('exit', (code) => fail(new Error(`regex worker exited with code ${code}`)));
    this.#worker = w;
    return w;
  }

  #failAll(err: unknown): void {
    const f = this.#inFlight;
    this.#inFlight = undefined;
    f?.req.reject(err);
    for (const req of this.#queue.splice(0)) req.reject(err);
  }
}
