// Worker threads that apply layers (apply-worker.ts), kept between applies: the applier makes several
// file-system calls per entry, and on a worker they are plain synchronous calls instead of thread-pool
// round trips, while the daemon's event loop stays free. A worker takes one layer at a time; at most
// `max` run at once and further applies wait their turn.
import type { Readable } from 'node:stream';
import { Worker } from 'node:worker_threads';
import { FileRange } from '../../content/file-range.ts';
import { aborted, internal, StrataError } from '../../errors.ts';
import { fromWire, toWire } from '../thread-errors.ts';
import { type ApplyJob, copyableOptions, type FromWorker, type ToWorker } from './apply-messages.ts';
import type { ApplyOptions, ApplyResult } from './apply-options.ts';
import { mapStreamError } from './layer-applier.ts';

/** Two cores' worth by default: more appliers at once only contend for the same disk and CPUs. */
const DEFAULT_MAX = 2;
/** Stream chunks sent ahead of the worker's reading: bounds the memory a fast source can fill. */
const STREAM_CREDITS = 8;

export class ApplyWorkers {
  readonly #max: number;
  readonly #all = new Set<Worker>();
  readonly #idle: Worker[] = [];
  readonly #waiting: { resolve(w: Worker): void; reject(err: unknown): void }[] = [];
  #closed = false;

  constructor(opts: { max?: number } = {}) {
    this.#max = Math.max(1, opts.max ?? DEFAULT_MAX);
  }

  /** Starts a worker now, so that the first apply does not wait for one to load. */
  warm(): void {
    if (this.#closed || this.#all.size > 0) return;
    const w = this.#spawn();
    w.unref();
    this.#idle.push(w);
  }

  /** Stops every worker; applies under way or waiting fail. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const w of this.#waiting.splice(0)) w.reject(internal('layer apply workers stopped'));
    this.#idle.length = 0;
    const all = [...this.#all];
    this.#all.clear();
    await Promise.all(all.map((w) => w.terminate()));
  }

  /** Applies `layer` onto `root` on a worker; see applyLayer. */
  async apply(root: string, layer: Readable, opts: ApplyOptions): Promise<ApplyResult> {
    const worker = await this.#acquire(opts.signal);
    let reusable = true;
    try {
      return await this.#run(worker, root, layer, opts, () => {
        reusable = false;
      });
    } finally {
      this.#release(worker, reusable);
    }
  }

  #spawn(): Worker {
    const w = new Worker(new URL('./apply-worker.ts', import.meta.url));
    // A worker that dies is dropped; the apply it ran fails through its own listeners.
    w.on('error', () => {});
    w.on('exit', () => {
      this.#all.delete(w);
      const i = this.#idle.indexOf(w);
      if (i >= 0) this.#idle.splice(i, 1);
    });
    this.#all.add(w);
    return w;
  }

  #acquire(signal: AbortSignal | undefined): Promise<Worker> {
    if (this.#closed) return Promise.reject(internal('layer apply workers stopped'));
    const idle = this.#idle.pop();
    if (idle) {
      idle.ref();
      return Promise.resolve(idle);
    }
    if (this.#all.size < this.#max) return Promise.resolve(this.#spawn());
    return new Promise<Worker>((resolve, reject) => {
      const waiter = {
        resolve: (w: Worker) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(w);
        },
        reject: (err: unknown) => {
          signal?.removeEventListener('abort', onAbort);
          reject(err);
        },
      };
      const onAbort = () => {
        const i = this.#waiting.indexOf(waiter);
        if (i >= 0) this.#waiting.splice(i, 1);
        reject(aborted('layer apply aborted', { cause: signal?.reason }));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiting.push(waiter);
    });
  }

  #release(w: Worker, reusable: boolean): void {
    if (!reusable || this.#closed || !this.#all.has(w)) {
      this.#all.delete(w);
      void w.terminate();
      // A place is free: the next waiter gets a fresh worker.
      const next = this.#closed ? undefined : this.#waiting.shift();
      if (next) next.resolve(this.#spawn());
      return;
    }
    const next = this.#waiting.shift();
    if (next) {
      next.resolve(w);
      return;
    }
    // Idle, it must not keep the process alive.
    w.unref();
    this.#idle.push(w);
  }

  async #run(
    worker: Worker,
    root: string,
    layer: Readable,
    opts: ApplyOptions,
    broken: () => void,
  ): Promise<ApplyResult> {
    const file = layer instanceof FileRange && layer.whole ? await layer.open() : undefined;
    const post = (m: ToWorker) => worker.postMessage(m);
    return new Promise<ApplyResult>((resolve, reject) => {
      let finished = false;
      let sourceError: unknown;
      let credits = STREAM_CREDITS;
      let wakePump: (() => void) | undefined;
      const signal = opts.signal;
      const onAbort = () => post({ type: 'abort' });
      const finish = (settle: () => void) => {
        if (finished) return;
        finished = true;
        worker.off('message', onMessage);
        worker.off('error', onError);
        worker.off('exit', onExit);
        signal?.removeEventListener('abort', onAbort);
        wakePump?.();
        settle();
      };
      const fail = (err: unknown) =>
        finish(() => {
          if (!file) layer.destroy();
          if (sourceError !== undefined) reject(mapStreamError(sourceError));
          else if (signal?.aborted) reject(aborted('layer apply aborted', { cause: signal.reason }));
          else reject(err);
        });
      const onMessage = (m: FromWorker) => {
        switch (m.type) {
          case 'ack':
            credits++;
            wakePump?.();
            return;
          case 'skip':
            opts.onSkip?.(m.kind, m.name);
            return;
          case 'whiteout': {
            const made = opts.overlay
              ? opts.overlay.whiteout(m.path)
              : Promise.reject(internal('a whiteout asked for outside an overlay'));
            made.then(
              () => post({ type: 'whiteout-done', id: m.id }),
              (err: unknown) => post({ type: 'whiteout-done', id: m.id, error: toWire(err) }),
            );
            return;
          }
          case 'done':
            finish(() => resolve(m.result));
            return;
          case 'failed': {
            const err = fromWire(m.error);
            fail(
              err instanceof StrataError ? err : internal(`applying layer: ${err.message}`, { cause: err }),
            );
            return;
          }
        }
      };
      const onError = (err: unknown) => {
        broken();
        fail(internal(`layer apply worker failed: ${err instanceof Error ? err.message : String(err)}`));
      };
      const onExit = (code: number) => {
        broken();
        fail(internal(`layer apply worker exited with code ${code}`));
      };
      worker.on('message', onMessage);
      worker.on('error', onError);
      worker.on('exit', onExit);
      signal?.addEventListener('abort', onAbort, { once: true });
      const job: ApplyJob = {
        type: 'apply',
        root,
        ...(file && { fd: file.fd }),
        options: copyableOptions(opts),
        ...(opts.overlay && { lowers: opts.overlay.lowers }),
      };
      post(job);
      if (signal?.aborted) onAbort();
      if (file) return;
      // Not a file: its chunks go over as messages, at most STREAM_CREDITS ahead of the worker.
      void (async () => {
        try {
          for await (const chunk of layer) {
            while (credits <= 0 && !finished) await new Promise<void>((r) => (wakePump = r));
            if (finished) return;
            credits--;
            post({ type: 'data', chunk: chunk as Buffer });
          }
          if (!finished) post({ type: 'end' });
        } catch (err) {
          if (finished) return;
          sourceError = err;
          post({ type: 'abort' });
        }
      })();
    });
  }
}
