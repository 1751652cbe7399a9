// Pull an image from a registry into the content store: resolve the reference, then walk the descriptor
// graph fetching only what the store lacks. Manifests and indexes are fetched whole (capped, verified) so
// their children can be read; configs and layers stream into resumable ingests, so a pull interrupted
// mid-layer picks up at the offset already on disk.
import { Readable } from 'node:stream';
import type { ContentStore } from '../content/store.ts';
import { notFound } from '../errors.ts';
import type { Descriptor, Platform } from '../oci/descriptor.ts';
import { MAX_MANIFEST_BYTES, parseManifest } from '../oci/manifest.ts';
import { isIndexType } from '../oci/media-types.ts';
import { formatPlatform, parsePlatform } from '../oci/platform.ts';
import { formatReference, type Reference } from '../oci/reference.ts';
import type { RegistryClient } from './client.ts';
import { readCapped } from './http.ts';
import { childrenOf, isManifestLike, selectPlatform, walk } from './walk.ts';

export interface PullOptions {
  /** Keep only this platform's manifest of an index; all platforms when omitted. */
  platform?: Platform | string;
  /** Blobs fetched at once (default 6, as skopeo and podman do). */
  concurrency?: number;
  signal?: AbortSignal;
  /** Told about each blob: fetched now, or already in the store. */
  onBlob?: (desc: Descriptor, outcome: 'fetched' | 'present') => void;
}

export interface PullResult {
  /** What the reference resolved to (a manifest or an index). */
  descriptor: Descriptor;
  /** The image manifests pulled (one per platform kept). */
  manifests: Descriptor[];
  /** Blobs fetched now / found in the store already. */
  fetched: number;
  present: number;
  /** Bytes fetched now. */
  bytes: number;
}

/** The ingest ref for a descriptor, by kind, as containerd names them. */
export function ingestRef(desc: Descriptor): string {
  const kind = isIndexType(desc.mediaType) ? 'index' : isManifestLike(desc) ? 'manifest' : 'layer';
  return `${kind}-${desc.digest}`;
}

export async function pullToStore(
  client: RegistryClient,
  store: ContentStore,
  ref: Reference,
  options: PullOptions = {},
): Promise<PullResult> {
  const platform = typeof options.platform === 'string' ? parsePlatform(options.platform) : options.platform;
  const root = await client.resolve(ref, { signal: options.signal });
  const result: PullResult = { descriptor: root, manifests: [], fetched: 0, present: 0, bytes: 0 };
  const repo = { domain: ref.domain, path: ref.path };

  const note = (desc: Descriptor, present: boolean): void => {
    if (present) result.present++;
    else {
      result.fetched++;
      result.bytes += desc.size;
    }
    options.onBlob?.(desc, present ? 'present' : 'fetched');
  };

  await walk(
    [root],
    async (desc, { signal }) => {
      if (!isManifestLike(desc)) {
        const present = await store.has(desc.digest);
        if (!present) {
          await store.ingestStream(
            ingestRef(desc),
            // The store's commit checks size and digest, so the client need not hash the bytes too.
            (offset) => client.fetchBlob(repo, desc, { range: { offset }, signal, verify: false }),
            { digest: desc.digest, size: desc.size },
          );
        }
        note(desc, present);
        return [];
      }
      let bytes: Buffer;
      const present = await store.has(desc.digest);
      if (present) {
        bytes = await readCapped(
          await store.reader(desc.digest, undefined, signal),
          MAX_MANIFEST_BYTES,
          'read manifest',
        );
      } else {
        bytes = (await client.fetchManifest(ref, { descriptor: desc, signal })).bytes;
        await store.ingestStream(ingestRef(desc), Readable.from([bytes]), {
          digest: desc.digest,
          size: desc.size,
        });
      }
      note(desc, present);
      const parsed = parseManifest(bytes, desc.mediaType);
      if (parsed.kind === 'manifest') {
        result.manifests.push(desc);
        return childrenOf(parsed);
      }
      const chosen = selectPlatform(parsed.index.manifests, platform);
      if (chosen.length === 0 && platform) {
        throw notFound(`${formatReference(ref)}: no manifest for platform ${formatPlatform(platform)}`);
      }
      return chosen;
    },
    { concurrency: options.concurrency ?? 6, signal: options.signal },
  );
  return result;
}
