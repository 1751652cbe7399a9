// Reading images back from a daemon, as ctr's images ls/check do: the manifest a platform would use, the
// image's size and platforms, which blobs are present, whether its rootfs is unpacked.
import { dataLoss, isNotFound, notFound } from '../../errors.ts';
import type { Descriptor, Platform } from '../../oci/descriptor.ts';
import { type Digest, digestLike } from '../../oci/digest.ts';
import {
  type ImageConfig,
  type ImageManifest,
  MAX_MANIFEST_BYTES,
  parseManifest,
} from '../../oci/manifest.ts';
import { normalizePlatform, platformMatches } from '../../oci/platform.ts';
import { noPlatformMatch, selectPlatform } from '../../oci/walk.ts';
import type { DaemonApi } from '../daemon-api.ts';
import { chainIds } from './chain.ts';
import { layersWithDiffIds, readConfig } from './unpack.ts';

/** Nested indexes are followed this deep at most. */
const MAX_DEPTH = 8;

async function readDocument(api: DaemonApi, desc: Descriptor) {
  const bytes = await api.readContent(desc.digest, MAX_MANIFEST_BYTES);
  if (digestLike(bytes, desc.digest) !== desc.digest)
    throw dataLoss(`content ${desc.digest} reads back wrong`);
  return parseManifest(bytes, desc.mediaType);
}

export interface ResolvedManifest {
  descriptor: Descriptor;
  manifest: ImageManifest;
  /** Descriptors walked to get here (the target and any indexes), for size sums. */
  path: Descriptor[];
}

/**
 * The manifest a host of `platform` uses: the target itself, or the one child of each index containerd's
 * images.Manifest follows (see selectPlatform). A manifest its index lists without a platform counts only
 * when its config names the platform, as in containerd.
 */
export async function imageManifest(
  api: DaemonApi,
  target: Descriptor,
  platform: Platform,
  depth = 0,
  root: Descriptor = target,
): Promise<ResolvedManifest> {
  if (depth > MAX_DEPTH) throw notFound(`indexes nested deeper than ${MAX_DEPTH}`);
  const parsed = await readDocument(api, target);
  if (parsed.kind === 'manifest') {
    if (depth > 0 && target.platform === undefined)
      await checkConfigPlatform(api, parsed.manifest.config, platform, root);
    return { descriptor: target, manifest: parsed.manifest, path: [] };
  }
  const [chosen] = selectPlatform(parsed.index.manifests, platform);
  if (!chosen) throw noPlatformMatch(root);
  const found = await imageManifest(api, chosen, platform, depth + 1, root);
  return { ...found, path: [target, ...found.path] };
}

/**
 * Fails, as containerd does, naming the image's target `root`, when the image config `config` is not for
 * `platform` (for a manifest its index lists without a platform, the config decides).
 */
export async function checkConfigPlatform(
  api: DaemonApi,
  config: Descriptor,
  platform: Platform,
  root: Descriptor,
): Promise<void> {
  if (!platformMatches(platform, configPlatform(await readConfig(api, config)))) throw noPlatformMatch(root);
}

export function configPlatform(config: ImageConfig): Platform {
  return normalizePlatform({
    os: config.os,
    architecture: config.architecture,
    ...(config.variant ? { variant: config.variant } : {}),
  });
}

/** Config and layer sizes plus every document walked, as ctr's SIZE column sums them. */
export function imageSize(resolved: ResolvedManifest): number {
  const m = resolved.manifest;
  return (
    resolved.path.reduce((n, d) => n + d.size, 0) +
    resolved.descriptor.size +
    m.config.size +
    m.layers.reduce((n, l) => n + l.size, 0)
  );
}

/** The platforms an image offers: an index's children (skipping `unknown`), or its config's. */
export async function imagePlatforms(api: DaemonApi, target: Descriptor): Promise<Platform[]> {
  const parsed = await readDocument(api, target);
  if (parsed.kind === 'index') {
    return parsed.index.manifests
      .map((m) => m.platform)
      .filter((p): p is Platform => p !== undefined && p.os !== 'unknown' && p.architecture !== 'unknown')
      .map(normalizePlatform);
  }
  return [configPlatform(await readConfig(api, parsed.manifest.config))];
}

export interface ImageCheck {
  status: 'complete' | 'incomplete' | 'unavailable';
  /** Config and layers present / required (required unknown when unavailable). */
  available: number;
  required?: number;
  availableBytes: number;
  requiredBytes: number;
  missing: Descriptor[];
}

/** Whether the config and layers of the platform's manifest are all present (ctr's `images check`). */
export async function checkImage(
  api: DaemonApi,
  target: Descriptor,
  platform: Platform,
): Promise<ImageCheck> {
  let resolved: ResolvedManifest;
  try {
    resolved = await imageManifest(api, target, platform);
  } catch (err) {
    if (!isNotFound(err)) throw err;
    return { status: 'unavailable', available: 0, availableBytes: 0, requiredBytes: 0, missing: [target] };
  }
  const required = [resolved.manifest.config, ...resolved.manifest.layers];
  const missing: Descriptor[] = [];
  let availableBytes = 0;
  for (const d of required) {
    if (await api.contentInfo(d.digest)) availableBytes += d.size;
    else missing.push(d);
  }
  return {
    status: missing.length === 0 ? 'complete' : 'incomplete',
    available: required.length - missing.length,
    required: required.length,
    availableBytes,
    requiredBytes: required.reduce((n, d) => n + d.size, 0),
    missing,
  };
}

/** The chain IDs of the platform's rootfs, bottom to top. */
export async function imageChain(api: DaemonApi, target: Descriptor, platform: Platform): Promise<Digest[]> {
  const { manifest } = await imageManifest(api, target, platform);
  const config = await readConfig(api, manifest.config);
  return chainIds(layersWithDiffIds(manifest, config).map((l) => l.diffId));
}

/** Whether the snapshotter holds the image's top chain ID. */
export async function isUnpacked(
  api: DaemonApi,
  target: Descriptor,
  platform: Platform,
  snapshotter: string,
): Promise<boolean> {
  const chain = await imageChain(api, target, platform);
  const top = chain.at(-1);
  return top !== undefined && (await api.statSnapshot(snapshotter, top)) !== undefined;
}
