// compose(base, additions) → the workspace image: pure, deterministic, no network. The shape follows Gitpod's
// registry-facade for everything a client can observe (layer order, diff_ids appended, env modifiers, the
// two io.gitpod.workspace-image.* annotations, a forced mediaType on Docker manifests) and improves on it:
// - the base config and manifest objects are round-tripped, so fields we do not know (Docker's Healthcheck,
//   container_config, docker_version, …) survive; only rootfs.diff_ids, config.Env and history change;
// - one history entry per added layer, created_by `strata: <source>`, when the base's history accounts
//   for its layers (otherwise the history is left alone, as Gitpod leaves it);
// - layer media types follow the manifest's family, which is the base's unless a Docker base gets a layer
//   Docker has no type for (zstd): then the image is OCI (see media-types.ts);
// - identical inputs give identical bytes: JSON key order follows the inputs, and history timestamps come
//   from the inputs (the newest `created` of the base config and its history), never from the clock.
import { failedPrecondition, invalidArgument } from '../../errors.ts';
import type { Descriptor } from '../../oci/descriptor.ts';
import { type Digest, digestOf } from '../../oci/digest.ts';
import {
  type History,
  type ImageConfig,
  type ImageManifest,
  MAX_CONFIG_BYTES,
  MAX_MANIFEST_BYTES,
  serializeJson,
} from '../../oci/manifest.ts';
import { applyEnvModifiers, envModifiersOf } from './env.ts';
import { type ImageView, layersWithDiffIds } from './image.ts';
import type { Addition, LayerOrigin } from './layers.ts';
import {
  composedFamily,
  configMediaTypeIn,
  familyOf,
  layerMediaTypeIn,
  type ManifestFamily,
  manifestMediaTypeOf,
} from './media-types.ts';

/** Sum of the base image's layer sizes, as a decimal string (ws-daemon reads it). */
export const ANNOTATION_IMAGE_SIZE = 'io.gitpod.workspace-image.size';
/** The spec's base_ref, verbatim. */
export const ANNOTATION_IMAGE_REF = 'io.gitpod.workspace-image.ref';

export const HISTORY_PREFIX = 'strata: ';

export interface ComposeOptions {
  /** The spec's base ref, recorded in the io.gitpod.workspace-image.ref annotation. */
  baseRef: string;
  /**
   * `created` of the added history entries. Default: the newest `created` found in the base config and
   * its history; none when the base has none.
   */
  historyCreated?: string;
}

export interface ComposedLayer {
  /** As listed in the composed manifest (media type converted to the manifest's family). */
  descriptor: Descriptor;
  diffId: Digest;
  origin: LayerOrigin;
}

export interface ComposedImage {
  family: ManifestFamily;
  /** The manifest's media type: Docker schema2 or OCI, following the base. */
  mediaType: string;
  manifest: ImageManifest;
  config: ImageConfig;
  manifestBytes: Uint8Array;
  configBytes: Uint8Array;
  manifestDigest: Digest;
  configDigest: Digest;
  /** Base layers, then every addition's, in manifest order. */
  layers: ComposedLayer[];
}

export function compose(
  base: ImageView,
  additions: readonly Addition[],
  options: ComposeOptions,
): ComposedImage {
  if (typeof base.manifest?.config !== 'object' || base.manifest.config === null) {
    throw invalidArgument('base image: manifest has no config descriptor');
  }
  if (typeof base.config !== 'object' || base.config === null || Array.isArray(base.config)) {
    throw invalidArgument('base image: config is missing');
  }
  const baseLayers = layersWithDiffIds(base, 'base image');
  const baseFamily = familyOf(base.mediaType ?? base.manifest.mediaType, base.manifest.config.mediaType);
  const family = composedFamily(baseFamily, [
    ...baseLayers.map((l) => l.descriptor.mediaType),
    ...additions.flatMap((a) => a.layers.map((l) => l.descriptor.mediaType)),
  ]);
  const inFamily = (d: Descriptor): Descriptor => {
    const mediaType = layerMediaTypeIn(family, d.mediaType);
    return mediaType === d.mediaType ? d : { ...d, mediaType };
  };

  const layers: ComposedLayer[] = baseLayers.map((l) => ({
    descriptor: inFamily(l.descriptor),
    diffId: l.diffId,
    origin: { kind: 'base' },
  }));
  for (const a of additions) {
    for (const l of a.layers)
      layers.push({ descriptor: inFamily(l.descriptor), diffId: l.diffId, origin: l.origin });
  }

  const config = composeConfig(base.config, additions, layers, options);
  const configBytes = serializeJson(config);
  const configDigest = digestOf(configBytes);

  const mediaType = manifestMediaTypeOf(family);
  const manifest = structuredClone(base.manifest);
  // The composed image is not the artifact the base's subject (if any) was attached to.
  delete manifest.subject;
  manifest.mediaType = mediaType;
  const configDescriptor: Descriptor = {
    ...manifest.config,
    digest: configDigest,
    size: configBytes.byteLength,
  };
  // A Docker base that had to become OCI (see composedFamily) names its config as OCI's.
  if (family !== baseFamily)
    configDescriptor.mediaType = configMediaTypeIn(family, configDescriptor.mediaType);
  // Our config is served by us, not from wherever the base's came from; embedded data would be the
  // base config's bytes under our config's digest.
  delete configDescriptor.urls;
  delete configDescriptor.data;
  manifest.config = configDescriptor;
  manifest.layers = layers.map((l) => l.descriptor);
  const baseSize = baseLayers.reduce((sum, l) => sum + l.descriptor.size, 0);
  manifest.annotations = {
    ...manifest.annotations,
    [ANNOTATION_IMAGE_SIZE]: String(baseSize),
    [ANNOTATION_IMAGE_REF]: options.baseRef,
  };
  const manifestBytes = serializeJson(manifest);
  // Past these, clients (skopeo takes 4 MiB of manifest) and our own parsers (pull, the shared tier)
  // refuse the image: say so here rather than serve what nobody can read.
  tooBig(manifestBytes, MAX_MANIFEST_BYTES, 'manifest', layers.length);
  tooBig(configBytes, MAX_CONFIG_BYTES, 'config', layers.length);

  return {
    family,
    mediaType,
    manifest,
    config,
    manifestBytes,
    configBytes,
    manifestDigest: digestOf(manifestBytes),
    configDigest,
    layers,
  };
}

function tooBig(bytes: Uint8Array, max: number, what: string, layers: number): void {
  if (bytes.byteLength > max)
    throw failedPrecondition(
      `the composed image's ${what} would be ${bytes.byteLength} bytes (${layers} layers); clients take at most ${max}`,
    );
}

function composeConfig(
  baseConfig: ImageConfig,
  additions: readonly Addition[],
  layers: readonly ComposedLayer[],
  options: ComposeOptions,
): ImageConfig {
  const config = structuredClone(baseConfig);
  config.rootfs = { ...config.rootfs, diff_ids: layers.map((l) => l.diffId) };

  const modifiers = additions.flatMap((a) => envModifiersOf(a.env));
  if (modifiers.length > 0) {
    const env = applyEnvModifiers(config.config?.Env, modifiers);
    config.config = { ...config.config, Env: env ? [...env] : [] };
  }

  const added = additions.reduce((n, a) => n + a.layers.length, 0);
  if (added > 0 && historyCoversLayers(baseConfig)) {
    const created = options.historyCreated ?? newestCreated(baseConfig);
    const history: History[] = [...(config.history ?? [])];
    for (const a of additions) {
      for (let i = 0; i < a.layers.length; i++) {
        const entry: History = {};
        if (created !== undefined) entry.created = created;
        entry.created_by = `${HISTORY_PREFIX}${a.source}`;
        if (a.layers.length > 1) entry.comment = `layer ${i + 1} of ${a.layers.length}`;
        history.push(entry);
      }
    }
    config.history = history;
  }
  return config;
}

/**
 * Whether the base's history has one non-empty entry per layer. Entries appended to a history that does
 * not (none at all is common) would be paired with the wrong layers, and clients that check the pairing
 * (buildah commit) refuse the image; such a history is left as it is.
 */
function historyCoversLayers(config: ImageConfig): boolean {
  const nonEmpty = (config.history ?? []).filter((h) => h.empty_layer !== true).length;
  return nonEmpty === config.rootfs.diff_ids.length;
}

/** The newest parseable `created` among the config's and its history's, as written there. */
export function newestCreated(config: ImageConfig): string | undefined {
  let best: string | undefined;
  let bestTime = Number.NEGATIVE_INFINITY;
  const consider = (s: unknown) => {
    if (typeof s !== 'string') return;
    const t = Date.parse(s);
    if (!Number.isNaN(t) && t > bestTime) {
      best = s;
      bestTime = t;
    }
  };
  consider(config.created);
  for (const h of config.history ?? []) consider(h.created);
  return best;
}
