// Which blobs the namespace holds so far during a pull, as promises: the unpacker waits on a layer's
// entry and starts applying it the moment its fetch commits, while other layers are still downloading.
import type { Labels } from '../daemon-api.ts';

interface Entry {
  promise: Promise<Labels>;
  resolve: (labels: Labels) => void;
  reject: (err: unknown) => void;
  settled: boolean;
}

export class Presence {
  private readonly entries = new Map<string, Entry>();
  private failure: { err: unknown } | undefined;

  private entry(digest: string): Entry {
    let e = this.entries.get(digest);
    if (!e) {
      let resolve!: (labels: Labels) => void;
      let reject!: (err: unknown) => void;
      const promise = new Promise<Labels>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      // Nobody may wait on a blob that fails; that is no unhandled rejection.
      promise.catch(() => {});
      e = { promise, resolve, reject, settled: false };
      this.entries.set(digest, e);
      if (this.failure) {
        e.settled = true;
        e.reject(this.failure.err);
      }
    }
    return e;
  }

  /** The blob is in the namespace now, with these labels. */
  present(digest: string, labels: Labels): void {
    const e = this.entry(digest);
    if (e.settled) return;
    e.settled = true;
    e.resolve(labels);
  }

  /** Resolves with the blob's labels once it is present; rejects if the pull fails first. */
  wait(digest: string): Promise<Labels> {
    return this.entry(digest).promise;
  }

  /** Fails every wait still pending, and any later one. */
  fail(err: unknown): void {
    this.failure ??= { err };
    for (const e of this.entries.values()) {
      if (!e.settled) {
        e.settled = true;
        e.reject(err);
      }
    }
  }
}
