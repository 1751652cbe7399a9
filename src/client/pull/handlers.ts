// The pull's small handlers over the walk, in containerd's shape: the children of a manifest or index,
// the gc.ref labels a parent carries for its children, and the platform filter on an index's manifests.
// Each wraps or stands beside the fetch handler (fetch.ts); pull composes them.
import type { Descriptor, Platform } from '../../oci/descriptor.ts';
import { type ImageManifest, type ParsedManifest, parseManifest } from '../../oci/manifest.ts';
import { childrenOf, type Handler, isManifestLike, noPlatformMatch, selectPlatform } from '../../oci/walk.ts';
import type { DaemonApi, Labels } from '../daemon-api.ts';
import { changedLabels, childGcLabels } from './labels.ts';

/** What the fetch handler learnt about the documents it fetched or found, for the handlers after it. */
export interface Documents {
  /** The bytes of each manifest and index reached (verified against its digest). */
  bytes: Map<string, Buffer>;
  /** The labels each document has in the daemon now. */
  labels: Map<string, Labels>;
}

/** A document's children as a parsed manifest or index, for the wrappers below. */
export type ChildrenHandler = (desc: Descriptor, parsed: ParsedManifest) => Promise<readonly Descriptor[]>;

/**
 * Children of a manifest or index, read from what the fetch handler kept; blobs have none. Tells
 * `onManifest` about each image manifest before its config and layers are visited.
 */
export function children(
  docs: Documents,
  next: ChildrenHandler,
  onManifest?: (desc: Descriptor, manifest: ImageManifest) => void,
): Handler {
  return async (desc) => {
    if (!isManifestLike(desc)) return [];
    const bytes = docs.bytes.get(desc.digest);
    if (!bytes) return [];
    const parsed = parseManifest(bytes, desc.mediaType);
    if (parsed.kind === 'manifest') onManifest?.(desc, parsed.manifest);
    return next(desc, parsed);
  };
}

/** Every child of a parsed document: config then layers, or an index's manifests. */
export const allChildren: ChildrenHandler = async (_desc, parsed) => childrenOf(parsed);

/** Gives a document the gc.ref labels of all its children (before any filter), as containerd does. */
export function setGcLabels(api: DaemonApi, docs: Documents, next: ChildrenHandler): ChildrenHandler {
  return async (desc, parsed) => {
    const have = docs.labels.get(desc.digest) ?? {};
    const update = changedLabels(have, childGcLabels(parsed));
    if (Object.keys(update).length > 0) {
      await api.updateContentLabels(desc.digest, update);
      docs.labels.set(desc.digest, { ...have, ...update });
    }
    return next(desc, parsed);
  };
}

/**
 * Keeps the one child of an index containerd would follow for `platform` (see selectPlatform); NotFound in
 * containerd's words, naming the image's target `root`, when none fits. Without a platform every child
 * stays.
 */
export function filterPlatform(
  platform: Platform | undefined,
  root: Descriptor,
  next: ChildrenHandler,
): ChildrenHandler {
  return async (desc, parsed) => {
    const out = await next(desc, parsed);
    if (parsed.kind !== 'index' || platform === undefined) return out;
    const chosen = selectPlatform(out, platform);
    if (chosen.length === 0) throw noPlatformMatch(root);
    return chosen;
  };
}
