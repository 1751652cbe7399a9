// Applying an OCI layer onto a directory that holds the parent snapshot: the entry callers use. The
// applier itself (layer-applier.ts) runs on a worker thread (apply-workers.ts).
//
// A failed apply leaves the root partly changed: callers apply into a scratch snapshot and drop it on
// failure, as containerd does.
import type { Readable } from 'node:stream';
import { aborted } from '../../errors.ts';
import type { ApplyOptions, ApplyResult } from './apply-options.ts';
import { ApplyWorkers } from './apply-workers.ts';

export interface ApplyLayerOptions extends ApplyOptions {
  /** Worker threads to apply on; without them the apply starts a worker of its own and stops it after. */
  workers?: ApplyWorkers;
}

/**
 * Apply one layer onto `root` (a directory holding the parent snapshot) and return its diff_id: the
 * sha256 of the uncompressed tar, computed from the very bytes that were applied. The work runs on a
 * worker thread (`opts.workers`, or one started for this call); a whole file (a blob from the content
 * store) is read and decoded there from its handle with reused buffers, other streams are passed over
 * in chunks. The caller destroys `layer` after.
 */
export async function applyLayer(
  root: string,
  layer: Readable,
  opts: ApplyLayerOptions = {},
): Promise<ApplyResult> {
  if (opts.signal?.aborted) throw aborted('layer apply aborted', { cause: opts.signal.reason });
  const workers = opts.workers ?? new ApplyWorkers({ max: 1 });
  try {
    return await workers.apply(root, layer, opts);
  } finally {
    if (!opts.workers) await workers.close();
  }
}
