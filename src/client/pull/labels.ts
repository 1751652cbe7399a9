// The content labels a pull writes, named and numbered as containerd names them, so its garbage collector
// and ctr read our results as their own: references from a parent document to its children, the
// repositories a blob came from, a layer's uncompressed digest, and the snapshot an image's config holds.

import { splitHostPort } from '../../host-port.ts';
import type { Descriptor } from '../../oci/descriptor.ts';
import { encodedOf } from '../../oci/digest.ts';
import type { ParsedManifest } from '../../oci/manifest.ts';
import type { Labels } from '../daemon-api.ts';

export const LABEL_UNCOMPRESSED = 'containerd.io/uncompressed';
export const LABEL_GC_EXPIRE = 'containerd.io/gc.expire';
const GC_REF_CONTENT = 'containerd.io/gc.ref.content.';
const DISTRIBUTION_SOURCE = 'containerd.io/distribution.source.';
/** Label values (and key + value) above this are refused by the daemon. */
export const MAX_LABEL_BYTES = 4096;

export function snapshotGcLabel(snapshotter: string): string {
  return `containerd.io/gc.ref.snapshot.${snapshotter}`;
}

/**
 * The gc.ref labels a manifest or index carries for its children: `config`, `l.<i>` for layers, `m.<i>`
 * for an index's manifests. A key ending in `.` always gets its counter; others only from the second use.
 */
export function childGcLabels(parsed: ParsedManifest): Labels {
  const labels: Labels = {};
  const counters = new Map<string, number>();
  const add = (prefix: string, d: Descriptor): void => {
    const n = counters.get(prefix) ?? 0;
    counters.set(prefix, n + 1);
    let key = prefix;
    if (prefix.endsWith('.sha256.')) key += encodedOf(d.digest).slice(0, 12);
    else if (prefix.endsWith('.') || n > 0) key += String(n);
    labels[key] = d.digest;
  };
  if (parsed.kind === 'index') {
    for (const m of parsed.index.manifests) add(`${GC_REF_CONTENT}m.`, m);
  } else {
    add(`${GC_REF_CONTENT}config`, parsed.manifest.config);
    for (const l of parsed.manifest.layers) add(`${GC_REF_CONTENT}l.`, l);
  }
  return labels;
}

/** `containerd.io/distribution.source.<hostname>`: the registry host without its port. */
export function distributionSourceKey(domain: string): string {
  return `${DISTRIBUTION_SOURCE}${splitHostPort(domain).hostname}`;
}

/**
 * The distribution source label after adding `repo` to what `current` lists: sorted, no duplicates.
 * Undefined when nothing changes or the value would be too long for a label (containerd skips it then).
 */
export function appendDistributionSource(
  current: Labels,
  domain: string,
  repo: string,
): { key: string; value: string } | undefined {
  const key = distributionSourceKey(domain);
  const have = current[key];
  const repos = new Set(have ? have.split(',').filter((r) => r !== '') : []);
  if (repos.has(repo)) return undefined;
  repos.add(repo);
  const value = [...repos].sort().join(',');
  if (Buffer.byteLength(key) + Buffer.byteLength(value) > MAX_LABEL_BYTES) return undefined;
  return { key, value };
}

/** Labels in `want` whose value in `have` differs (what an update must send). */
export function changedLabels(have: Labels, want: Labels): Labels {
  const out: Labels = {};
  for (const [k, v] of Object.entries(want)) if (have[k] !== v) out[k] = v;
  return out;
}
