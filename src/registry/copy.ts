// Copy an image (a manifest, or an index with all its manifests) between repositories, within a registry
// or across registries. Blobs go first (mounted when source and target share a registry, streamed
// otherwise), then manifests children-first, so the registry never holds a manifest whose parts are missing.
import { internal } from '../errors.ts';
import type { Descriptor } from '../oci/descriptor.ts';
import { formatReference, type Reference } from '../oci/reference.ts';
import { childrenOf, isManifestLike, walk } from '../oci/walk.ts';
import type { RegistryClient, UploadOutcome } from './client.ts';

export interface CopyOptions {
  concurrency?: number;
  /** Upload blobs in chunks of this size (default: one PUT each). */
  chunkSize?: number;
  signal?: AbortSignal;
  onBlob?: (desc: Descriptor, outcome: UploadOutcome) => void;
}

export interface CopyResult {
  descriptor: Descriptor;
  blobs: Record<UploadOutcome, number>;
}

/** Copies `src` to `dst` (a tag, or a digest that must be the source's). Returns the root descriptor. */
export async function copyImage(
  client: RegistryClient,
  src: Reference,
  dst: Reference,
  options: CopyOptions = {},
): Promise<CopyResult> {
  const signal = options.signal;
  const root = await client.resolve(src, { signal });
  const srcRepo = { domain: src.domain, path: src.path };
  const dstRepo = { domain: dst.domain, path: dst.path };
  const sameRegistry = src.domain === dst.domain && src.path !== dst.path;
  const manifests: Array<{ desc: Descriptor; bytes: Buffer; mediaType: string }> = [];
  const blobs: Record<UploadOutcome, number> = { exists: 0, mounted: 0, uploaded: 0 };

  await walk(
    [root],
    async (desc, ctx) => {
      if (isManifestLike(desc)) {
        const got = await client.fetchManifest(src, { descriptor: desc, signal: ctx.signal });
        manifests.push({ desc, bytes: got.bytes, mediaType: got.mediaType });
        return childrenOf(got.parsed);
      }
      const outcome = await client.uploadBlob(
        dstRepo,
        desc,
        () => client.fetchBlob(srcRepo, desc, { signal: ctx.signal }),
        {
          signal: ctx.signal,
          ...(sameRegistry ? { mountFrom: srcRepo } : {}),
          ...(options.chunkSize ? { chunkSize: options.chunkSize } : {}),
        },
      );
      blobs[outcome]++;
      options.onBlob?.(desc, outcome);
      return [];
    },
    { concurrency: options.concurrency ?? 4, signal },
  );

  // Discovery order is parents first; push in reverse so every manifest's children exist already.
  for (const m of manifests.slice(1).reverse()) {
    await client.putManifest({ ...dst, tag: undefined, digest: m.desc.digest }, m.bytes, m.mediaType, {
      signal,
    });
  }
  const top = manifests[0];
  if (!top) throw internal(`copy ${formatReference(src)}: nothing was fetched`);
  const target: Reference =
    dst.tag !== undefined || dst.digest !== undefined ? dst : { ...dst, digest: root.digest };
  await client.putManifest(target, top.bytes, top.mediaType, { signal });
  return { descriptor: root, blobs };
}
