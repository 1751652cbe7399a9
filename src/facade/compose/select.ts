// Picks the manifest of an index that a configured platform runs. Gitpod takes manifests[0] whatever it is
// (possibly an attestation, possibly another architecture); we rank by platform and say what was there
// when nothing fits.
import { notFound } from '../../errors.ts';
import type { Descriptor, Platform } from '../../oci/descriptor.ts';
import type { ImageIndex } from '../../oci/manifest.ts';
import { isManifestType } from '../../oci/media-types.ts';
import { bestPlatformMatch, formatPlatform } from '../../oci/platform.ts';

export function selectManifest(index: ImageIndex, platform: Platform, where = 'base image'): Descriptor {
  const candidates = index.manifests.filter((d) => isManifestType(d.mediaType));
  const best = bestPlatformMatch(platform, candidates);
  if (best) return best;
  const available = index.manifests.map((d) => (d.platform ? formatPlatform(d.platform) : 'unknown'));
  throw notFound(
    `${where}: no manifest for platform ${formatPlatform(platform)}; the index has ${
      available.length === 0 ? 'none' : available.join(', ')
    }`,
  );
}
