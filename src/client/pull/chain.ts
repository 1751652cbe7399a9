// Chain IDs, as the OCI image spec defines them: the identity of a stack of layers, so a snapshot made by
// applying layers 0..i is found again whatever image brings the same stack.
import { createHash } from 'node:crypto';
import { invalidArgument } from '../../errors.ts';
import type { Digest } from '../../oci/digest.ts';

/** chain[0] = diff[0]; chain[i] = sha256(chain[i-1] + " " + diff[i]). */
export function chainIds(diffIds: readonly Digest[]): Digest[] {
  const out: Digest[] = [];
  for (const [i, d] of diffIds.entries()) {
    if (i === 0) out.push(d);
    else {
      const hex = createHash('sha256')
        .update(`${out[i - 1]} ${d}`)
        .digest('hex');
      out.push(`sha256:${hex}` as Digest);
    }
  }
  return out;
}

/** The chain ID of the whole stack; refuses an empty one. */
export function topChainId(diffIds: readonly Digest[]): Digest {
  const chain = chainIds(diffIds);
  const top = chain.at(-1);
  if (top === undefined) throw invalidArgument('an image with no layers has no chain ID');
  return top;
}
