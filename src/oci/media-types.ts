// Media types of the OCI image spec and of Docker's schema2, and what each one is.

export const MediaType = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  ociLayerNondistributable: 'application/vnd.oci.image.layer.nondistributable.v1.tar',
  ociLayerNondistributableGzip: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  ociLayerNondistributableZstd: 'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
  ociEmpty: 'application/vnd.oci.empty.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  dockerLayerZstd: 'application/vnd.docker.image.rootfs.diff.tar.zstd',
  dockerLayerForeignGzip: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  dockerSchema1Manifest: 'application/vnd.docker.distribution.manifest.v1+json',
  dockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
} as const;
export type KnownMediaType = (typeof MediaType)[keyof typeof MediaType];

export type Compression = 'none' | 'gzip' | 'zstd';

const MANIFESTS = new Set<string>([MediaType.ociManifest, MediaType.dockerManifest]);
const INDEXES = new Set<string>([MediaType.ociIndex, MediaType.dockerManifestList]);
const CONFIGS = new Set<string>([MediaType.ociConfig, MediaType.dockerConfig]);
const SCHEMA1 = new Set<string>([
  MediaType.dockerSchema1Manifest,
  MediaType.dockerSchema1Signed,
  'application/json',
]);

const LAYERS = new Map<string, { compression: Compression; distributable: boolean }>([
  [MediaType.ociLayer, { compression: 'none', distributable: true }],
  [MediaType.ociLayerGzip, { compression: 'gzip', distributable: true }],
  [MediaType.ociLayerZstd, { compression: 'zstd', distributable: true }],
  [MediaType.ociLayerNondistributable, { compression: 'none', distributable: false }],
  [MediaType.ociLayerNondistributableGzip, { compression: 'gzip', distributable: false }],
  [MediaType.ociLayerNondistributableZstd, { compression: 'zstd', distributable: false }],
  [MediaType.dockerLayer, { compression: 'none', distributable: true }],
  [MediaType.dockerLayerGzip, { compression: 'gzip', distributable: true }],
  [MediaType.dockerLayerZstd, { compression: 'zstd', distributable: true }],
  [MediaType.dockerLayerForeignGzip, { compression: 'gzip', distributable: false }],
]);

/** Media types may carry parameters (`; charset=utf-8`); compare on the bare type. */
export function bareMediaType(mediaType: string): string {
  const i = mediaType.indexOf(';');
  return (i < 0 ? mediaType : mediaType.slice(0, i)).trim().toLowerCase();
}

export const isManifestType = (mt: string): boolean => MANIFESTS.has(bareMediaType(mt));
export const isIndexType = (mt: string): boolean => INDEXES.has(bareMediaType(mt));
export const isConfigType = (mt: string): boolean => CONFIGS.has(bareMediaType(mt));
export const isSchema1Type = (mt: string): boolean => SCHEMA1.has(bareMediaType(mt));
export const isLayerType = (mt: string): boolean => LAYERS.has(bareMediaType(mt));

/** Compression of a layer media type, or undefined when it is not a layer type we know. */
export function layerCompression(mt: string): Compression | undefined {
  return LAYERS.get(bareMediaType(mt))?.compression;
}

/** Foreign (Docker) and non-distributable (OCI) layers are not pushed to or fetched from other registries by default. */
export function isNonDistributable(mt: string): boolean {
  return LAYERS.get(bareMediaType(mt))?.distributable === false;
}

/** Everything a client can take as a manifest, in order of preference, for the Accept header. */
export const MANIFEST_ACCEPT: readonly string[] = [
  MediaType.ociIndex,
  MediaType.dockerManifestList,
  MediaType.ociManifest,
  MediaType.dockerManifest,
];
