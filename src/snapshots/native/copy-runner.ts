// Runs parent-tree copies on a worker thread (copy-worker.ts): a copy is a few file-system calls per
// entry, and as plain synchronous calls there they cost a fraction of what thread-pool round trips from
// the event loop did. Copies run one after another on the one worker, kept between copies.
import { Worker } from 'node:worker_threads';
import { internal, StrataError } from '../../errors.ts';
import { fromWire } from '../thread-errors.ts';
import type { CopyAnswer, CopyJob } from './copy-messages.ts';
import type { CopyTreeResult } from './tree-copier.ts';

interface Pending {
  resolve(r: CopyTreeResult): void;
  reject(err: unknown): void;
}

export class CopyRunner {
  #worker: Worker | undefined;
  readonly #pending = new Map<number, Pending>();
  #ids = 0;

  /** Starts the worker now, so that the first copy does not wait for it to load. */
  start(): void {
    this.#ensureWorker().unref();
  }

  /** Stops the worker; copies under way fail. The next copy starts a new one. */
  async close(): Promise<void> {
    const w = this.#worker;
    this.#worker = undefined;
    this.#failAll(internal('snapshot copy worker stopped'));
    await w?.terminate();
  }

  /** Copies the tree under `src` into the existing `dst` (see copyTree; extended attributes excepted). */
  copy(src: string, dst: string, chown: boolean, signal?: AbortSignal): Promise<CopyTreeResult> {
    const abort = new SharedArrayBuffer(4);
    const onAbort = () => Atomics.store(new Int32Array(abort), 0, 1);
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) onAbort();
    const id = ++this.#ids;
    const w = this.#ensureWorker();
    w.ref();
    const job: CopyJob = { id, src, dst, chown, abort };
    return new Promise<CopyTreeResult>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      w.postMessage(job);
    }).finally(() => {
      signal?.removeEventListener('abort', onAbort);
      // Idle, it must not keep the process alive.
      if (this.#pending.size === 0) this.#worker?.unref();
    });
  }

  #ensureWorker(): Worker {
    if (this.#worker) return this.#worker;
    const w = new Worker(new URL('./copy-worker.ts', import.meta.url));
    w.on('message', (answer: CopyAnswer) => {
      const p = this.#pending.get(answer.id);
      if (!p) return;
      this.#pending.delete(answer.id);
      if ('result' in answer) return p.resolve(answer.result);
      const err = fromWire(answer.error);
      p.reject(err instanceof StrataError ? err : internal(`copying of parent failed: ${err.message}`));
    });
    const fail = (err: unknown) => {
      if (this.#worker !== w) return;
      this.#worker = undefined;
      this.#failAll(
        internal(`snapshot copy worker failed: ${err instanceof Error ? err.message : String(err)}`),
      );
    };
    w.on('error', fail);
    w.on('exit', (code) => fail(new Error(`exited with code ${code}`)));
    this.#worker = w;
    return w;
  }

  #failAll(err: unknown): void {
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
  }
}
