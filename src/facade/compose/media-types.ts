// One family of media types per composed manifest. Added images may be OCI while the base is Docker (or the
// other way round); a Docker schema2 manifest listing OCI layer types (or vice versa) is accepted by
// containerd but not by every client, so layer types are converted to the manifest's family wherever an
// exact equivalent exists. The bytes are the same, so digests and sizes do not change.
import { bareMediaType, MediaType } from '../../oci/media-types.ts';

export type ManifestFamily = 'oci' | 'docker';

const OCI_TO_DOCKER = new Map<string, string>([
  [MediaType.ociLayer, MediaType.dockerLayer],
  [MediaType.ociLayerGzip, MediaType.dockerLayerGzip],
  [MediaType.ociLayerZstd, MediaType.dockerLayerZstd],
  [MediaType.ociLayerNondistributableGzip, MediaType.dockerLayerForeignGzip],
]);
const DOCKER_TO_OCI = new Map<string, string>([...OCI_TO_DOCKER].map(([o, d]) => [d, o]));

/** The layer types a Docker schema2 manifest can list (Docker defines no zstd one). */
const DOCKER_LAYERS = new Set<string>([
  MediaType.dockerLayer,
  MediaType.dockerLayerGzip,
  MediaType.dockerLayerForeignGzip,
]);

/**
 * The family of the composed manifest: the base's, unless that is Docker and a layer has no Docker type
 * (zstd: skopeo and buildah refuse containerd's `…diff.tar.zstd` in a schema2 manifest, as they would an
 * OCI type there), which only the OCI form can list.
 */
export function composedFamily(
  baseFamily: ManifestFamily,
  layerMediaTypes: readonly string[],
): ManifestFamily {
  if (baseFamily === 'oci') return 'oci';
  const listable = layerMediaTypes.every((mt) =>
    DOCKER_LAYERS.has(bareMediaType(layerMediaTypeIn('docker', mt))),
  );
  return listable ? 'docker' : 'oci';
}

/** The config media type in the given family (a Docker config in an OCI manifest is named as OCI's). */
export function configMediaTypeIn(family: ManifestFamily, mediaType: string): string {
  return family === 'oci' && bareMediaType(mediaType) === MediaType.dockerConfig
    ? MediaType.ociConfig
    : mediaType;
}

/** The manifest media type of a family. */
export function manifestMediaTypeOf(family: ManifestFamily): string {
  return family === 'docker' ? MediaType.dockerManifest : MediaType.ociManifest;
}

/**
 * The family of a manifest: its own `mediaType` when it has one, else its config's (Docker schema2 always
 * names itself; an OCI manifest may not).
 */
export function familyOf(manifestMediaType: string | undefined, configMediaType: string): ManifestFamily {
  const mt = bareMediaType(manifestMediaType ?? '');
  if (mt === MediaType.dockerManifest) return 'docker';
  if (mt === MediaType.ociManifest) return 'oci';
  return bareMediaType(configMediaType) === MediaType.dockerConfig ? 'docker' : 'oci';
}

/**
 * The layer media type in the given family. Types without an exact equivalent (OCI non-distributable
 * tar and tar+zstd, unknown types) are kept as they are.
 */
export function layerMediaTypeIn(family: ManifestFamily, mediaType: string): string {
  const table = family === 'docker' ? OCI_TO_DOCKER : DOCKER_TO_OCI;
  return table.get(bareMediaType(mediaType)) ?? mediaType;
}
