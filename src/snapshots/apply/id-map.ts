// User-namespace style id mapping: owners in a layer are container ids, owners on disk are host ids.
import { invalidArgument } from '../../errors.ts';

/** `size` ids starting at `containerId` map to ids starting at `hostId` (as in an OCI runtime spec). */
export interface IdRange {
  containerId: number;
  hostId: number;
  size: number;
}

/** The host id for a container id; without ranges ids map to themselves. */
export function mapId(id: number, ranges: readonly IdRange[] | undefined, what: 'uid' | 'gid'): number {
  if (ranges === undefined || ranges.length === 0) return id;
  for (const r of ranges) {
    if (id >= r.containerId && id < r.containerId + r.size) return r.hostId + (id - r.containerId);
  }
  throw invalidArgument(`${what} ${id} is outside the ${what} map`);
}
