// Work over a large list (a context's files) runs on the event loop the whole builder shares: requests,
// status streams and health checks wait while it runs. It is cut into slices with a turn of the loop
// between, and a cancelled build stops it between two slices.
import { aborted } from '../errors.ts';

/** How long one slice of work holds the event loop before others get a turn. */
const SLICE_MS = 4;

/**
 * Calls `each` on `items` in slices of about SLICE_MS; `each` returning false stops. `task` names the
 * work in the error a cancellation raises. `items` may be a generator: each item it yields is one step.
 */
export async function inSlices<T>(
  items: Iterable<T>,
  signal: AbortSignal | undefined,
  task: string,
  each: (item: T) => boolean | undefined,
): Promise<void> {
  let sliceStart = performance.now();
  let i = 0;
  for (const item of items) {
    if (each(item) === false) return;
    if ((++i & 15) === 0 && performance.now() - sliceStart > SLICE_MS) {
      await new Promise((resolve) => setImmediate(resolve));
      if (signal?.aborted) throw aborted(`${task}: cancelled`, { cause: signal.reason });
      sliceStart = performance.now();
    }
  }
}
