// Content layers of an ImageSpec as additions. Validate the spec first (validateImageSpec): digests here are
// trusted to be well formed.
import type { Descriptor } from '../../oci/descriptor.ts';
import { type Digest, digestOf } from '../../oci/digest.ts';
import { MediaType } from '../../oci/media-types.ts';
import type { ContentLayer } from '../spec.ts';
import type { Addition } from './layers.ts';

/**
 * One addition per content layer, in spec order. A remote layer contributes its descriptor (with the URL in
 * `urls`) and its diff_id, or its digest when diffId is empty (uncompressed); a direct layer is an
 * uncompressed tar whose digest and diff_id are both sha256(content). History names the digest, never the
 * URL, which may carry a signed token. `urls: false` leaves the URL out of the descriptor: clients then fetch
 * the layer through the facade (verified, cached) instead of going to the URL on their own — containerd
 * tries a descriptor's `urls` before the registry, and skopeo does not copy such "foreign" blobs at all.
 */
export function contentLayerAdditions(
  layers: readonly ContentLayer[],
  options: { urls?: boolean } = {},
): Addition[] {
  return layers.map((layer, i) => {
    if (layer.kind === 'direct') {
      const digest = digestOf(layer.content);
      return {
        source: `content layer ${i} (direct)`,
        layers: [
          {
            descriptor: { mediaType: MediaType.ociLayer, digest, size: layer.content.byteLength },
            diffId: digest,
            origin: { kind: 'direct', content: layer.content },
          },
        ],
      };
    }
    const digest = layer.digest as Digest;
    const descriptor: Descriptor = { mediaType: layer.mediaType, digest, size: layer.size };
    if (layer.url !== '' && options.urls !== false) descriptor.urls = [layer.url];
    return {
      source: `content layer ${i} (remote ${digest})`,
      layers: [
        {
          descriptor,
          diffId: (layer.diffId === '' ? layer.digest : layer.diffId) as Digest,
          origin: { kind: 'remote', url: layer.url },
        },
      ],
    };
  });
}
