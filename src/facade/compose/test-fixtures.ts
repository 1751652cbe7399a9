// Images built in code for the composer's tests: each goes through the real parsers, as images from a
// registry would.
import type { Descriptor } from '../../oci/descriptor.ts';
import { type Digest, digestOf } from '../../oci/digest.ts';
import { parseImageConfig, parseManifest, serializeJson } from '../../oci/manifest.ts';
import { MediaType } from '../../oci/media-types.ts';
import type { ImageView } from './image.ts';

export interface FixtureLayer {
  name: string;
  mediaType?: string;
}

export const layerDigest = (name: string): Digest => digestOf(`blob ${name}`);
export const layerDiffId = (name: string): Digest => digestOf(`tar ${name}`);
export const layerSize = (name: string): number => 1000 + name.length;

export interface FixtureOptions {
  docker?: boolean;
  /** Layer names, or layers with a media type. */
  layers: (string | FixtureLayer)[];
  env?: string[];
  labels?: Record<string, string>;
  /** Overrides diff_ids (for mismatch tests). */
  diffIds?: string[];
  /** Merged into the config object (top level). */
  configExtra?: Record<string, unknown>;
  /** Merged into config.config. */
  containerExtra?: Record<string, unknown>;
  manifestExtra?: Record<string, unknown>;
  history?: Record<string, unknown>[];
  created?: string;
}

export function fixtureImage(o: FixtureOptions): ImageView {
  const docker = o.docker ?? false;
  const layers: Descriptor[] = o.layers.map((l) => {
    const { name, mediaType } = typeof l === 'string' ? { name: l, mediaType: undefined } : l;
    return {
      mediaType: mediaType ?? (docker ? MediaType.dockerLayerGzip : MediaType.ociLayerGzip),
      digest: layerDigest(name),
      size: layerSize(name),
    };
  });
  const names = o.layers.map((l) => (typeof l === 'string' ? l : l.name));
  const container: Record<string, unknown> = {};
  if (o.env) container.Env = o.env;
  if (o.labels) container.Labels = o.labels;
  Object.assign(container, o.containerExtra);
  const config: Record<string, unknown> = { architecture: 'amd64', os: 'linux' };
  if (o.created) config.created = o.created;
  config.config = container;
  config.rootfs = { type: 'layers', diff_ids: o.diffIds ?? names.map(layerDiffId) };
  if (o.history) config.history = o.history;
  Object.assign(config, o.configExtra);
  const configBytes = serializeJson(config);
  const manifest: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType: docker ? MediaType.dockerManifest : MediaType.ociManifest,
    config: {
      mediaType: docker ? MediaType.dockerConfig : MediaType.ociConfig,
      digest: digestOf(configBytes),
      size: configBytes.byteLength,
    },
    layers,
    ...o.manifestExtra,
  };
  const parsed = parseManifest(serializeJson(manifest));
  if (parsed.kind !== 'manifest') throw new Error('fixture is not a manifest');
  return { manifest: parsed.manifest, config: parseImageConfig(configBytes) };
}
